"""batch_norm_glu / batch_norm_add on every backend: parity with an independent float64 oracle
(outputs, gradients, running statistics), nn.BatchNorm's running statistics over several steps,
layouts, registration, errors; a G-like block chain; the Triton kernels' structure.

Parity rule (``tests/parity.py``, relative form): a backend's relative error against the float64
oracle is at most twice that of the same-dtype torch backend (for torch: the reference backend)
plus a slack derived per output (``slack_eps``): a bf16 / fp16 output is computed in fp32 and
rounded once, at most half a unit of its dtype, so one unit; an fp32 (or fp64) output sums N
values per channel, so log2(N) units of its dtype (a tiled or pairwise sum's rounding); the
reference backend's in units of the inputs' dtype (``inputs.rounding_dtype``). The oracle is
BatchNorm from its definition (Ioffe & Szegedy 2015, ``oracles.py``), not ``F.batch_norm``.
"""

from __future__ import annotations

import importlib

import pytest
import torch
import torch.nn.functional as F
from inputs import (
    DEVICE,
    backend_dtypes,
    backends,
    bn_inputs,
    kernel_backends,
    leaves,
    parity_reference,
    rounding_dtype,
)
from oracles import EPS, MOMENTUM, exact_batch_norm
from parity import assert_parity, assert_rel_parity, sum_slack_eps
from torch import nn
from triton_aot import ARCHS, SPILL_SLACK, assert_fits, run_aot_script

from attngan_fast import ops
from attngan_fast.ops import _layout, registry

OP = "batch_norm_act"
torch_backend = importlib.import_module("attngan_fast.ops.batch_norm")
tri = importlib.import_module("attngan_fast.ops.triton.batch_norm")

HALF = (torch.bfloat16, torch.float16)


def _run(backend, x, residual, weight, bias, running, grad_y, training, to=None):
    """(y, grads of x[, residual][, weight, bias], running_mean, running_var) after one call
    (``backend`` None: the oracle)."""
    x, residual, weight, bias = leaves(x, residual, weight, bias, to=to)
    rm, rv = (t.detach().clone().to(to or t.dtype) for t in running)
    if backend is None:
        y, rm, rv = exact_batch_norm(x, residual, weight, bias, (rm, rv), training,
                                     "glu" if residual is None else "add")  # fmt: skip
    elif residual is None:
        y = ops.batch_norm_glu(x, weight, bias, rm, rv, training, MOMENTUM, EPS, backend=backend)
    else:
        y = ops.batch_norm_add(
            x, residual, weight, bias, rm, rv, training, MOMENTUM, EPS, backend=backend
        )
    inputs = [t for t in (x, residual, weight, bias) if t is not None]
    grads = torch.autograd.grad(y, inputs, grad_y.to(y.dtype))
    return (y.detach(), *grads, rm, rv)


def _check_parity(backend, shape, mode, training, dtype=torch.float32, layout="contiguous",
                  affine=True, grad_y=None, cancelling=None):  # fmt: skip
    """``cancelling``: {output number: magnitude of its terms} for outputs that are 0 in exact
    arithmetic (sums of terms that cancel): their relative error means nothing, they get the
    max-abs rule of ``assert_parity``, log2(N) units of the terms' magnitude."""
    x, residual, weight, bias, running, gy = bn_inputs(shape, mode, dtype, layout, affine)
    args = (x, residual, weight, bias, running, gy if grad_y is None else grad_y, training)
    got = _run(backend, *args)
    ref = _run(parity_reference(backend), *args)
    exact = _run(None, *args, to=torch.float64)
    n = x.numel() // x.shape[1]
    for i, (g, r, e) in enumerate(zip(got, ref, exact)):
        assert g.shape == e.shape and g.dtype == r.dtype, i
        unit = rounding_dtype(backend, g.dtype, dtype)
        if i in (cancelling or {}):
            assert_parity(f"output {i}", g, r, e, slack_eps=sum_slack_eps(unit, n),
                          scale_floor=cancelling[i])  # fmt: skip
        else:
            assert_rel_parity(f"output {i}", g, r, e, unit, slack_eps=sum_slack_eps(unit, n))
    assert got[0].dtype == dtype
    fmt = _layout.memory_format(x)
    assert got[0].is_contiguous(memory_format=fmt) and got[1].is_contiguous(memory_format=fmt)
    if not training:  # running statistics untouched
        assert torch.equal(got[-2], running[0]) and torch.equal(got[-1], running[1])
    return got


CASES = [  # layout, shape: NCHW, channels-last, BatchNorm1d (B x C) and 3-D inputs
    ("contiguous", (1, 6, 5, 5)),
    ("contiguous", (3, 6, 5, 5)),
    ("channels_last", (1, 6, 5, 5)),
    ("channels_last", (3, 6, 3, 5)),
    ("contiguous", (3, 6)),
    ("contiguous", (5, 10)),
    ("contiguous", (3, 6, 7)),
]


@pytest.mark.parametrize("backend", backends(OP), indirect=True)
@pytest.mark.parametrize(("layout", "shape"), CASES, ids=lambda c: str(c).replace(" ", ""))
@pytest.mark.parametrize("mode", ["glu", "add"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_parity_fp32(backend, layout, shape, mode, training):
    if mode == "add":  # an odd channel count where GLU does not need an even one
        shape = (shape[0], shape[1] - 1, *shape[2:])
    _check_parity(backend, shape, mode, training, layout=layout)


@pytest.mark.parametrize(("backend", "dtype"), backend_dtypes(OP, HALF), indirect=["backend"])
@pytest.mark.parametrize("mode", ["glu", "add"])
def test_parity_half_precision(backend, dtype, mode):
    _check_parity(backend, (3, 6, 5, 5), mode, True, dtype, "channels_last")
    _check_parity(backend, (3, 6, 5, 5), mode, False, dtype)


@pytest.mark.parametrize("backend", backends(OP, torch.float64), indirect=True)
def test_parity_float64(backend):
    _check_parity(backend, (3, 6, 4, 5), "glu", True, torch.float64, "channels_last")
    _check_parity(backend, (3, 5, 4, 5), "add", False, torch.float64)


@pytest.mark.parametrize("backend", backends(OP), indirect=True)
@pytest.mark.parametrize("mode", ["glu", "add"])
def test_misaligned_pointers(backend, mode):
    """A view one element into its storage: the cuda kernels' scalar (not 16-byte) path."""
    _check_parity(backend, (2, 16, 4, 4), mode, True, torch.float16, "misaligned")
    _check_parity(backend, (2, 16, 4, 4), mode, False, torch.float32, "misaligned", affine=False)


@pytest.mark.parametrize("backend", backends(OP), indirect=True)
@pytest.mark.parametrize("mode", ["glu", "add"])
def test_without_affine(backend, mode):
    _check_parity(backend, (3, 6, 4, 5), mode, True, affine=False)


@pytest.mark.parametrize("backend", backends(OP), indirect=True)
def test_many_splits_and_tiles(backend):
    """Channels over several blocks, pixels over several tiles (the partial merges)."""
    _check_parity(backend, (2, 10, 23, 50), "glu", True)
    _check_parity(backend, (2, 10, 9, 50), "add", True, layout="channels_last")


@pytest.mark.parametrize("backend", backends(OP), indirect=True)
@pytest.mark.parametrize("mode", ["glu", "add"])
def test_stride_zero_upstream_gradient(backend, mode):
    c = 6 if mode == "glu" else 5
    grad_y = torch.ones(1, 1, 1, 1, device=DEVICE).expand(3, c // 2 if mode == "glu" else c, 4, 5)
    # add, training: grad_x = (g - mean(g) - xhat mean(g xhat)) / std = 0, terms O(1) (output
    # 1), and grad_weight = sum(g xhat) = sum(xhat) = 0, N terms O(1) (output 3)
    _check_parity(backend, (3, c, 4, 5), mode, True, grad_y=grad_y,
                  cancelling={1: 1.0, 3: 60.0} if mode == "add" else None)  # fmt: skip
    _check_parity(backend, (3, c, 4, 5), mode, False, grad_y=grad_y)


@pytest.mark.parametrize("backend", backends(OP), indirect=True)
def test_grad_y_in_the_other_memory_format(backend):
    grad_y = torch.randn(2, 3, 3, 5, device=DEVICE)  # NCHW while x is channels-last
    _check_parity(backend, (2, 6, 3, 5), "glu", True, layout="channels_last", grad_y=grad_y)


@pytest.mark.parametrize("backend", backends(OP, torch.float64), indirect=True)
@pytest.mark.parametrize("shape", [(3, 6, 5, 5), (1, 6, 3, 2), (4, 6)], ids=str)
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_running_statistics_follow_nn_batch_norm_over_several_steps(backend, shape, training):
    """The original's ``nn.Sequential(nn.BatchNorm2d(C), GLU(dim=1))`` and its state dict."""
    theirs = (nn.BatchNorm2d if len(shape) == 4 else nn.BatchNorm1d)(6).double().to(DEVICE)
    with torch.no_grad():
        theirs.weight.normal_(1.0, 0.2)
        theirs.bias.normal_(0.0, 0.2)
        theirs.running_mean.normal_()
        theirs.running_var.uniform_(0.5, 2.0)
    ours = {k: v.clone() for k, v in theirs.state_dict().items()}
    original = nn.Sequential(theirs, nn.GLU(dim=1)).train(training)
    for _ in range(3):
        x = torch.randn(*shape, dtype=torch.float64, device=DEVICE) * 2 + 1
        y = ops.batch_norm_glu(x, ours["weight"], ours["bias"], ours["running_mean"],
                               ours["running_var"], training, theirs.momentum, theirs.eps,
                               backend=backend)  # fmt: skip
        torch.testing.assert_close(y, original(x))
    torch.testing.assert_close(ours["running_mean"], theirs.running_mean)
    torch.testing.assert_close(ours["running_var"], theirs.running_var)


@pytest.mark.parametrize("backend", backends(OP, torch.bfloat16), indirect=True)
def test_half_input_with_float32_parameters(backend):
    x, _, weight, bias, (rm, rv), _ = bn_inputs((3, 6, 4, 4), "glu", torch.bfloat16)
    y = ops.batch_norm_glu(x, weight, bias, rm, rv, True, MOMENTUM, EPS, backend=backend)
    assert y.dtype == torch.bfloat16 and rm.dtype == torch.float32 and rv.dtype == torch.float32


@pytest.mark.parametrize("backend", kernel_backends(OP), indirect=True)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_opcheck(backend, layout):
    x, residual, weight, bias, running, _ = bn_inputs((3, 6, 4, 5), "add", layout=layout)
    x, residual, weight, bias = leaves(x, residual, weight, bias)
    op = registry.implementation(OP, backend).forward_op
    for training in (True, False):
        torch.library.opcheck(op, (x, None, weight, bias, *running, training, EPS, "glu"))
    torch.library.opcheck(op, (x, residual, weight, bias, *running, True, EPS, "add"))
    if layout == "contiguous":
        x2 = (
            x.detach()[:, :, 0, 0].contiguous().requires_grad_()
        )  # B x C (the kernels take it dense)
        torch.library.opcheck(op, (x2, None, weight, bias, *running, True, EPS, "glu"))


@pytest.mark.parametrize(
    "backend",
    backends(OP, torch.float64, exclude=("cuda_emulated", "triton") if DEVICE == "cpu" else ()),
    indirect=True,
)  # the emulation and the interpreter: the float64 parity cases (gradcheck's many calls would
# take minutes)
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("shape", [(2, 4, 3, 3), (4, 4)], ids=str)
def test_gradcheck_float64(backend, training, shape):
    x, residual, weight, bias, running, _ = bn_inputs(shape, "add", torch.float64)
    weight, bias = weight.double(), bias.double()

    def glu(x, w, b):
        rm, rv = (t.clone() for t in running)
        return ops.batch_norm_glu(x, w, b, rm, rv, training, MOMENTUM, EPS, backend=backend)

    def add(x, r, w, b):
        rm, rv = (t.clone() for t in running)
        return ops.batch_norm_add(x, r, w, b, rm, rv, training, MOMENTUM, EPS, backend=backend)

    assert torch.autograd.gradcheck(glu, tuple(leaves(x, weight, bias)))
    assert torch.autograd.gradcheck(add, tuple(leaves(x, residual, weight, bias)))


@pytest.mark.parametrize(
    ("kwargs", "error", "text"),
    [
        (dict(x=torch.randn(2, 5, 3, 3)), ValueError, "even number of channels"),
        (dict(weight=torch.randn(4)), ValueError, "weight must have shape C = 6"),
        (dict(running_var=None), ValueError, "both be tensors or both be None"),
        (dict(running_mean=None, running_var=None, training=False), ValueError, "eval mode"),
        (dict(x=torch.randn(1, 6)), ValueError, "more than 1 value per channel"),
        (dict(x=torch.randn(6)), ValueError, "x must have shape B x C"),
        (dict(bias=torch.ones(6, dtype=torch.long)), TypeError, "bias must be float32"),
    ],
)
def test_bad_inputs_raise_clear_errors(kwargs, error, text):
    args = dict(x=torch.randn(2, 6, 3, 3), weight=torch.ones(6), bias=torch.zeros(6),
                running_mean=torch.zeros(6), running_var=torch.ones(6), training=True,
                momentum=0.1, eps=1e-5)  # fmt: skip
    args.update(kwargs)
    with pytest.raises(error, match=text):
        ops.batch_norm_glu(**args)


def test_residual_shape_is_checked():
    with pytest.raises(ValueError, match="residual must have the shape of x"):
        ops.batch_norm_add(torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 2), None, None, None, None,
                           True, 0.1, 1e-5)  # fmt: skip


@pytest.mark.skipif("triton" not in backends(OP), reason="the triton backend cannot run here")
def test_the_triton_kernels_run_not_a_fallback(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("fell back")

    for module, name in (
        (torch_backend, "batch_norm_act_forward"),
        (torch_backend, "batch_norm_act_backward"),
        (F, "batch_norm"),
        (F, "glu"),
    ):
        monkeypatch.setattr(module, name, fail)
    x, _, w, b, _, _ = bn_inputs((3, 6, 4, 5), "glu")
    x, w, b = leaves(x, w, b)
    assert tri.uses_triton_kernels(x)
    for training in (True, False):
        y = ops.batch_norm_glu(x, w, b, torch.zeros(6), torch.ones(6), training, 0.1, 1e-5,
                               backend="triton")  # fmt: skip
        y.sum().backward()
        y = ops.batch_norm_add(x, x, w, b, torch.zeros(6), torch.ones(6), training, 0.1, 1e-5,
                               backend="triton")  # fmt: skip
        y.sum().backward()


# --- a G-like block chain -------------------------------------------------------------------------


def _chain_params(cin, c, device):
    """upBlock(cin -> c) then ResBlock(c): conv weights and BN (weight, bias, mean, var) sets."""

    def bn(n):
        return [torch.randn(n, device=device) * 0.2 + 1, torch.randn(n, device=device) * 0.1,
                torch.zeros(n, device=device), torch.ones(n, device=device)]  # fmt: skip

    convs = [torch.randn(2 * c, cin, 3, 3, device=device) / (3 * cin**0.5),
             torch.randn(2 * c, c, 3, 3, device=device) / (3 * c**0.5),
             torch.randn(c, c, 3, 3, device=device) / (3 * c**0.5)]  # fmt: skip
    return convs, [bn(2 * c), bn(2 * c), bn(c)]


def _chain(x, convs, bns, backend, to):
    """upBlock = upsample_conv3x3 -> bn_glu; ResBlock = conv -> bn_glu -> conv -> bn_add.
    Returns (out, grads of x, convs and BN affine params, running stats after the step)."""
    x = x.detach().to(to).requires_grad_(True)
    convs = [w.detach().to(to).requires_grad_(True) for w in convs]
    bns = [[t.detach().to(to).clone() for t in p] for p in bns]
    for p in bns:
        p[0].requires_grad_(True)
        p[1].requires_grad_(True)

    def bn_glu(h, p):
        return ops.batch_norm_glu(h, *p, True, MOMENTUM, EPS, backend=backend)

    h = bn_glu(ops.upsample_conv3x3(x, convs[0], backend=backend), bns[0])
    r = bn_glu(F.conv2d(h, convs[1], padding=1), bns[1])
    r = F.conv2d(r, convs[2], padding=1)
    out = ops.batch_norm_add(r, h, *bns[2], True, MOMENTUM, EPS, backend=backend)
    leaves_ = [x, *convs, *(t for p in bns for t in p[:2])]
    weights = torch.linspace(-1, 2, out.numel(), device=out.device, dtype=out.dtype)
    grads = torch.autograd.grad((out * weights.view_as(out)).sum(), leaves_)
    return (out, *grads, *(t for p in bns for t in p[2:]))


CHAIN_BACKENDS = [b for b in backends(OP) if b in backends("upsample_conv3x3")]


@pytest.mark.parametrize("backend", CHAIN_BACKENDS, indirect=True)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_block_chain_against_float64(backend, layout, monkeypatch):
    # fp32 convolutions in IEEE on both sides (TF32 against cuDNN: test_upsample_conv.py)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    x = torch.randn(3, 5, 3, 4, device=DEVICE)
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    convs, bns = _chain_params(5, 3, DEVICE)
    got = _chain(x, convs, bns, backend, torch.float32)
    ref = _chain(x, convs, bns, parity_reference(backend), torch.float32)
    exact = _chain(x, convs, bns, "reference", torch.float64)
    # four ops deep, and BN's sums (grad of bias: sum of dz) cancel: a larger relative slack
    for i, (g, r, e) in enumerate(zip(got, ref, exact)):
        assert_rel_parity(f"output {i}", g, r, e, torch.float32, slack_eps=64)


# --- GPU: G's real shapes -------------------------------------------------------------------------

# (shape of x, mode): BN1d + GLU of INIT_STAGE_G.fc, upBlocks, ResBlocks (birds ngf=32, batch 20)
GPU_CASES = [((20, 16384), "glu"), ((20, 512, 8, 8), "glu"), ((20, 256, 16, 16), "glu"),
             ((20, 128, 32, 32), "glu"), ((20, 64, 64, 64), "glu"), ((20, 128, 64, 64), "glu"),
             ((20, 64, 64, 64), "add"), ((20, 128, 128, 128), "glu"), ((20, 64, 128, 128), "add"),
             ((20, 64, 256, 256), "glu"), ((14, 96, 128, 128), "add")]  # fmt: skip


@pytest.mark.gpu
@pytest.mark.parametrize(
    ("backend", "dtype"),
    backend_dtypes(
        OP, (torch.bfloat16, torch.float16, torch.float32), device="cuda", exclude=("reference",)
    ),  # fmt: skip
    indirect=["backend"],
)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize(("shape", "mode"), GPU_CASES, ids=str)
def test_gpu_real_shapes(backend, dtype, layout, shape, mode):
    if layout == "channels_last" and len(shape) != 4:
        pytest.skip("2-D input has one layout")
    _check_parity(backend, shape, mode, True, dtype, layout)
    _check_parity(backend, shape, mode, False, dtype, layout)


@pytest.mark.gpu
@pytest.mark.parametrize(
    "backend", [b for b in CHAIN_BACKENDS if b != "reference"] or ["torch"], indirect=True
)
def test_gpu_block_chain(backend):
    x = torch.randn(20, 64, 32, 32, device="cuda").to(memory_format=torch.channels_last)
    convs, bns = _chain_params(64, 32, "cuda")
    got = _chain(x, convs, bns, backend, torch.float32)
    ref = _chain(x, convs, bns, "torch", torch.float32)
    exact = _chain(x, convs, bns, "reference", torch.float64)
    # four ops deep, and BN's sums (grad of bias: sum of dz) cancel: a larger relative slack
    for i, (g, r, e) in enumerate(zip(got, ref, exact)):
        assert_rel_parity(f"output {i}", g, r, e, torch.float32, slack_eps=64)


# --- the Triton kernels compiled for the GPU without one (Triton's own ptxas) ---------------------

AOT_SCRIPT = r"""
import torch
import triton.language as tl
from attngan_fast.ops.triton import batch_norm as B

FP32_PTRS = ("part_ptr", "w_ptr", "b_ptr", "mean_ptr", "var_ptr", "sums_ptr", "src_ptr", "dst_ptr")
for dt in ("bf16", "fp32"):
    ptrs = dict({"*": dt}, **{name: "fp32" for name in FP32_PTRS})
    cuda = torch.device("cuda")
    for ss in (1, 512):  # NCHW and channels-last tiles (512 channels, 64 x 64 x B pixels)
        for training in (True, False):
            kernels = [(B._grad_reduce_kernel, B.grad_blocks(4096, 512, ss, cuda)),
                       (B._grad_apply_kernel, B.grad_blocks(4096, 512, ss, cuda))]
            if training:  # the forward kernels do not depend on the mode
                kernels += [(B._stats_kernel, B._blocks(4096, 512, ss, cuda)),
                            (B._apply_kernel, B._blocks(4096, 512, ss, cuda))]
            for fn, (block_s, block_c) in kernels:
                flags = dict(BLOCK_S=block_s, BLOCK_C=block_c, ACC=tl.float32, GLU=True,
                             TRAINING=training, HAS_W=True, HAS_B=True, RTNE_BF16=False)
                consts = {k: v for k, v in flags.items() if k in fn.arg_names}
                aot_compile(f"{fn.__name__} {dt} {block_s}x{block_c} training={training}", fn,
                            consts, ptrs, float_args=("eps", "inv_n"),
                            options={"num_warps": B._NUM_WARPS})
block_p, block_c = B._merge_blocks(torch.device("cuda"))
for final in (True, False):
    consts = dict(FINAL=final, BLOCK_P=block_p, BLOCK_C=block_c, ACC=tl.float32)
    aot_compile(f"_merge_kernel final={final}", B._merge_kernel, consts, {"*": "fp32"},
                options={"num_warps": 4})
"""


@pytest.mark.slow
@pytest.mark.parametrize("arch", ARCHS)
def test_triton_kernels_compile_for_gpu_without_spills(arch):
    """The GLU variants (the largest) of every kernel compile for sm_90 with _NUM_WARPS warps and
    no register spills, for both tile shapes and both dtypes; the merge kernel likewise."""
    results = run_aot_script(AOT_SCRIPT, arch)
    assert len(results) == 2 * 2 * (2 + 2 + 2) + 2
    assert_fits(results, arch)
    for r in results:
        assert r["stack"] <= SPILL_SLACK, r
