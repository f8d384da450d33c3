"""word_attention on every backend: parity with an independent float64 oracle, masks (per sample,
the original's legacy indexing, empty rows), layouts, gradients, registration, errors; the
Triton kernels' structure (autotune configs compiled for the GPU, launch counts).

Parity rule (``tests/parity.py``): a backend's max abs error against the float64 oracle is at most
twice that of the same-dtype torch backend (the torch backend: the reference backend) plus a
small slack, for context, the attention map and the gradients of query and source. The oracle is
written here from the definition (``GlobalAttentionGeneral`` of taoxugit/AttnGAN), sharing no code
with the library.
"""

from __future__ import annotations

import importlib

import pytest
import torch
from inputs import (
    DEVICE,
    attention_inputs,
    backend_dtypes,
    backends,
    grads,
    kernel_backends,
    kernel_cases,
    leaves,
    parity_reference,
    word_mask,
)
from parity import assert_parity
from triton_aot import ARCHS, SPILL_SLACK, assert_fits, run_aot_script

from attngan_fast import ops
from attngan_fast.ops import original, registry

OP = "word_attention"
tri = importlib.import_module("attngan_fast.ops.triton.word_attention")
DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def exact_word_attention(query, source, mask, need_attn=True, legacy_mask=False):
    """float64 word attention from the definition: for sample b and region n, the softmax over
    the words t of ``query[b, :, n] . source[b, :, t]``, padded words excluded (those of sample
    b, or with ``legacy_mask`` of sample (b N + n) mod B, the original's ``mask.repeat(N, 1)``),
    zeros for a region without a word; context = sum_t attn source[:, :, t]."""
    q, s = query.double(), source.double()
    batch, _, n = q.shape
    scores = torch.einsum("bcn,bct->bnt", q, s)
    if mask is not None:
        sample = torch.arange(batch)[:, None] * (n if legacy_mask else 1)
        sample = (sample + (torch.arange(n)[None, :] if legacy_mask else 0)) % batch
        padded = mask.cpu()[sample.expand(batch, n)].to(q.device)  # B x N x T
        empty = padded.all(dim=-1, keepdim=True)
        scores = scores.masked_fill(padded, float("-inf")).masked_fill(empty, 0.0)
    attn = torch.softmax(scores, dim=-1)
    if mask is not None:
        attn = attn.masked_fill(empty, 0.0)
    context = torch.einsum("bnt,bct->bcn", attn, s)
    return context, (attn.transpose(1, 2) if need_attn else None)


def _run(backend, query, source, mask, need_attn, legacy, upstream, to=None):
    """[context, attn?, grad_query, grad_source] of one call (``backend`` None: the oracle)."""
    q, s = leaves(query, source, to=to)
    if backend is None:
        context, attn = exact_word_attention(q, s, mask, need_attn, legacy)
    else:
        context, attn = ops.word_attention(
            q, s, mask, need_attn=need_attn, legacy_mask=legacy, backend=backend
        )
    outs = [context] if attn is None else [context, attn]
    return [o.detach() for o in outs] + grads(outs, (q, s), upstream)


def _check_parity(backend, query, source, mask, need_attn=True, legacy=False, upstream=None):
    batch, channels, n = query.shape
    if upstream is None:
        upstream = [torch.randn(batch, channels, n, dtype=torch.float64, device=query.device)]
        if need_attn:
            upstream.append(torch.randn(batch, source.shape[2], n, dtype=torch.float64,
                                        device=query.device))  # fmt: skip
    fast = _run(backend, query, source, mask, need_attn, legacy, upstream)
    ref = _run(parity_reference(backend), query, source, mask, need_attn, legacy, upstream)
    exact = _run(None, query, source, mask, need_attn, legacy, upstream, to=torch.float64)
    names = ["context", "attn"][: len(upstream)] + ["grad_query", "grad_source"]
    eps = 1e-10 if query.dtype == torch.float64 else None  # float64 arithmetic inside
    for name, f, r, e in zip(names, fast, ref, exact):
        assert f.dtype == query.dtype and f.shape == e.shape, name
        assert torch.isfinite(f).all(), name
        assert_parity(name, f, r, e, eps=eps)
    return fast


@pytest.fixture
def triton_launches(backend, spy_kernels):
    """For the triton backend: spies on its two kernels (the Triton path really ran)."""
    return spy_kernels(tri, "_fwd_kernel", "_bwd_kernel") if backend == "triton" else None


CASES = [  # B, C, N, T, mask kind, legacy, need_attn
    (3, 3, 77, 1, None, False, True),
    (3, 3, 77, 5, "random", False, True),
    (3, 3, 77, 4, "one_valid", False, False),
    (3, 5, 77, 5, "empty_rows", False, True),
    (3, 3, 77, 5, "random", True, True),
    (2, 17, 40, 4, "empty_rows", True, False),
    (1, 20, 33, 18, "random", False, True),
]


@pytest.mark.parametrize(("backend", "dtype"), backend_dtypes(OP, DTYPES), indirect=["backend"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(map(str, c)))
def test_parity_with_float64(backend, dtype, case, triton_launches):
    batch, channels, n, words, kind, legacy, need_attn = case
    query, source = attention_inputs(batch, channels, n, words, dtype)
    _check_parity(backend, query, source, word_mask(batch, words, kind), need_attn, legacy)
    if triton_launches is not None:
        assert [s.launches for s in triton_launches] == [1, 1]


KERNEL_CASES = [  # shapes at the kernels' tile boundaries: (B, C, N, T, dtype)
    (2, 48, 130, 18, torch.bfloat16),  # coco-like C, two region tiles per block
    (2, 6, 70, 33, torch.float32),  # T > 32: the cuda kernels' chunked two-pass path
    (2, 3, 65, 70, torch.float16),  # three word chunks
    (1, 70, 20, 5, torch.float64),  # C > 64: several channels per thread
]


@pytest.mark.parametrize(("backend", "case"), kernel_cases(OP, KERNEL_CASES), indirect=["backend"])
def test_parity_at_tile_boundaries(backend, case):
    batch, channels, n, words, dtype = case
    query, source = attention_inputs(batch, channels, n, words, dtype)
    _check_parity(backend, query, source, word_mask(batch, words, "empty_rows"), True, True)


@pytest.mark.parametrize("backend", backends(OP), indirect=True)
def test_regions_without_a_word_get_zeros_and_finite_gradients(backend):
    query, source = attention_inputs(3, 4, 77, 5)
    mask = word_mask(3, 5, "empty_rows")
    q, s = leaves(query, source)
    context, attn = ops.word_attention(q, s, mask, backend=backend)
    assert (context[0] == 0).all() and (attn[0] == 0).all()
    assert torch.isfinite(context).all() and torch.isfinite(attn).all()
    (context.sum() + attn.sum()).backward()
    assert (q.grad[0] == 0).all() and torch.isfinite(q.grad).all() and torch.isfinite(s.grad).all()


@pytest.mark.parametrize("backend", kernel_backends(OP), indirect=True)
def test_lse_is_infinite_for_regions_without_a_word(backend):
    query, source = attention_inputs(3, 4, 77, 5)
    impl = registry.implementation(OP, backend)
    _, _, lse = impl.forward_op(query, source, word_mask(3, 5, "empty_rows"), True, False)
    assert torch.isinf(lse[0]).all() and (lse[0] > 0).all() and torch.isfinite(lse[1:]).all()


@pytest.mark.parametrize("backend", backends(OP), indirect=True)
def test_legacy_mask_is_the_original_codes_indexing(backend):
    """The original's ``GlobalAttentionGeneral`` (``ops.original``, its transcription) with its
    ``mask.repeat(N, 1)``: the legacy mask reproduces it, the per-sample mask differs from it."""
    dtype = torch.float32 if backend == "triton" else torch.float64
    query, source = attention_inputs(3, 5, 7, 5, dtype)
    mask = word_mask(3, 5, [5, 2, 1])
    context, attn = ops.word_attention(query, source, mask, legacy_mask=True, backend=backend)
    want_context, want_attn = original.global_attention_general(query, source, mask)
    torch.testing.assert_close(context, want_context)
    torch.testing.assert_close(attn, want_attn)
    fixed, _ = ops.word_attention(query, source, mask, backend=backend)
    assert not torch.allclose(fixed, want_context)


@pytest.mark.parametrize("backend", backends(OP), indirect=True)
def test_non_contiguous_inputs(backend):
    query = torch.randn(3, 77, 3, device=DEVICE).transpose(1, 2)  # B x C x N, strided
    source = torch.randn(3, 3, 6, device=DEVICE)[:, :, ::2]
    assert not query.is_contiguous() and not source.is_contiguous()
    _check_parity(backend, query, source, word_mask(3, 3, "random"))


@pytest.mark.parametrize("backend", backends(OP), indirect=True)
def test_stride_zero_upstream_gradients(backend):
    query, source = attention_inputs(3, 3, 77, 5)
    mask = word_mask(3, 5, "random")
    ones = [torch.ones((), dtype=torch.float64, device=DEVICE).expand(3, 3, 77),
            torch.ones((), dtype=torch.float64, device=DEVICE).expand(3, 5, 77)]  # fmt: skip
    _check_parity(backend, query, source, mask, upstream=ones)
    q = query.clone().requires_grad_()
    context, _ = ops.word_attention(q, source, mask, need_attn=False, backend=backend)
    context.sum().backward()  # an expanded (stride-0) grad_context
    q64 = query.double().requires_grad_()
    exact_word_attention(q64, source, mask, False)[0].sum().backward()
    torch.testing.assert_close(q.grad.double(), q64.grad, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", kernel_backends(OP), indirect=True)
def test_channels_last_feature_maps_are_used_in_place(backend):
    """G flattens channels-last maps to B x C x (H W) with the channels innermost: the kernels
    take those strides (no copy), and context and grad_query come back in the same layout."""
    batch, channels, height, width, words = 2, 5, 7, 9, 6
    feature_map = torch.randn(batch, channels, height, width, device=DEVICE)
    feature_map = feature_map.contiguous(memory_format=torch.channels_last)
    query = feature_map.reshape(batch, channels, height * width)
    assert query.data_ptr() == feature_map.data_ptr() and query.stride(1) == 1
    _, source = attention_inputs(batch, channels, 1, words)
    context, _, grad_query, _ = _check_parity(backend, query, source, word_mask(2, 6, "random"))
    assert context.stride() == query.stride() and grad_query.stride() == query.stride()
    assert context.view(batch, channels, height, width).is_contiguous(
        memory_format=torch.channels_last
    )


@pytest.mark.parametrize("backend", kernel_backends(OP), indirect=True)
@pytest.mark.parametrize(
    ("mask_kind", "legacy", "channels_innermost"),
    [
        (None, False, False),
        ("empty_rows", False, False),
        ("random", True, False),
        ("random", False, True),
    ],  # fmt: skip
)
def test_opcheck(backend, mask_kind, legacy, channels_innermost):
    query, source = attention_inputs(2, 3, 11, 5, channels_innermost=channels_innermost)
    query.requires_grad_()
    source.requires_grad_()
    mask = word_mask(2, 5, mask_kind)
    impl = registry.implementation(OP, backend)
    torch.library.opcheck(impl.forward_op, (query, source, mask, True, legacy))


@pytest.mark.parametrize(
    "backend", backends(OP, torch.float64, exclude=("cuda_emulated",)), indirect=True
)  # the emulation: the float64 parity cases (gradcheck's many calls would take minutes)
@pytest.mark.parametrize(("legacy", "need_attn"), [(False, True), (True, False)])
def test_gradcheck_float64(backend, legacy, need_attn):
    query, source = leaves(*attention_inputs(3, 3, 6, 5, torch.float64))
    mask = word_mask(3, 5, [5, 1, 3])

    def fn(q, s):
        context, attn = ops.word_attention(
            q, s, mask, need_attn=need_attn, legacy_mask=legacy, backend=backend
        )
        return (context, attn) if need_attn else context

    assert torch.autograd.gradcheck(fn, (query, source))


@pytest.mark.parametrize("backend", backends(OP, torch.bfloat16), indirect=True)
def test_autocast_runs_in_lower_precision(backend):
    query, source = attention_inputs(3, 5, 7, 4)
    with torch.autocast(DEVICE, dtype=torch.bfloat16):
        context, attn = ops.word_attention(query, source, None, backend=backend)
    assert context.dtype == torch.bfloat16 and attn.dtype == torch.bfloat16


@pytest.mark.parametrize(
    ("make", "error", "text"),
    [
        (lambda q, s, m: (q[0], s, m), ValueError, "query must have shape B x C x N"),
        (lambda q, s, m: (q, s[:, :2], m), ValueError, "source"),
        (lambda q, s, m: (q, s[:2], m), ValueError, "source"),
        (lambda q, s, m: (q, s, m.long()), TypeError, "mask must be a bool tensor"),
        (lambda q, s, m: (q, s, m[:, :2]), ValueError, "mask must have shape B x T"),
        (lambda q, s, m: (q.long(), s, m), TypeError, "query must be float32"),
        (lambda q, s, m: (q, s.double(), m), TypeError, "source is torch.float64"),
        (lambda q, s, m: (q, s.to("meta"), m), ValueError, "source is on meta"),
        (lambda q, s, m: (q[:, :, :0], s, m), ValueError, "query must not be empty"),
    ],
)
def test_bad_inputs_raise_clear_errors(make, error, text):
    query, source = attention_inputs(3, 5, 7, 4, device="cpu")
    with pytest.raises(error, match=text):
        ops.word_attention(*make(query, source, word_mask(3, 4, [4, 1, 2], "cpu")))


def test_the_triton_interpreter_refuses_bfloat16_by_name():
    if DEVICE != "cpu":
        pytest.skip("the interpreter runs on the CPU")
    query, source = attention_inputs(2, 3, 7, 4, torch.bfloat16)
    with pytest.raises(ops.BackendUnavailableError, match="interpreter multiplies bfloat16"):
        ops.word_attention(query, source, None, backend="triton")


# --- GPU: real shapes, low precision, torch.compile and CUDA graphs ---------------------------


@pytest.mark.gpu
@pytest.mark.parametrize(
    ("backend", "dtype"),
    backend_dtypes(OP, (torch.float32, torch.bfloat16, torch.float16), device="cuda"),
    indirect=["backend"],
)
@pytest.mark.parametrize(
    "shape", [(14, 32, 64 * 64, 18), (4, 48, 128 * 128, 25), (2, 64, 4096, 32), (2, 6, 200, 70)]
)
def test_gpu_parity_real_shapes(backend, dtype, shape):
    batch, channels, n, words = shape
    query, source = attention_inputs(batch, channels, n, words, dtype)
    source = (source.float() / channels**0.5).to(dtype)
    mask = word_mask(batch, words, "random")
    mask[:, 0] = False
    _check_parity(backend, query, source, mask, True, False)
    _check_parity(backend, query, source, mask, False, True)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", kernel_backends(OP, device="cuda"), indirect=True)
def test_gpu_torch_compile_and_cuda_graph(backend):
    query = torch.randn(8, 32, 4096, device="cuda", requires_grad=True)
    source = torch.randn(8, 32, 18, device="cuda", requires_grad=True)
    mask = word_mask(8, 18, "random")

    def step(q, s):
        ctx, attn = ops.word_attention(q, s, mask, backend=backend)
        return ctx.square().mean() + attn.mean()

    eager = torch.autograd.grad(step(query, source), (query, source))
    compiled = torch.compile(step, fullgraph=True)
    got = torch.autograd.grad(compiled(query, source), (query, source))
    for a, b in zip(got, eager):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)

    static_q, static_s = leaves(query, source)
    for _ in range(2):  # warm up (autotuning happens here, outside the capture)
        torch.autograd.grad(step(static_q, static_s), (static_q, static_s))
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = torch.autograd.grad(step(static_q, static_s), (static_q, static_s))
    graph.replay()
    torch.cuda.synchronize()
    for a, b in zip(out, eager):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


# --- the Triton kernels compiled for the GPU without one (Triton's own ptxas) ---------------------

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
def test_triton_kernels_compile_for_gpu(arch):
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
