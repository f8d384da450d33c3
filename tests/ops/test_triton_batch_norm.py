"""Triton backend of batch_norm_glu / batch_norm_add against float64 references, and a G-like
block chain (upBlock, ResBlock) on backend="triton" against backend="torch".

On CPU the kernels run through the Triton interpreter (tests/conftest.py sets TRITON_INTERPRET=1):
tiny odd shapes only. The ``gpu`` tests use G's real shapes.
"""

import pytest
import torch
import torch.nn.functional as F
from parity import assert_parity, assert_rel_parity
from triton_aot import ARCHS, SPILL_SLACK, assert_fits, run_aot_script

from attngan_fast import ops
from attngan_fast.ops import _layout
from attngan_fast.ops import batch_norm as torch_backend
from attngan_fast.ops.triton import batch_norm as triton_backend

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
MOMENTUM, EPS = 0.1, 1e-5


def _make(shape, mode, dtype, layout, affine, device=DEVICE):
    """x, residual | None, weight | None, bias | None, running_mean, running_var, grad_y."""
    c = shape[1]
    x = (torch.randn(shape, device=device) * 1.5 + 0.7).to(dtype)
    residual = torch.randn(shape, device=device).to(dtype) if mode == "add" else None
    weight = torch.randn(c, device=device) * 0.5 + 1 if affine else None
    bias = torch.randn(c, device=device) if affine else None
    running = (torch.randn(c, device=device), torch.rand(c, device=device) + 0.5)
    y_shape = (shape[0], c // 2 if mode == "glu" else c, *shape[2:])
    grad_y = torch.randn(y_shape, device=device).to(dtype)
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
        grad_y = grad_y.to(memory_format=torch.channels_last)
        if residual is not None:
            residual = residual.to(memory_format=torch.channels_last)
    return x, residual, weight, bias, running, grad_y


def _run(x, residual, weight, bias, running, grad_y, training, backend, to=None):
    """Forward + backward through the public op: (y, grads..., running_mean, running_var)."""

    def prep(t):
        if t is None:
            return None
        t = t.detach().to(to) if to is not None else t.detach().clone()
        return t.requires_grad_(True)

    x, residual, weight, bias = prep(x), prep(residual), prep(weight), prep(bias)
    rm, rv = (t.detach().clone().to(to or t.dtype) for t in running)
    if residual is None:
        y = ops.batch_norm_glu(x, weight, bias, rm, rv, training, MOMENTUM, EPS, backend=backend)
    else:
        y = ops.batch_norm_add(
            x, residual, weight, bias, rm, rv, training, MOMENTUM, EPS, backend=backend
        )
    inputs = [t for t in (x, residual, weight, bias) if t is not None]
    g = grad_y.detach().to(to) if to is not None else grad_y
    grads = torch.autograd.grad(y, inputs, g)
    return (y, *grads, rm, rv)


def _check(shape, mode, training, dtype=torch.float32, layout="contiguous", affine=True,
           grad_y=None, device=DEVICE, cancelling=()):  # fmt: skip
    """Outputs numbered in ``cancelling`` are 0 in exact arithmetic (sums of O(1) terms that
    cancel): their relative error means nothing, they get the max-abs rule of ``assert_parity``."""
    x, residual, weight, bias, running, gy = _make(shape, mode, dtype, layout, affine, device)
    grad_y = gy if grad_y is None else grad_y
    args = (x, residual, weight, bias, running, grad_y, training)
    got = _run(*args, "triton")
    ref = _run(*args, "torch")
    exact = _run(*args, "torch", to=torch.float64)
    for i, (g, r, e) in enumerate(zip(got, ref, exact)):
        assert g.shape == e.shape, i
        if i in cancelling:
            assert_parity(f"output {i}", g, r, e)
        else:
            assert_rel_parity(f"output {i}", g, r, e, dtype, slack_eps=8)
    assert got[0].dtype == dtype
    fmt = _layout.memory_format(x)
    assert got[0].is_contiguous(memory_format=fmt) and got[1].is_contiguous(memory_format=fmt)
    if not training:  # running statistics untouched
        assert torch.equal(got[-2], running[0]) and torch.equal(got[-1], running[1])


SHAPES = {
    "contiguous": [(1, 6, 5, 5), (3, 6, 5, 5)],
    "channels_last": [(1, 6, 5, 5), (3, 6, 3, 5)],
    "2d": [(3, 6), (5, 10)],
    "3d": [(3, 6, 7)],
}
CASES = [(layout, s) for layout, shapes in SHAPES.items() for s in shapes]


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("mode", ["glu", "add"])
@pytest.mark.parametrize(("layout", "shape"), CASES)
def test_forward_gradients_and_running_stats(layout, shape, mode, training):
    if mode == "add":  # an odd channel count where GLU does not need an even one
        shape = (shape[0], shape[1] - 1, *shape[2:])
    _check(shape, mode, training, layout=layout)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("mode", ["glu", "add"])
def test_half_precision(mode, dtype):
    _check((3, 6, 5, 5), mode, True, dtype=dtype, layout="channels_last")
    _check((3, 6, 5, 5), mode, False, dtype=dtype)


@pytest.mark.parametrize("mode", ["glu", "add"])
def test_without_affine(mode):
    _check((3, 6, 4, 5), mode, True, affine=False)


def test_float64_inputs():
    _check((3, 6, 4, 5), "glu", True, dtype=torch.float64, layout="channels_last")


def test_many_splits_and_tiles():
    """Channels over several blocks, spatial over several tiles (exercises the partial merges)."""
    _check((2, 10, 23, 50), "glu", True)
    _check((2, 10, 9, 50), "add", True, layout="channels_last")


@pytest.mark.parametrize("mode", ["glu", "add"])
def test_stride_zero_upstream_gradient(mode):
    c = 6 if mode == "glu" else 5
    grad_y = torch.ones(1, 1, 1, 1, device=DEVICE).expand(3, c // 2 if mode == "glu" else c, 4, 5)
    # add, training: grad_weight = sum(grad_y xhat) = sum(xhat) = 0 (output 3: after y, grad_x,
    # grad_residual)
    _check((3, c, 4, 5), mode, True, grad_y=grad_y, cancelling=(3,) if mode == "add" else ())
    _check((3, c, 4, 5), mode, False, grad_y=grad_y)


def test_grad_y_in_the_other_memory_format():
    grad_y = torch.randn(2, 3, 3, 5, device=DEVICE)  # NCHW while x is channels-last
    _check((2, 6, 3, 5), "glu", True, layout="channels_last", grad_y=grad_y)


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
    x = torch.randn(3, 6, 4, 5, requires_grad=True)
    w, b = torch.randn(6, requires_grad=True), torch.randn(6, requires_grad=True)
    assert triton_backend.uses_triton_kernels(x)
    for training in (True, False):
        y = ops.batch_norm_glu(x, w, b, torch.zeros(6), torch.ones(6), training, 0.1, 1e-5,
                               backend="triton")  # fmt: skip
        y.sum().backward()
        y = ops.batch_norm_add(x, x, w, b, torch.zeros(6), torch.ones(6), training, 0.1, 1e-5,
                               backend="triton")  # fmt: skip
        y.sum().backward()


@pytest.mark.parametrize("channels_last", [False, True])
def test_opcheck(channels_last):
    x = torch.randn(3, 6, 4, 5)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    x.requires_grad_(True)
    w, b = torch.randn(6, requires_grad=True), torch.randn(6, requires_grad=True)
    op = torch.ops.attngan_fast.batch_norm_act.default
    stats = (torch.zeros(6), torch.ones(6))
    torch.library.opcheck(op, (x, None, w, b, *stats, True, 1e-5, "glu", "triton"))
    torch.library.opcheck(op, (x, None, w, b, *stats, False, 1e-5, "glu", "triton"))
    r = torch.randn_like(x).requires_grad_(True)
    torch.library.opcheck(op, (x, r, w, b, *stats, True, 1e-5, "add", "triton"))
    if not channels_last:
        x2 = x.detach()[:, :, 0, 0].requires_grad_(True)
        torch.library.opcheck(op, (x2, None, w, b, *stats, True, 1e-5, "glu", "triton"))


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
    leaves = [x, *convs, *(t for p in bns for t in p[:2])]
    weights = torch.linspace(-1, 2, out.numel(), device=out.device, dtype=out.dtype)
    grads = torch.autograd.grad((out * weights.view_as(out)).sum(), leaves)
    return (out, *grads, *(t for p in bns for t in p[2:]))


@pytest.mark.parametrize("channels_last", [False, True])
def test_block_chain_triton_equals_torch(channels_last, monkeypatch):
    # fp32 convolutions in IEEE on both sides (TF32 against cuDNN: test_triton_upsample_conv.py)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    x = torch.randn(3, 5, 3, 4, device=DEVICE)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    convs, bns = _chain_params(5, 3, DEVICE)
    got = _chain(x, convs, bns, "triton", torch.float32)
    ref = _chain(x, convs, bns, "torch", torch.float32)
    exact = _chain(x, convs, bns, "torch", torch.float64)
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
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize(("shape", "mode"), GPU_CASES)
def test_gpu_real_shapes(shape, mode, layout, dtype):
    if layout == "channels_last" and len(shape) != 4:
        pytest.skip("2-D input has one layout")
    _check(shape, mode, True, dtype=dtype, layout=layout, device="cuda")
    _check(shape, mode, False, dtype=dtype, layout=layout, device="cuda")


@pytest.mark.gpu
def test_gpu_block_chain():
    x = torch.randn(20, 64, 32, 32, device="cuda").to(memory_format=torch.channels_last)
    convs, bns = _chain_params(64, 32, "cuda")
    got = _chain(x, convs, bns, "triton", torch.float32)
    ref = _chain(x, convs, bns, "torch", torch.float32)
    exact = _chain(x, convs, bns, "torch", torch.float64)
    # four ops deep, and BN's sums (grad of bias: sum of dz) cancel: a larger relative slack
    for i, (g, r, e) in enumerate(zip(got, ref, exact)):
        assert_rel_parity(f"output {i}", g, r, e, torch.float32, slack_eps=64)


# --- compiled for the GPU without one (Triton's own ptxas) ----------------------------------------

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
def test_kernels_compile_for_gpu_without_spills(arch):
    """The GLU variants (the largest) of every kernel compile for sm_90 with _NUM_WARPS warps and
    no register spills, for both tile shapes and both dtypes; the merge kernel likewise."""
    results = run_aot_script(AOT_SCRIPT, arch)
    assert len(results) == 2 * 2 * (2 + 2 + 2) + 2
    assert_fits(results, arch)
    for r in results:
        assert r["stack"] <= SPILL_SLACK, r
