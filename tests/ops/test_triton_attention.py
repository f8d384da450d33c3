"""Triton backend of word_attention against the float64 reference (CPU: through the interpreter).

Parity bar: the Triton result's max abs error against the float64 reference is within 2x the
error of the same-dtype ``torch`` backend plus a small slack, for the outputs and the gradients
of query and source.
"""

from __future__ import annotations

import pytest
import torch
from parity import assert_parity
from triton_aot import ARCHS, SPILL_SLACK, assert_fits, run_aot_script

from attngan_fast.ops import word_attention, word_attention_reference
from attngan_fast.ops.triton import word_attention as tri
from attngan_fast.ops.word_attention import _word_attention_op

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
CPU_DTYPES = (torch.float32, torch.float16)  # the interpreter cannot multiply bf16 tiles


@pytest.fixture
def spies(spy_kernels):
    return spy_kernels(tri, "_fwd_kernel", "_bwd_kernel")


def _mask(batch, words, kind):
    if kind is None:
        return None
    mask = torch.rand(batch, words) < 0.5
    if kind == "one_valid":  # every sample keeps exactly one word
        mask = torch.ones(batch, words, dtype=torch.bool)
        mask[torch.arange(batch), torch.randint(0, words, (batch,))] = False
    elif kind == "empty_rows":  # sample 0 has no valid word at all
        mask[0] = True
        mask[1:, 0] = False
    return mask.to(DEVICE)


def _run(backend, query, source, mask, need_attn, legacy, grads):
    q = query.detach().clone().requires_grad_()
    s = source.detach().clone().requires_grad_()
    ctx, attn = word_attention(q, s, mask, need_attn=need_attn, legacy_mask=legacy, backend=backend)
    outs = (ctx,) if attn is None else (ctx, attn)
    loss = sum((o.double() * g).sum() for o, g in zip(outs, grads))
    loss.backward()
    return [o.detach() for o in outs] + [q.grad, s.grad]


def _check_parity(query, source, mask, need_attn, legacy, grads=None):
    batch, channels, n = query.shape
    words = source.shape[2]
    if grads is None:
        grads = [torch.randn(batch, channels, n, dtype=torch.float64, device=DEVICE)]
        if need_attn:
            grads.append(torch.randn(batch, words, n, dtype=torch.float64, device=DEVICE))
    fast = _run("triton", query, source, mask, need_attn, legacy, grads)
    ref = _run("torch", query, source, mask, need_attn, legacy, grads)
    q64 = query.detach().double().requires_grad_()
    s64 = source.detach().double().requires_grad_()
    ctx64, attn64 = word_attention_reference(q64, s64, mask, need_attn, legacy)
    outs64 = (ctx64,) if attn64 is None else (ctx64, attn64)
    sum((o * g).sum() for o, g in zip(outs64, grads)).backward()
    exact = [o.detach() for o in outs64] + [q64.grad, s64.grad]
    names = ["context", "attn"][: len(outs64)] + ["grad_query", "grad_source"]
    for name, f, r, e in zip(names, fast, ref, exact):
        assert f.dtype == query.dtype and f.shape == e.shape, name
        assert torch.isfinite(f).all(), name
        assert_parity(name, f, r, e)
    return fast


CASES = [  # B, C, N, T, mask kind, legacy, need_attn
    (3, 3, 77, 1, None, False, True),
    (3, 3, 77, 5, "random", False, True),
    (3, 3, 77, 4, "one_valid", False, False),
    (3, 5, 77, 5, "empty_rows", False, True),
    (3, 3, 77, 5, "random", True, True),
    (2, 17, 40, 4, "empty_rows", True, False),
    (1, 20, 33, 18, "random", False, True),
]


@pytest.mark.parametrize("dtype", CPU_DTYPES)
@pytest.mark.parametrize("case", CASES)
def test_parity_with_float64_reference(case, dtype, spies):
    batch, channels, n, words, kind, legacy, need_attn = case
    query = torch.randn(batch, channels, n, device=DEVICE).to(dtype)
    source = torch.randn(batch, channels, words, device=DEVICE).to(dtype)
    _check_parity(query, source, _mask(batch, words, kind), need_attn, legacy)
    assert spies[0].launches == 1 and spies[1].launches == 1  # the Triton path really ran


def test_empty_rows_are_zero():
    query = torch.randn(3, 4, 77, device=DEVICE)
    source = torch.randn(3, 4, 5, device=DEVICE)
    mask = _mask(3, 5, "empty_rows")
    ctx, attn = word_attention(query, source, mask, backend="triton")
    assert (ctx[0] == 0).all() and (attn[0] == 0).all()
    _, _, lse = _word_attention_op(query, source, mask, True, False, "triton")
    assert torch.isinf(lse[0]).all() and torch.isfinite(lse[1:]).all()


def test_legacy_mask_differs_from_per_sample_mask():
    query = torch.randn(3, 3, 77, device=DEVICE)
    source = torch.randn(3, 3, 5, device=DEVICE)
    mask = _mask(3, 5, "random")
    fixed, _ = word_attention(query, source, mask, backend="triton")
    legacy, _ = word_attention(query, source, mask, legacy_mask=True, backend="triton")
    assert not torch.allclose(fixed, legacy)


def test_non_contiguous_inputs():
    query = torch.randn(3, 77, 3, device=DEVICE).transpose(1, 2)
    source = torch.randn(3, 3, 6, device=DEVICE)[:, :, ::2]
    assert not query.is_contiguous() and not source.is_contiguous()
    _check_parity(query, source, _mask(3, 3, "random"), True, False)


def test_stride_zero_upstream_gradients():
    query = torch.randn(3, 3, 77, device=DEVICE)
    source = torch.randn(3, 3, 5, device=DEVICE)
    mask = _mask(3, 5, "random")
    ones = [torch.ones((), dtype=torch.float64, device=DEVICE).expand(3, 3, 77)]
    ones.append(torch.ones((), dtype=torch.float64, device=DEVICE).expand(3, 5, 77))
    _check_parity(query, source, mask, True, False, grads=ones)
    q = query.clone().requires_grad_()
    ctx, _ = word_attention(q, source, mask, need_attn=False, backend="triton")
    ctx.sum().backward()  # expanded (stride-0) grad_context
    q64 = query.double().requires_grad_()
    word_attention_reference(q64, source.double(), mask, False)[0].sum().backward()
    torch.testing.assert_close(q.grad.double(), q64.grad, rtol=1e-5, atol=1e-5)


def test_triton_backend_rejects_float64():
    query = torch.randn(2, 3, 7, dtype=torch.float64, device=DEVICE)
    source = torch.randn(2, 3, 4, dtype=torch.float64, device=DEVICE)
    with pytest.raises(TypeError, match="float64"):
        word_attention(query, source, None, backend="triton")


@pytest.mark.parametrize("mask_kind,legacy", [(None, False), ("random", False), ("random", True)])
def test_opcheck(mask_kind, legacy):
    query = torch.randn(2, 3, 11, device=DEVICE, requires_grad=True)
    source = torch.randn(2, 3, 5, device=DEVICE, requires_grad=True)
    mask = _mask(2, 5, mask_kind)
    torch.library.opcheck(_word_attention_op, (query, source, mask, True, legacy, "triton"))


# --- GPU: real shapes, low precision, torch.compile and CUDA graphs ---------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16, torch.float16))
@pytest.mark.parametrize(
    "shape", [(14, 32, 64 * 64, 18), (4, 48, 128 * 128, 25), (2, 64, 4096, 32)]
)
def test_gpu_parity_real_shapes(shape, dtype):
    batch, channels, n, words = shape
    query = torch.randn(batch, channels, n, device=DEVICE).to(dtype)
    source = (torch.randn(batch, channels, words, device=DEVICE) / channels**0.5).to(dtype)
    mask = _mask(batch, words, "random")
    mask[:, 0] = False
    _check_parity(query, source, mask, True, False)
    _check_parity(query, source, mask, False, True)


@pytest.mark.gpu
def test_gpu_torch_compile_and_cuda_graph():
    query = torch.randn(8, 32, 4096, device=DEVICE, requires_grad=True)
    source = torch.randn(8, 32, 18, device=DEVICE, requires_grad=True)
    mask = _mask(8, 18, "random")

    def step(q, s):
        ctx, attn = word_attention(q, s, mask, backend="triton")
        return ctx.square().mean() + attn.mean()

    eager = torch.autograd.grad(step(query, source), (query, source))
    compiled = torch.compile(step, fullgraph=True)
    got = torch.autograd.grad(compiled(query, source), (query, source))
    for a, b in zip(got, eager):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)

    static_q, static_s = query.detach().clone(), source.detach().clone()
    static_q.requires_grad_()
    static_s.requires_grad_()
    for _ in range(2):  # warm up (autotuning happens here, outside the capture)
        torch.autograd.grad(step(static_q, static_s), (static_q, static_s))
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = torch.autograd.grad(step(static_q, static_s), (static_q, static_s))
    graph.replay()
    torch.cuda.synchronize()
    for a, b in zip(out, eager):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


# --- compiled for the GPU without one (Triton's own ptxas) ----------------------------------------

AOT_SCRIPT = r"""
from attngan_fast.ops.triton import word_attention as W
from attngan_fast.ops.triton._common import FP32_DOT_PRECISION

for dt in ("fp32", "bf16", "fp16"):
    ptrs = {"*": dt, "mask_ptr": "u8", "lse_ptr": "fp32", "gs_part_ptr": "fp32"}
    kernels = (("fwd", W._fwd_kernel, dict(NEED_ATTN=True)),
               ("bwd", W._bwd_kernel, dict(HAS_GRAD_ATTN=True, LOWP=dt != "fp32")))
    for legacy in (False, True):  # regions innermost (NCHW maps): every config
        flags = dict(HAS_MASK=True, LEGACY=legacy, BLOCK_C=32, BLOCK_T=32, PREC=FP32_DOT_PRECISION,
                     sqn=1)
        for name, kern, extra in kernels:
            for k, cfg in enumerate(kern.configs):
                aot_compile(f"{name} {dt} legacy={legacy} {cfg.kwargs} warps={cfg.num_warps}",
                            kern.fn, dict(flags, **extra, **cfg.kwargs), ptrs,
                            options=autotune_options(cfg), config=k, configs=len(kern.configs))
    # channels innermost (channels-last maps flattened in place): the first config of each
    flags = {k: v for k, v in flags.items() if k != "sqn"} | dict(LEGACY=False, sqc=1)
    for name, kern, extra in kernels:
        cfg = kern.configs[0]
        aot_compile(f"{name} {dt} channels-last {cfg.kwargs} warps={cfg.num_warps}", kern.fn,
                    dict(flags, **extra, **cfg.kwargs), ptrs, options=autotune_options(cfg),
                    config=0, configs=len(kern.configs))
"""


@pytest.mark.slow
@pytest.mark.parametrize("arch", ARCHS)
def test_kernels_compile_for_gpu(arch):
    """Every autotune config of both kernels compiles for sm_90 and sm_80 (C 32, T 18 -> 32, mask,
    attention map and its gradient, both mask kinds, three dtypes; regions innermost, and the
    first config with channels innermost) and fits the card's block; the first config of each
    kernel, the autotuner's fallback, spills no register."""
    results = run_aot_script(AOT_SCRIPT, arch)
    configs = {r["label"].split()[0]: r["configs"] for r in results}  # per kernel, fwd and bwd
    assert len(configs) == 2 and min(configs.values()) > 1  # compiled Triton: every config
    # dtypes x (mask kinds x configs + channels-last first configs)
    assert len(results) == 3 * (2 * sum(configs.values()) + 2)
    assert_fits(results, arch)
    for r in results:
        if r["config"] == 0:
            assert r["stack"] <= SPILL_SLACK, r


@pytest.mark.parametrize("dtype", CPU_DTYPES)
def test_channels_last_feature_maps_are_used_in_place(dtype, spies):
    """G flattens channels-last maps to B x C x (H W) with the channels innermost: the kernels
    take those strides (no copy), and context comes back in the same layout."""
    batch, channels, height, width, words = 2, 5, 7, 9, 6
    feature_map = torch.randn(batch, channels, height, width, device=DEVICE).to(dtype)
    feature_map = feature_map.contiguous(memory_format=torch.channels_last)
    query = feature_map.reshape(batch, channels, height * width)
    assert query.data_ptr() == feature_map.data_ptr() and query.stride(1) == 1
    source = torch.randn(batch, channels, words, device=DEVICE).to(dtype)
    ctx = _check_parity(query, source, _mask(batch, words, "random"), True, False)[0]
    assert ctx.stride() == query.stride()
    assert ctx.view(batch, channels, height, width).is_contiguous(memory_format=torch.channels_last)
    assert spies[0].launches == 1 and spies[1].launches == 1


def test_channels_last_opcheck():
    feature_map = torch.randn(2, 3, 4, 5, device=DEVICE).contiguous(
        memory_format=torch.channels_last
    )
    query = feature_map.reshape(2, 3, 20).requires_grad_()
    source = torch.randn(2, 3, 5, device=DEVICE, requires_grad=True)
    torch.library.opcheck(_word_attention_op, (query, source, _mask(2, 5, "random"), True, False,
                                               "triton"))  # fmt: skip
