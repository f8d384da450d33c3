"""The CUDA sources compile, and their kernels compute the right thing, without a GPU.

* ``test_cuda_sources_compile``: tools/check_cuda_kernels.sh compiles every csrc/*.cu with nvcc
  for sm_80 and sm_90 and syntax-checks csrc/bindings.cpp against torch's headers.
* The ``emulated`` tests translate the kernel files to C++ for csrc/host_emulation.cuh (one host
  thread per CUDA thread, real barriers and warp shuffles, 16-byte accesses checked for
  alignment), build them with g++ and run the launchers through ctypes on CPU tensors, against
  the float64 reference with the parity rule of the GPU tests (error within 2x that of the
  same-dtype ``torch`` backend plus a small slack). This checks indexing, masking, chunking,
  reductions and synchronisation; speed, races the emulation's scheduling does not expose and
  the binding are left to the GPU tests in tests/ops/test_cuda_backend.py.

Skipped where nvcc (and for the emulation g++ with C++20 and the CUDA headers) is missing.
"""

from __future__ import annotations

import ctypes
import importlib
import os
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from parity import assert_parity

# the op modules (``attngan_fast.ops.word_attention`` is shadowed by the function of that name)
bn_ref = importlib.import_module("attngan_fast.ops.batch_norm")
damsm_ref = importlib.import_module("attngan_fast.ops.damsm")
wa_ref = importlib.import_module("attngan_fast.ops.word_attention")

ROOT = Path(__file__).resolve().parents[1]
CSRC = ROOT / "csrc"
SCRIPT = ROOT / "tools" / "check_cuda_kernels.sh"
KERNEL_FILES = ("word_attention", "damsm", "batch_norm")


def _nvcc() -> str | None:
    cuda_home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    found = shutil.which("nvcc")
    if found is None and cuda_home:
        found = shutil.which("nvcc", path=str(Path(cuda_home) / "bin"))
    return found


needs_nvcc = pytest.mark.skipif(_nvcc() is None, reason="nvcc is not on PATH (nor in CUDA_HOME)")


@needs_nvcc
def test_cuda_sources_compile():
    env = dict(os.environ, NVCC=_nvcc())
    result = subprocess.run(
        ["bash", str(SCRIPT)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900
    )
    report = result.stdout + result.stderr
    assert result.returncode == 0, report
    for source in sorted(CSRC.glob("*.cu")):
        assert f"ok    csrc/{source.name}" in report, report


# --- host emulation ------------------------------------------------------------------------------

_SHIM = r"""
#include "kernels.cuh"
using namespace attngan;
using L = long;
extern "C" {
size_t wa_fwd_ws(int dt, L B, L C, L N, L T) {
  return word_attention_forward_workspace(DType(dt), {B, C, N, T, C * N, N, 1}); }
size_t wa_bwd_ws(int dt, L B, L C, L N, L T, int sms) {
  return word_attention_backward_workspace(DType(dt), {B, C, N, T, C * N, N, 1}, sms); }
int wa_fwd(int dt, void* q, void* s, void* m, int legacy, void* ctx, void* attn, void* lse,
           void* ws, L B, L C, L N, L T, L sb, L sc, L sn) {
  return word_attention_forward(DType(dt), q, s, (const bool*)m, legacy, ctx, attn, lse, ws,
                                {B, C, N, T, sb, sc, sn}, nullptr); }
int wa_bwd(int dt, void* g, void* ga, void* q, void* s, void* m, int legacy, void* lse, void* gq,
           void* gs, void* ws, L B, L C, L N, L T, L sb, L sc, L sn, int sms) {
  return word_attention_backward(DType(dt), g, ga, q, s, (const bool*)m, legacy, lse, gq, gs, ws,
                                 {B, C, N, T, sb, sc, sn}, sms, nullptr); }
int dm_fwd(int dt, void* v, void* e, void* lens, double g1, double g2, void* S, L B, L D, L R,
           L T) {
  return damsm_forward(DType(dt), v, e, (const int64_t*)lens, g1, g2, S, {B, D, R, T}, nullptr); }
size_t dm_ws(int dt, L B, L D, L R, L T, int sms) {
  return damsm_backward_workspace(DType(dt), {B, D, R, T}, sms); }
int dm_bwd(int dt, void* gs, void* v, void* e, void* lens, double g1, double g2, void* gv,
           void* ge, void* ws, L B, L D, L R, L T, int sms) {
  return damsm_backward(DType(dt), gs, v, e, (const int64_t*)lens, g1, g2, gv, ge, ws,
                        {B, D, R, T}, sms, nullptr); }
size_t bn_ws(int dt, L M, L C, L K, int mode, int bwd, int sms) {
  return batch_norm_workspace(DType(dt), {M, C, K}, BnMode(mode), bwd, sms); }
int bn_fwd(int dt, int mode, void* x, void* r, void* w, void* b, void* mean, void* var,
           int training, double eps, void* y, void* ws, L M, L C, L K, int sms) {
  return batch_norm_act_forward(DType(dt), BnMode(mode), x, r, w, b, mean, var, training, eps, y,
                                ws, {M, C, K}, sms, nullptr); }
int bn_bwd(int dt, int mode, void* gy, void* x, void* w, void* b, void* mean, void* var,
           int training, double eps, void* gx, void* gw, void* gb, void* ws, L M, L C, L K,
           int sms) {
  return batch_norm_act_backward(DType(dt), BnMode(mode), gy, x, w, b, mean, var, training, eps,
                                 gx, gw, gb, ws, {M, C, K}, sms, nullptr); }
}
"""

_VECTOR_CAST = re.compile(r"reinterpret_cast<(const )?(float4|double2|Vec16<T>)\*>\(")
_LAUNCH = re.compile(r"([A-Za-z_]\w*(?:<[^<>;()]*>)?)<<<")


def _translate(text: str) -> str:
    """CUDA source -> C++ for host_emulation.cuh (launches, dynamic shared memory, vectors)."""
    launches = text.count("<<<")
    text = text.replace(
        "extern __shared__ __align__(16) unsigned char smem_raw[];",
        "unsigned char* smem_raw = emu::dynamic_smem();",
    )
    text, n = _LAUNCH.subn(r"emu::launch(\1, ", text)
    assert n == launches, "a kernel launch the translation does not understand"
    text = text.replace(">>>(", ", ")
    return _VECTOR_CAST.sub(r"emu::aligned<\1\2>(", text)


def _cuda_include() -> str | None:
    dry = subprocess.run(
        [_nvcc(), "--dryrun", "-c", str(CSRC / "damsm.cu"), "-o", os.devnull],
        capture_output=True,
        text=True,
    )
    found = re.search(r'INCLUDES="([^"]*)"', dry.stdout + dry.stderr)
    return " ".join(found.group(1).split()) if found else None


@pytest.fixture(scope="module")
def emu(tmp_path_factory):
    """The kernels built for the host emulation, as a ctypes library."""
    if _nvcc() is None or shutil.which("g++") is None:
        pytest.skip("the emulation needs nvcc's CUDA headers and g++")
    includes = _cuda_include()
    if includes is None:
        pytest.skip("could not find the CUDA include directory from nvcc --dryrun")
    work = tmp_path_factory.mktemp("cuda_emulation")
    for header in ("common.cuh", "kernels.cuh"):
        (work / header).write_text(_translate((CSRC / header).read_text()))
    units = []
    for name in KERNEL_FILES:
        (work / f"{name}.cpp").write_text(_translate((CSRC / f"{name}.cu").read_text()))
        units.append((f"{name}.cpp", []))
    (work / "shim.cpp").write_text(_SHIM)
    units.append(("shim.cpp", ["-DATTNGAN_EMU_DEFINE_RUNTIME"]))
    base = ["g++", "-std=c++20", "-O1", "-pthread", "-fPIC", "-w"]
    base += ["-include", str(CSRC / "host_emulation.cuh"), f"-I{work}", *includes.split()]

    def build(unit):
        source, extra = unit
        cmd = [*base, *extra, "-c", source, "-o", source.replace(".cpp", ".o")]
        return subprocess.run(cmd, cwd=work, capture_output=True, text=True)

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        results = list(pool.map(build, units))
    for (source, _), res in zip(units, results):
        if res.returncode != 0 and "barrier" in res.stderr and "No such file" in res.stderr:
            pytest.skip("g++ lacks C++20 <barrier>")
        assert res.returncode == 0, f"{source}:\n{res.stderr[-4000:]}"
    objects = [u[0].replace(".cpp", ".o") for u in units]
    link = subprocess.run(
        ["g++", "-shared", "-pthread", "-o", "libemu.so", *objects],
        cwd=work,
        capture_output=True,
        text=True,
    )
    assert link.returncode == 0, link.stderr
    lib = ctypes.CDLL(str(work / "libemu.so"))
    for fn in ("wa_fwd_ws", "wa_bwd_ws", "dm_ws", "bn_ws"):
        getattr(lib, fn).restype = ctypes.c_size_t
    return lib


_DT = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2, torch.float64: 3}
_SMS = 3  # a small "GPU": several blocks per sample, split reductions


def _p(t):
    return ctypes.c_void_p(0 if t is None else t.data_ptr())


def _acc(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


def _scratch(nbytes):
    return torch.empty(max(int(nbytes), 1), dtype=torch.uint8)


def _check(name, fast, ref, exact, slack_eps=16):
    """The GPU tests' parity rule; float64 kernels (exact arithmetic here) get a 1e-10 unit."""
    eps = 1e-10 if fast.dtype == torch.float64 else None
    assert_parity(name, fast, ref, exact, slack_eps=slack_eps, eps=eps)


# word_attention ----------------------------------------------------------------------------------


def _wa_emu(lib, q, s, mask, need_attn, legacy, g, ga):
    """The launchers on q (and g, ctx, gq in q's layout: regions or channels innermost)."""
    B, C, N = q.shape
    T = s.shape[2]
    dt, sizes = _DT[q.dtype], [ctypes.c_long(v) for v in (B, C, N, T)]
    strides = [ctypes.c_long(v) for v in q.stride()]
    assert g.stride() == q.stride()
    ctx = torch.empty_like(q)
    attn = torch.empty(B, T, N, dtype=q.dtype) if need_attn else None
    lse = torch.empty(B, N, dtype=_acc(q.dtype))
    ws = _scratch(lib.wa_fwd_ws(dt, *sizes))
    args = (_p(q), _p(s), _p(mask), int(legacy), _p(ctx), _p(attn), _p(lse), _p(ws))
    assert lib.wa_fwd(dt, *args, *sizes, *strides) == 0
    gq, gs = torch.empty_like(q), torch.empty_like(s)
    ws = _scratch(lib.wa_bwd_ws(dt, *sizes, _SMS))
    args = (_p(g), _p(ga), _p(q), _p(s), _p(mask), int(legacy), _p(lse), _p(gq), _p(gs), _p(ws))
    assert lib.wa_bwd(dt, *args, *sizes, *strides, _SMS) == 0
    return [ctx, lse, gq, gs] + ([attn] if need_attn else [])


def _wa_torch(q, s, mask, need_attn, legacy, g, ga):
    ctx, attn, lse = wa_ref.word_attention_forward(q, s, mask, need_attn, legacy)
    gq, gs = wa_ref.word_attention_backward(g, ga, q, s, mask, lse, legacy)
    return [ctx, lse, gq, gs] + ([attn] if need_attn else [])


def _wa_mask(batch, words, kind):
    if kind is None:
        return None
    mask = torch.rand(batch, words) < 0.5
    if kind == "one_valid":
        mask = torch.ones(batch, words, dtype=torch.bool)
        mask[torch.arange(batch), torch.randint(0, words, (batch,))] = False
    elif kind == "empty_rows":
        mask[0] = True
        mask[1:, 0] = False
    return mask


def _wa_case(lib, shape, dtype, mask_kind, need_attn=True, legacy=False, channels_last=False):
    B, C, N, T = shape
    q, s = torch.randn(B, C, N).to(dtype), torch.randn(B, C, T).to(dtype)
    g = torch.randn(B, C, N).to(dtype)
    if channels_last:  # channels innermost, as a channels-last map flattened to B x C x (H W)
        q, g = (t.transpose(1, 2).contiguous().transpose(1, 2) for t in (q, g))
    ga = torch.randn(B, T, N).to(dtype) if need_attn else None
    mask = _wa_mask(B, T, mask_kind)
    fast = _wa_emu(lib, q, s, mask, need_attn, legacy, g, ga)
    ref = _wa_torch(q, s, mask, need_attn, legacy, g, ga)
    d = (q.double(), s.double(), mask, need_attn, legacy, g.double())
    exact = _wa_torch(*d, None if ga is None else ga.double())
    empty = torch.isinf(exact[1])
    assert torch.equal(torch.isinf(fast[1]), empty) and (fast[1][empty] > 0).all()
    fast[1], ref[1], exact[1] = (t.masked_fill(empty, 0) for t in (fast[1], ref[1], exact[1]))
    for name, f, r, e in zip(("context", "lse", "grad_query", "grad_source", "attn"), *[
        fast, ref, exact
    ]):  # fmt: skip
        _check(name, f, r, e)


@needs_nvcc
@pytest.mark.parametrize("mask_kind", [None, "random", "one_valid", "empty_rows"])
def test_emulated_word_attention_masks(emu, mask_kind):
    _wa_case(emu, (3, 5, 37, 7), torch.float64, mask_kind)
    _wa_case(emu, (3, 5, 37, 7), torch.float32, mask_kind, need_attn=False, legacy=True)


@needs_nvcc
@pytest.mark.parametrize(
    ("shape", "dtype"),
    [
        ((2, 48, 130, 18), torch.bfloat16),  # coco-like C, two region tiles per block
        ((2, 6, 70, 33), torch.float32),  # T > 32: the chunked two-pass kernels
        ((2, 3, 65, 70), torch.float16),  # three word chunks
        ((1, 70, 20, 5), torch.float64),  # C > 64: several channels per thread
    ],
)
def test_emulated_word_attention_shapes(emu, shape, dtype):
    _wa_case(emu, shape, dtype, "empty_rows", legacy=True)


@needs_nvcc
@pytest.mark.parametrize(
    ("shape", "dtype"),
    [((2, 5, 37, 7), torch.float32), ((2, 6, 70, 33), torch.float64)],  # T <= 32 and T > 32
)
def test_emulated_word_attention_channels_innermost(emu, shape, dtype):
    """Query, grad_context (and so context, grad_query) with the channels innermost."""
    _wa_case(emu, shape, dtype, "random", channels_last=True)


# damsm_word_similarity ---------------------------------------------------------------------------


def _dm_emu(lib, v, e, lens, grad_s):
    B, D, R = v.shape
    dt, sizes = _DT[v.dtype], [ctypes.c_long(x) for x in (B, D, R, e.shape[2])]
    g1, g2 = ctypes.c_double(4.0), ctypes.c_double(5.0)
    sim = torch.empty(B, B, dtype=_acc(v.dtype))
    assert lib.dm_fwd(dt, _p(v), _p(e), _p(lens), g1, g2, _p(sim), *sizes) == 0
    gv, ge = torch.empty_like(v), torch.empty_like(e)
    ws = _scratch(lib.dm_ws(dt, *sizes, _SMS))
    args = (_p(grad_s), _p(v), _p(e), _p(lens), g1, g2, _p(gv), _p(ge), _p(ws))
    assert lib.dm_bwd(dt, *args, *sizes, _SMS) == 0
    return [sim, gv, ge]


def _dm_torch(v, e, lens, grad_s):
    sim = damsm_ref.damsm_word_similarity_forward(v, e, lens, 4.0, 5.0)
    return [sim, *damsm_ref.damsm_word_similarity_backward(grad_s, v, e, lens, 4.0, 5.0)]


@needs_nvcc
@pytest.mark.parametrize(
    ("shape", "dtype", "zero_some"),
    [
        ((3, 19, 35, 7), torch.float32, False),
        ((3, 19, 35, 7), torch.bfloat16, True),
        ((3, 19, 35, 7), torch.float16, False),
        ((4, 8, 70, 32), torch.float64, True),  # 32 words, 3 region tiles
        ((3, 300, 33, 5), torch.float64, False),  # D > 256: several features per thread
    ],
)
def test_emulated_damsm(emu, shape, dtype, zero_some):
    B, D, R, T = shape
    v, e = torch.randn(B, D, R).to(dtype), torch.randn(B, D, T).to(dtype)
    lens = torch.randint(1, T + 1, (B,))
    lens[0], lens[-1] = 1, T
    grad_s = torch.randn(B, B, dtype=_acc(dtype))
    if zero_some:  # pairs with a zero upstream gradient are skipped
        grad_s[torch.rand(B, B) < 0.5] = 0.0
    fast = _dm_emu(emu, v, e, lens, grad_s)
    ref = _dm_torch(v, e, lens, grad_s)
    exact = _dm_torch(v.double(), e.double(), lens, grad_s.double())
    for name, f, r, x in zip(("S", "grad_img_local", "grad_words"), fast, ref, exact):
        _check(name, f, r, x, slack_eps=64)


# batch_norm_act ----------------------------------------------------------------------------------


def _placed(values, channels_last, misaligned):
    """values (4-D if channels_last) in that layout, one element into their storage if
    misaligned (the kernels' scalar path)."""
    dense = values.permute(0, 2, 3, 1) if channels_last else values
    flat = torch.empty(dense.numel() + 1, dtype=values.dtype)
    flat = flat[1:] if misaligned else flat[:-1]
    flat.copy_(dense.reshape(-1))
    placed = flat.view(dense.shape)
    return placed.permute(0, 3, 1, 2) if channels_last else placed


def _bn_emu(lib, x, residual, weight, bias, stats, training, mode, grad_y, channels_last):
    channels = x.shape[1]
    M, K = (x.numel() // channels, 1) if channels_last else (x.shape[0], x[0, 0].numel())
    dt, md = _DT[x.dtype], 0 if mode == "glu" else 1
    sizes = [ctypes.c_long(v) for v in (M, channels, K)]
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    y = torch.empty(grad_y.shape, dtype=x.dtype).contiguous(memory_format=fmt)
    acc = _acc(x.dtype)
    if training:
        mean, var = torch.empty(channels, dtype=acc), torch.empty(channels, dtype=acc)
    else:
        mean, var = (t.to(acc).contiguous() for t in stats)
    w = None if weight is None else weight.to(acc)
    b = None if bias is None else bias.to(acc)
    eps = ctypes.c_double(1e-5)
    ws = _scratch(lib.bn_ws(dt, *sizes, md, 0, _SMS))
    args = (_p(x), _p(residual), _p(w), _p(b), _p(mean), _p(var), int(training), eps, _p(y), _p(ws))
    assert lib.bn_fwd(dt, md, *args, *sizes, _SMS) == 0
    gx = torch.empty_like(x)
    gw = None if weight is None else torch.empty(channels, dtype=acc)
    gb = None if bias is None else torch.empty(channels, dtype=acc)
    ws = _scratch(lib.bn_ws(dt, *sizes, md, 1, _SMS))
    args = (_p(grad_y), _p(x), _p(w), _p(b), _p(mean), _p(var), int(training), eps)
    assert lib.bn_bwd(dt, md, *args, _p(gx), _p(gw), _p(gb), _p(ws), *sizes, _SMS) == 0
    return [y, gx] + ([mean, var] if training else []) + [t for t in (gw, gb) if t is not None]


def _bn_torch(x, residual, weight, bias, stats, training, mode, grad_y):
    y, mean, var = bn_ref.batch_norm_act_forward(
        x, residual, weight, bias, *stats, training, 1e-5, mode
    )
    used = (mean, var) if training else stats
    gx, gw, gb = bn_ref.batch_norm_act_backward(
        grad_y, x, weight, bias, *used, training, 1e-5, mode
    )
    return [y, gx] + ([mean, var] if training else []) + [t for t in (gw, gb) if t is not None]


@needs_nvcc
@pytest.mark.parametrize(
    ("shape", "dtype", "channels_last", "misaligned"),
    [
        ((7, 6), torch.float64, False, False),  # BatchNorm1d
        ((3, 6, 11), torch.float32, False, False),
        ((2, 16, 4, 4), torch.float32, False, False),  # 16-byte groups along H*W
        ((2, 16, 4, 4), torch.float16, False, True),  # misaligned: scalar path
        ((3, 16, 5, 7), torch.bfloat16, True, False),  # channels-last, 16-byte groups
        ((3, 6, 5, 7), torch.float64, True, False),  # channels-last, scalar path
    ],
)
@pytest.mark.parametrize("mode", ["glu", "add"])
@pytest.mark.parametrize("training", [True, False])
def test_emulated_batch_norm(emu, shape, dtype, channels_last, misaligned, mode, training):
    channels = shape[1]
    x = _placed((torch.randn(shape) * 2 + 0.5).to(dtype), channels_last, misaligned)
    residual = _placed(torch.randn(shape).to(dtype), channels_last, misaligned)
    residual = residual if mode == "add" else None
    weight, bias = 1 + 0.1 * torch.randn(channels), 0.1 * torch.randn(channels)
    if dtype == torch.float16:  # and without affine parameters
        weight = bias = None
    stats = (torch.randn(channels), torch.rand(channels) + 0.5)
    out_shape = list(shape)
    out_shape[1] //= 2 if mode == "glu" else 1
    grad_y = _placed(torch.randn(out_shape).to(dtype), channels_last, misaligned)
    args = (x, residual, weight, bias, stats, training, mode, grad_y)
    fast = _bn_emu(emu, *args, channels_last)
    ref = _bn_torch(*args)
    wide = [None if a is None else a.double() for a in args[:4]]
    exact = _bn_torch(*wide, tuple(t.double() for t in stats), training, mode, grad_y.double())
    for k, (f, r, e) in enumerate(zip(fast, ref, exact)):
        _check(f"output {k}", f, r, e, slack_eps=64)
