"""damsm_loss on every backend: the word similarity S and the losses against the original
per-caption loop in float64, gradients, class masking, the torch backend's memory bound,
registration, errors; the Triton kernels' structure.

Parity rule (``tests/parity.py``): a backend's max abs error against the float64 oracle is at most
twice that of the same-dtype torch backend (for the torch backend: the reference backend) plus a
small slack, for S, the losses and the gradients of every floating input. The oracle is
``ops.original``: the original code's loop over captions (taoxugit/AttnGAN
``code/miscc/losses.py``: ``words_loss``, ``sent_loss``, ``func_attention``) transcribed, which
shares no code with the library's vectorised backends.
"""

from __future__ import annotations

import importlib

import pytest
import torch
from inputs import (
    DEVICE,
    EMULATED,
    backend_dtypes,
    backends,
    damsm_inputs,
    grads,
    kernel_backends,
    kernel_cases,
    leaves,
    parity_reference,
)
from parity import assert_parity
from triton_aot import ARCHS, assert_fits, run_aot_script

from attngan_fast import ops
from attngan_fast.ops import original, registry

OP = "damsm_word_similarity"
damsm = importlib.import_module("attngan_fast.ops.damsm")
tri = importlib.import_module("attngan_fast.ops.triton.damsm")
GAMMAS = (4.0, 5.0, 10.0)
# The reference backend in fp16 / bf16 is PyTorch's own half-precision loss (softmaxes and
# log-sum-exps in that dtype, some % off): the baseline the parity rule speaks of, not held to it.
# The emulated cuda kernels (a host thread per CUDA thread: seconds a case) take fp32 and bf16
# here; their fp16 instantiation is bf16's with another conversion, fp64 runs at the tile
# boundaries below.
PARITY_CASES = [
    case
    for dtypes, exclude in (
        ((torch.float32, torch.float64), ()),
        ((torch.float16, torch.bfloat16), ("reference",)),
    )
    for case in backend_dtypes(OP, dtypes, exclude=exclude)
    if case.values[0] != EMULATED or case.values[1] in (torch.float32, torch.bfloat16)
]


def exact_damsm(img_local, img_global, words, sent, cap_lens, class_ids):
    """float64 (w_loss0, w_loss1, s_loss0, s_loss1), S: the original code's loop."""
    batch = img_local.shape[0]
    labels = torch.arange(batch, device=img_local.device)
    w0, w1, _, sim = original.words_loss(
        img_local, words, labels, cap_lens, class_ids, batch, *GAMMAS
    )
    s0, s1 = original.sent_loss(img_global, sent, labels, class_ids, batch, GAMMAS[2])
    return (w0, w1, s0, s1), sim


def _run(backend, inputs, class_ids, upstream, to=None):
    """[S, losses..., grads of img_local, img_global, words, sent] (``backend`` None: the oracle).
    ``upstream`` weighs S (B x B) and the four losses."""
    *floats, lens = inputs
    v, g, e, s = leaves(*floats, to=to)
    if backend is None:  # the original's .view() takes contiguous tensors
        loss, sim = exact_damsm(*(t.contiguous() for t in (v, g, e, s)), lens, class_ids)
    else:
        out = ops.damsm_loss(
            v, g, e, s, lens, class_ids, *GAMMAS, need_similarity=True, backend=backend
        )
        loss, sim = out[:4], out.similarity
    outs = [sim, *loss]
    return [o.detach() for o in outs] + grads(outs, (v, g, e, s), upstream)


def _check_parity(backend, inputs, class_ids=None, s_grad=None):
    batch = inputs[0].shape[0]
    if s_grad is None:
        s_grad = torch.randn(batch, batch, dtype=torch.float64, device=DEVICE)
    upstream = [s_grad, *torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64, device=DEVICE)]
    fast = _run(backend, inputs, class_ids, upstream)
    ref = _run(parity_reference(backend), inputs, class_ids, upstream)
    exact = _run(None, inputs, class_ids, upstream, to=torch.float64)
    names = ("S", "w_loss0", "w_loss1", "s_loss0", "s_loss1", "img_local", "img_global", "words",
             "sent")  # fmt: skip
    eps = 1e-10 if inputs[0].dtype == torch.float64 else None  # float64 arithmetic inside
    for name, f, r, e in zip(names, fast, ref, exact):
        assert f.shape == e.shape and torch.isfinite(f).all(), name
        assert_parity(name, f, r, e, eps=eps)
    lens = inputs[4]
    beyond = torch.arange(inputs[2].shape[2], device=DEVICE)[None, :] >= lens[:, None]
    assert (fast[7].transpose(1, 2)[beyond] == 0).all()  # no gradient past a caption's end
    return fast


@pytest.fixture
def triton_launches(backend, spy_kernels):
    """For the triton backend: spies on its two kernels (the Triton path really ran)."""
    return spy_kernels(tri, "_fwd_kernel", "_bwd_kernel") if backend == "triton" else None


SHAPES = [  # B, D, H, W, T: B = 3 runs two caption groups of the triton backward, B = 5 one
    (3, 6, 1, 7, 5),
    (3, 6, 1, 7, 1),
    (5, 6, 2, 3, 4),
    (4, 20, 3, 7, 4),
    (2, 3, 5, 5, 17),
    (2, 70, 1, 5, 3),
]


@pytest.mark.parametrize(("backend", "dtype"), PARITY_CASES, indirect=["backend"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_parity_with_the_original_loop(backend, dtype, shape, triton_launches):
    _check_parity(backend, damsm_inputs(*shape, dtype=dtype))
    if triton_launches is not None:
        assert [s.launches for s in triton_launches] == [1, 1]


KERNEL_CASES = [  # (B, D, R, T, dtype): the cuda kernels' tiles, and pairs the backward skips
    (3, 19, 35, 7, torch.float32),
    (4, 8, 70, 32, torch.float64),  # 32 words, 3 region tiles
    (3, 300, 33, 5, torch.float64),  # D > 256: several features per thread
]


@pytest.mark.parametrize(("backend", "case"), kernel_cases(OP, KERNEL_CASES), indirect=["backend"])
@pytest.mark.parametrize("zero_some", [False, True])
def test_parity_at_tile_boundaries(backend, case, zero_some):
    """Pairs with a zero upstream gradient are skipped by the cuda backward kernel."""
    batch, dim, regions, words, dtype = case
    inputs = damsm_inputs(batch, dim, 1, regions, words, dtype)
    s_grad = torch.randn(batch, batch, dtype=torch.float64, device=DEVICE)
    if zero_some:
        s_grad[torch.rand(batch, batch, device=DEVICE) < 0.5] = 0.0
    _check_parity(backend, inputs, s_grad=s_grad)


@pytest.mark.parametrize("backend", backends(OP), indirect=True)
@pytest.mark.parametrize("non_contiguous", [False, True])
def test_class_masks_and_layouts(backend, non_contiguous):
    """Many pairs of one class (masked out of the cross-entropies); non-contiguous inputs."""
    img, glob, emb, sent, lens = damsm_inputs(6, 5, 2, 3, 4)
    if non_contiguous:
        img = img.transpose(2, 3).contiguous().transpose(2, 3)
        emb = emb.transpose(1, 2).contiguous().transpose(1, 2)
        glob = torch.randn(5, 6, device=DEVICE).t()
        assert not (img.is_contiguous() or emb.is_contiguous() or glob.is_contiguous())
    class_ids = torch.tensor([0, 1, 0, 0, 1, 2], device=DEVICE)
    _check_parity(backend, (img, glob, emb, sent, lens), class_ids)


@pytest.mark.parametrize("backend", backends(OP), indirect=True)
def test_clamped_cosine_denominator(backend):
    img, glob, emb, sent, lens = damsm_inputs(3, 6, 1, 7, 4)
    emb[1] *= 1e-10  # |c_k| |e_k| < 1e-8: the cosine denominator is clamped
    img[2] = 0.0  # |c_k| = 0
    _check_parity(backend, (img, glob, emb, sent, lens))


@pytest.mark.parametrize("backend", backends(OP), indirect=True)
def test_stride_zero_upstream_gradient(backend):
    inputs = damsm_inputs(3, 6, 1, 7, 5)
    _check_parity(backend, inputs, s_grad=torch.ones((), dtype=torch.float64).expand(3, 3))
    img, _, emb, _, lens = inputs
    v = img.flatten(2).clone().requires_grad_()
    ops.damsm_words_loss(v[..., None], emb, lens, None, *GAMMAS, need_similarity=True,
                         backend=backend).similarity.sum().backward()  # fmt: skip
    v64 = img.double().requires_grad_()
    exact_damsm(v64, *(t.double() for t in inputs[1:4]), lens, None)[1].sum().backward()
    torch.testing.assert_close(v.grad.double(), v64.grad.flatten(2), rtol=1e-5, atol=1e-6)


def test_attention_maps_are_the_originals():
    """Each caption's attention on its own image (plain PyTorch, for figures: no backend)."""
    img_local, img_global, words, sent, lens = damsm_inputs(5, 7, 3, 4, 6, torch.float64)
    out = ops.damsm_loss(img_local, img_global, words, sent, lens, None, *GAMMAS, need_attn=True)
    labels = torch.arange(5, device=DEVICE)
    _, _, maps, _ = original.words_loss(img_local, words, labels, lens, None, 5, *GAMMAS)
    for i, att in enumerate(maps):
        torch.testing.assert_close(out.attn_maps[i, : int(lens[i])], att[0])
        assert torch.all(out.attn_maps[i, int(lens[i]) :] == 0)


@pytest.mark.parametrize(
    "backend", backends(OP, torch.float64, exclude=("cuda_emulated",)), indirect=True
)  # the emulation: the float64 parity cases (gradcheck's many calls would take minutes)
def test_gradcheck_float64(backend):
    """The similarity's backward (the losses around it are plain autograd)."""
    img_local, _, words, _, _ = damsm_inputs(3, 4, 2, 3, 4, torch.float64)
    lens = torch.tensor([4, 1, 3], device=DEVICE)

    def similarity(v, e):
        out = ops.damsm_words_loss(v, e, lens, None, *GAMMAS, need_similarity=True, backend=backend)
        return out.similarity

    assert torch.autograd.gradcheck(similarity, tuple(leaves(img_local, words)))


@pytest.mark.parametrize("backend", kernel_backends(OP), indirect=True)
def test_opcheck(backend):
    img, _, emb, _, lens = damsm_inputs(3, 4, 1, 5, 3)
    v, e = leaves(img.flatten(2), emb)
    torch.library.opcheck(
        registry.implementation(OP, backend).forward_op, (v, e, lens, *GAMMAS[:2])
    )


def test_chunk_size_does_not_change_the_torch_backend(monkeypatch):
    inputs = damsm_inputs(6, 7, 3, 4, 6, torch.float64)
    s_grad = torch.randn(6, 6, dtype=torch.float64, device=DEVICE)
    upstream = [s_grad, *torch.ones(4, dtype=torch.float64)]
    full = _run("torch", inputs, None, upstream)
    monkeypatch.setattr(damsm, "CHUNK_ELEMENTS", 1)  # one caption per chunk
    assert damsm._captions_per_chunk(6, 12, 6) == 1
    for got, want in zip(_run("torch", inputs, None, upstream), full):
        torch.testing.assert_close(got, want)


def test_torch_backend_memory_is_bounded_by_the_chunk():
    # B = 100 captions and images, R = 289, T = 25: a chunk stays within the element budget.
    per_chunk = damsm._captions_per_chunk(100, 289, 25)
    assert per_chunk * 100 * 289 * 25 <= damsm.CHUNK_ELEMENTS
    assert per_chunk < 100


def test_mixed_dtypes_are_promoted():
    img_local, img_global, words, sent, lens = damsm_inputs(5, 7, 3, 4, 6)
    out = ops.damsm_loss(img_local.bfloat16(), img_global, words, sent, lens, None, *GAMMAS)
    assert out.w_loss0.dtype == torch.float32 and torch.isfinite(out.w_loss0)


def test_triton_autotune_drops_channel_chunks_wider_than_the_channels():
    import triton

    configs = [triton.Config({"BLOCK_R": 16, "D_CHUNK": c}, num_warps=8) for c in (16, 32, 64)]
    kept = tri._prune(configs, {}, BLOCK_D=32)
    assert [c.kwargs["D_CHUNK"] for c in kept] == [16, 32]
    assert tri._prune(configs[2:], {}, BLOCK_D=16) == configs[2:]  # never none left


@pytest.mark.parametrize(
    ("change", "error", "text"),
    [
        (
            dict(cap_lens=torch.tensor([6, 1, 0, 2, 3])),
            ValueError,
            r"cap_lens must lie in \[1, T = 6\]",
        ),
        (dict(cap_lens=torch.tensor([7, 1, 1, 2, 3])), ValueError, "cap_lens must lie in"),
        (dict(cap_lens=torch.ones(5)), TypeError, "cap_lens must be an int64"),
        (dict(cap_lens=torch.ones(4, dtype=torch.long)), ValueError, "cap_lens must have shape B"),
        (
            dict(class_ids=torch.ones(3, dtype=torch.long)),
            ValueError,
            "class_ids must have shape B",
        ),
        (dict(words=torch.randn(5, 8, 6)), ValueError, "words must have shape B x D x T"),
        (dict(sent=torch.randn(4, 7)), ValueError, "sent must have shape B x D"),
        (dict(img_global=torch.randn(4, 7), sent=torch.randn(4, 7)), ValueError, "img_global must"),
        (
            dict(img_local=torch.randn(5, 7, 9)),
            ValueError,
            "img_local must have shape B x D x H x W",
        ),
        (
            dict(img_global=torch.ones(5, 7, dtype=torch.long)),
            TypeError,
            "img_global must be float32",
        ),
    ],
)
def test_bad_inputs_raise_clear_errors(change, error, text):
    img_local, img_global, words, sent, lens = damsm_inputs(5, 7, 3, 4, 6, device="cpu")
    args = dict(img_local=img_local, img_global=img_global, words=words, sent=sent, cap_lens=lens,
                class_ids=None)  # fmt: skip
    args.update(change)
    with pytest.raises(error, match=text):
        ops.damsm_loss(**args, gamma1=4.0, gamma2=5.0, gamma3=10.0)


# --- GPU: AttnGAN's shapes, low precision, memory, torch.compile ------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize(
    ("backend", "dtype"),
    backend_dtypes(OP, (torch.float32, torch.bfloat16, torch.float16), device="cuda"),
    indirect=["backend"],
)
@pytest.mark.parametrize(("batch", "words"), [(8, 18), (48, 18), (100, 18), (7, 25), (3, 32)])
def test_gpu_parity_attngan_shapes(backend, dtype, batch, words):
    img, glob, emb, sent, lens = damsm_inputs(batch, 256, 17, 17, words, dtype)
    img, emb = (img.float() / 4).to(dtype), (emb.float() / 4).to(dtype)  # trained features' scale
    _check_parity(backend, (img, glob, emb, sent, lens))


@pytest.mark.gpu
def test_gpu_triton_memory_does_not_grow_as_b2rt():
    batch, dim, words = 100, 256, 25
    img, _, emb, _, lens = damsm_inputs(batch, dim, 17, 17, words)
    v, e = leaves(img.flatten(2), emb)
    op = registry.implementation(OP, "triton").forward_op
    op(v, e, lens, *GAMMAS[:2]).sum().backward()  # autotune
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    op(v, e, lens, *GAMMAS[:2]).sum().backward()
    torch.cuda.synchronize()
    extra = torch.cuda.max_memory_allocated() - base
    # The backward's buffers are G x B x D x R with G*B about two programs per SM (not B x B).
    b2rt = batch * batch * 289 * words * 4
    assert extra < b2rt / 2, (extra, b2rt)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", kernel_backends(OP, device="cuda"), indirect=True)
def test_gpu_torch_compile(backend):
    img, glob, emb, sent, lens = damsm_inputs(16, 256, 17, 17, 18)
    img.requires_grad_()

    def loss(x):
        out = ops.damsm_loss(x, glob, emb, sent, lens, None, *GAMMAS, backend=backend)
        return out.w_loss0 + out.w_loss1

    eager = torch.autograd.grad(loss(img), img)[0]
    got = torch.autograd.grad(torch.compile(loss)(img), img)[0]
    torch.testing.assert_close(got, eager, rtol=1e-5, atol=1e-7)


# --- the Triton kernels compiled for the GPU without one (Triton's own ptxas) ---------------------

AOT_SCRIPT = r"""
from attngan_fast.ops.damsm import COS_EPS
from attngan_fast.ops.triton import damsm as M
from attngan_fast.ops.triton._common import FP32_DOT_PRECISION

# fp32: every config; bf16 (converted to fp32 on load: the same code after it): the first.
for dt, n_configs in (("fp32", None), ("bf16", 1)):
    ptrs = {"*": dt, "lens_ptr": "i64", "s_ptr": "fp32", "gs_ptr": "fp32", "gv_part_ptr": "fp32",
            "ge_ptr": "fp32", "scratch_ptr": "fp32"}
    flags = dict(EPS=COS_EPS, BLOCK_D=256, BLOCK_T=32, PREC=FP32_DOT_PRECISION)
    for name, kern in (("fwd", M._fwd_kernel), ("bwd", M._bwd_kernel)):
        for k, cfg in enumerate(kern.configs[:n_configs]):
            aot_compile(f"{name} {dt} {cfg.kwargs} warps={cfg.num_warps}", kern.fn,
                        dict(flags, **cfg.kwargs), ptrs, float_args=("gamma1", "gamma2"),
                        options=autotune_options(cfg), config=k, configs=len(kern.configs))
"""


@pytest.mark.slow
@pytest.mark.parametrize("arch", ARCHS)
def test_triton_kernels_compile_for_gpu(arch):
    """Both kernels compile for sm_90 at the pretraining shape (D 256, T 18 -> 32) and fit an H100
    block. Register spills are known (benchmarks/NOTES.md: the backward spills ~1 KB a thread);
    the forward's first config, the autotuner's fallback, must stay within 64 bytes."""
    results = run_aot_script(AOT_SCRIPT, arch)
    configs = {r["label"].split()[0]: r["configs"] for r in results}
    assert len(configs) == 2 and min(configs.values()) > 1  # compiled Triton: every config
    assert len(results) == sum(configs.values()) + 2  # fp32: all configs; bf16: the first of each
    assert_fits(results, arch)
    for r in results:
        if r["label"].startswith("fwd") and r["config"] == 0:
            assert r["stack"] <= 64, r
