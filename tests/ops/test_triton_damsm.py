"""Triton backend of damsm_word_similarity against the float64 reference (CPU: the interpreter).

Parity bar: the Triton result's max abs error against the float64 reference is within 2x the
error of the same-dtype ``torch`` backend plus a small slack, for S, the losses and the gradients
of every floating input.
"""

from __future__ import annotations

import pytest
import torch
from parity import assert_parity
from triton_aot import ARCHS, assert_fits, run_aot_script

from attngan_fast.ops import damsm_loss, damsm_word_similarity_reference
from attngan_fast.ops.damsm import _damsm_word_similarity_op
from attngan_fast.ops.triton import damsm as tri

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
GAMMAS = (4.0, 5.0, 10.0)


@pytest.fixture
def spies(spy_kernels):
    return spy_kernels(tri, "_fwd_kernel", "_bwd_kernel")


def _inputs(batch, dim, height, width, words, dtype=torch.float32):
    img = torch.randn(batch, dim, height, width, device=DEVICE).to(dtype)
    emb = torch.randn(batch, dim, words, device=DEVICE).to(dtype)
    lens = torch.randint(1, words + 1, (batch,), device=DEVICE)
    lens[0] = 1  # a caption with one valid word
    lens[-1] = words
    return img, emb, lens


def _similarity(backend, img, emb, lens, grad):
    v = img.detach().flatten(2).clone().requires_grad_()
    e = emb.detach().clone().requires_grad_()
    sim = _damsm_word_similarity_op(v, e, lens, GAMMAS[0], GAMMAS[1], backend)
    (sim.double() * grad).sum().backward()
    return sim.detach(), v.grad, e.grad


def _check_similarity(img, emb, lens, grad=None):
    batch = img.shape[0]
    if grad is None:
        grad = torch.randn(batch, batch, dtype=torch.float64, device=DEVICE)
    fast = _similarity("triton", img, emb, lens, grad)
    ref = _similarity("torch", img, emb, lens, grad)
    v64 = img.detach().flatten(2).double().requires_grad_()
    e64 = emb.detach().double().requires_grad_()
    sim64 = damsm_word_similarity_reference(v64, e64, lens, GAMMAS[0], GAMMAS[1])
    (sim64 * grad).sum().backward()
    exact = (sim64.detach(), v64.grad, e64.grad)
    for name, f, r, e in zip(("S", "grad_img_local", "grad_words"), fast, ref, exact):
        assert f.shape == e.shape and torch.isfinite(f).all(), name
        assert_parity(name, f, r, e)
    return fast


@pytest.mark.parametrize("dtype", (torch.float32, torch.float16, torch.bfloat16))
@pytest.mark.parametrize(
    "shape",  # B, D, H, W, T: B = 3 runs two caption groups (read-modify-write), B = 5 one
    [
        (3, 6, 1, 7, 5),
        (3, 6, 1, 7, 1),
        (5, 6, 2, 3, 4),
        (4, 20, 3, 7, 4),
        (2, 3, 5, 5, 17),
        (2, 70, 1, 5, 3),
    ],
)
def test_similarity_parity(shape, dtype, spies):
    img, emb, lens = _inputs(*shape, dtype=dtype)
    fast = _check_similarity(img, emb, lens)
    assert spies[0].launches == 1 and spies[1].launches == 1  # the Triton path really ran
    words = shape[4]
    beyond = torch.arange(words, device=DEVICE)[None, :] >= lens[:, None]
    assert (fast[2].permute(0, 2, 1)[beyond] == 0).all()  # no gradient past a caption's end


def test_clamped_cosine_denominator():
    img, emb, lens = _inputs(3, 6, 1, 7, 4)
    emb[1] *= 1e-10  # |c_k| |e_k| < 1e-8: the cosine denominator is clamped
    img[2] = 0.0  # |c_k| = 0
    _check_similarity(img, emb, lens)


def test_stride_zero_upstream_gradient():
    img, emb, lens = _inputs(3, 6, 1, 7, 5)
    ones = torch.ones((), dtype=torch.float64, device=DEVICE).expand(3, 3)
    _check_similarity(img, emb, lens, grad=ones)
    v = img.flatten(2).clone().requires_grad_()
    _damsm_word_similarity_op(v, emb, lens, *GAMMAS[:2], "triton").sum().backward()  # stride 0
    v64 = img.flatten(2).double().requires_grad_()
    damsm_word_similarity_reference(v64, emb.double(), lens, *GAMMAS[:2]).sum().backward()
    torch.testing.assert_close(v.grad.double(), v64.grad, rtol=1e-5, atol=1e-6)


def _loss_and_grads(backend, img, glob, emb, sent, lens, class_ids):
    leaves = [t.detach().clone().requires_grad_() for t in (img, glob, emb, sent)]
    out = damsm_loss(*leaves[:2], leaves[2], leaves[3], lens, class_ids, *GAMMAS, backend=backend)
    total = out.w_loss0 + 2 * out.w_loss1 + 3 * out.s_loss0 + 4 * out.s_loss1
    total.backward()
    return [x.detach() for x in out[:4]] + [t.grad for t in leaves]


@pytest.mark.parametrize("non_contiguous", (False, True))
def test_damsm_loss_public_api(non_contiguous, spies):
    batch, dim, words = 6, 5, 4
    img, emb, lens = _inputs(batch, dim, 2, 3, words)
    glob, sent = torch.randn(batch, dim, device=DEVICE), torch.randn(batch, dim, device=DEVICE)
    class_ids = torch.tensor([0, 1, 0, 0, 1, 2], device=DEVICE)  # many same-class pairs
    if non_contiguous:
        img = img.transpose(2, 3).contiguous().transpose(2, 3)
        emb = emb.transpose(1, 2).contiguous().transpose(1, 2)
        glob = torch.randn(dim, batch, device=DEVICE).t()
        assert not (img.is_contiguous() or emb.is_contiguous() or glob.is_contiguous())
    fast = _loss_and_grads("triton", img, glob, emb, sent, lens, class_ids)
    ref = _loss_and_grads("torch", img, glob, emb, sent, lens, class_ids)
    exact = _loss_and_grads(
        "torch", img.double(), glob.double(), emb.double(), sent.double(), lens, class_ids
    )
    names = ("w_loss0", "w_loss1", "s_loss0", "s_loss1", "img_local", "img_global", "words", "sent")
    for name, f, r, e in zip(names, fast, ref, exact):
        assert torch.isfinite(f).all(), name
        assert_parity(name, f, r, e)
    assert spies[0].launches == 1 and spies[1].launches == 1


def test_triton_backend_rejects_float64():
    img, emb, lens = _inputs(2, 3, 1, 5, 3, dtype=torch.float64)
    with pytest.raises(TypeError, match="float64"):
        _damsm_word_similarity_op(img.flatten(2), emb, lens, *GAMMAS[:2], "triton")


def test_autotune_drops_channel_chunks_wider_than_the_channels():
    import triton

    configs = [triton.Config({"BLOCK_R": 16, "D_CHUNK": c}, num_warps=8) for c in (16, 32, 64)]
    kept = tri._prune(configs, {}, BLOCK_D=32)
    assert [c.kwargs["D_CHUNK"] for c in kept] == [16, 32]
    assert tri._prune(configs[2:], {}, BLOCK_D=16) == configs[2:]  # never none left


def test_opcheck():
    img, emb, lens = _inputs(3, 4, 1, 5, 3)
    v, e = img.flatten(2).requires_grad_(), emb.requires_grad_()
    torch.library.opcheck(_damsm_word_similarity_op, (v, e, lens, *GAMMAS[:2], "triton"))


# --- GPU: AttnGAN's shapes, low precision, memory ---------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16, torch.float16))
@pytest.mark.parametrize("batch", (8, 48, 100))
def test_gpu_parity_attngan_shapes(batch, dtype):
    img, emb, lens = _inputs(batch, 256, 17, 17, 18, dtype=dtype)
    img, emb = img / 4, emb / 4  # about the scale of trained DAMSM features
    _check_similarity(img, emb, lens)


@pytest.mark.gpu
def test_gpu_memory_does_not_grow_as_b2rt():
    batch, dim, words = 100, 256, 25
    img, emb, lens = _inputs(batch, dim, 17, 17, words)
    v = img.flatten(2).requires_grad_()
    e = emb.requires_grad_()
    _damsm_word_similarity_op(v, e, lens, *GAMMAS[:2], "triton").sum().backward()  # autotune
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    _damsm_word_similarity_op(v, e, lens, *GAMMAS[:2], "triton").sum().backward()
    torch.cuda.synchronize()
    extra = torch.cuda.max_memory_allocated() - base
    # The backward's buffers are G x B x D x R with G*B about two programs per SM (not B x B).
    b2rt = batch * batch * 289 * words * 4
    assert extra < b2rt / 2, (extra, b2rt)


@pytest.mark.gpu
def test_gpu_torch_compile():
    img, emb, lens = _inputs(16, 256, 17, 17, 18)
    glob, sent = torch.randn(16, 256, device=DEVICE), torch.randn(16, 256, device=DEVICE)
    img.requires_grad_()

    def loss(x):
        out = damsm_loss(x, glob, emb, sent, lens, None, *GAMMAS, backend="triton")
        return out.w_loss0 + out.w_loss1

    eager = torch.autograd.grad(loss(img), img)[0]
    got = torch.autograd.grad(torch.compile(loss)(img), img)[0]
    torch.testing.assert_close(got, eager, rtol=1e-5, atol=1e-7)


# --- compiled for the GPU without one (Triton's own ptxas) ----------------------------------------

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
def test_kernels_compile_for_gpu(arch):
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
