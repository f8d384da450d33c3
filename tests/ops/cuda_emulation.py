"""The cuda backend's kernels (csrc/*.cu) on the CPU, through csrc/host_emulation.cuh, registered
as backend ``cuda_emulated`` of the op registry for the parity suites.

``build(folder)`` translates the kernel files to C++ for the emulation header (a launch
``k<<<grid, block, smem, stream>>>(args)`` becomes ``emu::launch(k, grid, block, smem, stream,
args)``, dynamic shared memory ``emu::dynamic_smem()``, 16-byte vector accesses go through
``emu::aligned``, which aborts on a misaligned address as the GPU would fault), builds them with
g++ (one host thread per CUDA thread, real barriers and warp shuffles) and loads them through
ctypes. ``registered(lib)`` registers, for a block, the launchers wrapped in the kernels'
contract of each op (what ``attngan_fast._C``'s bindings do on a GPU: outputs, scratch, sizes),
so the emulated kernels run through the same custom ops, autograd formulas and checks as the real
ones. This checks indexing, masking, chunking, reductions and synchronisation; speed, races the
emulation's scheduling does not expose and the bindings are left to the ``-m gpu`` tests.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from torch import Tensor

from attngan_fast.ops import batch_norm, registry

NAME = "cuda_emulated"
ROOT = Path(__file__).resolve().parents[2]
CSRC = ROOT / "csrc"
KERNEL_FILES = ("word_attention", "damsm", "batch_norm")
SMS = 3  # a small "GPU": several blocks per sample, split reductions
_DT = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2, torch.float64: 3}

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


def nvcc() -> str | None:
    """nvcc on PATH or in CUDA_HOME / CUDA_PATH (the emulation takes the CUDA headers from it)."""
    cuda_home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    found = shutil.which("nvcc")
    if found is None and cuda_home:
        found = shutil.which("nvcc", path=str(Path(cuda_home) / "bin"))
    return found


def possible() -> bool:
    """Whether the emulation can be built here (nvcc's headers and g++), without building it."""
    return nvcc() is not None and shutil.which("g++") is not None


def translate(text: str) -> str:
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
        [nvcc(), "--dryrun", "-c", str(CSRC / "damsm.cu"), "-o", os.devnull],
        capture_output=True,
        text=True,
    )
    found = re.search(r'INCLUDES="([^"]*)"', dry.stdout + dry.stderr)
    return " ".join(found.group(1).split()) if found else None


class Unavailable(Exception):
    """The emulation cannot be built here (the message says why)."""


def build(work: Path) -> ctypes.CDLL:
    """The kernels built for the host emulation in ``work``, as a ctypes library."""
    if not possible():
        raise Unavailable("the emulation needs nvcc's CUDA headers and g++")
    includes = _cuda_include()
    if includes is None:
        raise Unavailable("could not find the CUDA include directory from nvcc --dryrun")
    for header in ("common.cuh", "kernels.cuh"):
        (work / header).write_text(translate((CSRC / header).read_text()))
    units = []
    for name in KERNEL_FILES:
        (work / f"{name}.cpp").write_text(translate((CSRC / f"{name}.cu").read_text()))
        units.append((f"{name}.cpp", []))
    (work / "shim.cpp").write_text(_SHIM)
    units.append(("shim.cpp", ["-DATTNGAN_EMU_DEFINE_RUNTIME"]))
    base = ["g++", "-std=c++20", "-O1", "-pthread", "-fPIC", "-w"]
    base += ["-include", str(CSRC / "host_emulation.cuh"), f"-I{work}", *includes.split()]

    def compile_unit(unit):
        source, extra = unit
        cmd = [*base, *extra, "-c", source, "-o", source.replace(".cpp", ".o")]
        return subprocess.run(cmd, cwd=work, capture_output=True, text=True)

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        results = list(pool.map(compile_unit, units))
    for (source, _), res in zip(units, results):
        if res.returncode != 0 and "barrier" in res.stderr and "No such file" in res.stderr:
            raise Unavailable("g++ lacks C++20 <barrier>")
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


# --- the kernels' contract around the launchers (as csrc/bindings.cpp does on a GPU) -----------


def _p(t: Tensor | None) -> ctypes.c_void_p:
    return ctypes.c_void_p(0 if t is None else t.data_ptr())


def _longs(*values: int) -> list[ctypes.c_long]:
    return [ctypes.c_long(v) for v in values]


def _acc(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _scratch(nbytes: int) -> Tensor:
    return torch.empty(max(int(nbytes), 1), dtype=torch.uint8)


class Kernels:
    """The emulated launchers of one built library, with the kernels' contract of each op."""

    def __init__(self, lib: ctypes.CDLL):
        self.lib = lib

    def word_attention_forward(self, q, s, mask, need_attn, legacy):
        B, C, N = q.shape
        T = s.shape[2]
        dt, sizes = _DT[q.dtype], _longs(B, C, N, T)
        ctx = torch.empty_like(q)  # q's layout: regions or channels innermost
        attn = torch.empty(B, T, N, dtype=q.dtype) if need_attn else q.new_empty(0)
        lse = torch.empty(B, N, dtype=_acc(q.dtype))
        ws = _scratch(self.lib.wa_fwd_ws(dt, *sizes))
        args = (_p(q), _p(s), _p(mask), int(legacy), _p(ctx), _p(attn if need_attn else None))
        rc = self.lib.wa_fwd(dt, *args, _p(lse), _p(ws), *sizes, *_longs(*q.stride()))
        assert rc == 0, rc
        return ctx, attn, lse

    def word_attention_backward(self, g, ga, q, s, mask, lse, legacy):
        B, C, N = q.shape
        T = s.shape[2]
        assert g.stride() == q.stride()
        dt, sizes = _DT[q.dtype], _longs(B, C, N, T)
        gq, gs = torch.empty_like(q), torch.empty_like(s)
        ws = _scratch(self.lib.wa_bwd_ws(dt, *sizes, SMS))
        args = (_p(g), _p(ga), _p(q), _p(s), _p(mask), int(legacy), _p(lse), _p(gq), _p(gs))
        rc = self.lib.wa_bwd(dt, *args, _p(ws), *sizes, *_longs(*q.stride()), SMS)
        assert rc == 0, rc
        return gq, gs

    def damsm_forward(self, v, e, lens, gamma1, gamma2):
        B, D, R = v.shape
        dt, sizes = _DT[v.dtype], _longs(B, D, R, e.shape[2])
        sim = torch.empty(B, B, dtype=_acc(v.dtype))
        gammas = (ctypes.c_double(gamma1), ctypes.c_double(gamma2))
        assert self.lib.dm_fwd(dt, _p(v), _p(e), _p(lens), *gammas, _p(sim), *sizes) == 0
        return sim

    def damsm_backward(self, grad_s, v, e, lens, gamma1, gamma2):
        B, D, R = v.shape
        dt, sizes = _DT[v.dtype], _longs(B, D, R, e.shape[2])
        gv, ge = torch.empty_like(v), torch.empty_like(e)
        ws = _scratch(self.lib.dm_ws(dt, *sizes, SMS))
        gammas = (ctypes.c_double(gamma1), ctypes.c_double(gamma2))
        args = (_p(grad_s.contiguous()), _p(v), _p(e), _p(lens), *gammas, _p(gv), _p(ge), _p(ws))
        assert self.lib.dm_bwd(dt, *args, *sizes, SMS) == 0
        return gv, ge

    @staticmethod
    def _bn_sizes(x: Tensor) -> tuple[list[ctypes.c_long], torch.memory_format]:
        """outer x C x inner, as bindings.cpp sees x (NCHW-contiguous or channels-last)."""
        c = x.shape[1]
        if x.is_contiguous():
            return _longs(x.shape[0], c, x.numel() // (x.shape[0] * c)), torch.contiguous_format
        return _longs(x.numel() // c, c, 1), torch.channels_last

    def batch_norm_forward(self, x, residual, weight, bias, rm, rv, training, eps, mode):
        sizes, fmt = self._bn_sizes(x)
        dt, md, acc = _DT[x.dtype], 0 if mode == "glu" else 1, _acc(x.dtype)
        shape = list(x.shape)
        shape[1] //= 2 if mode == "glu" else 1
        y = torch.empty(shape, dtype=x.dtype).contiguous(memory_format=fmt)
        if training:
            mean, var = torch.empty(x.shape[1], dtype=acc), torch.empty(x.shape[1], dtype=acc)
        else:
            mean, var = rm.to(acc).contiguous(), rv.to(acc).contiguous()
        w, b = (None if t is None else t.to(acc).contiguous() for t in (weight, bias))
        if residual is not None:
            residual = residual.contiguous(memory_format=fmt)
        ws = _scratch(self.lib.bn_ws(dt, *sizes, md, 0, SMS))
        args = (_p(x), _p(residual), _p(w), _p(b), _p(mean), _p(var), int(training))
        rc = self.lib.bn_fwd(dt, md, *args, ctypes.c_double(eps), _p(y), _p(ws), *sizes, SMS)
        assert rc == 0, rc
        if not training:
            mean, var = torch.empty(0, dtype=acc), torch.empty(0, dtype=acc)
        return y, mean, var

    def batch_norm_backward(self, grad_y, x, weight, bias, mean, var, training, eps, mode):
        sizes, fmt = self._bn_sizes(x)
        dt, md, acc = _DT[x.dtype], 0 if mode == "glu" else 1, _acc(x.dtype)
        grad_y = grad_y.contiguous(memory_format=fmt)
        w, b = (None if t is None else t.to(acc).contiguous() for t in (weight, bias))
        mean, var = mean.to(acc).contiguous(), var.to(acc).contiguous()
        gx = torch.empty(x.shape, dtype=x.dtype).contiguous(memory_format=fmt)
        gw = None if weight is None else torch.empty(x.shape[1], dtype=acc)
        gb = None if bias is None else torch.empty(x.shape[1], dtype=acc)
        ws = _scratch(self.lib.bn_ws(dt, *sizes, md, 1, SMS))
        args = (_p(grad_y), _p(x), _p(w), _p(b), _p(mean), _p(var), int(training))
        rest = (_p(gx), _p(gw), _p(gb), _p(ws), *sizes, SMS)
        assert self.lib.bn_bwd(dt, md, *args, ctypes.c_double(eps), *rest) == 0
        return (
            gx,
            None if gw is None else gw.to(weight.dtype),
            None if gb is None else gb.to(bias.dtype),
        )


def on_the_cpu(call: registry.Call) -> str | None:
    """The emulation runs the kernels on CPU tensors only."""
    return None if call.device.type == "cpu" else "the emulated kernels take CPU tensors"


def damsm_supports(call: registry.Call) -> str | None:
    """As the cuda backend: captions of at most 32 words."""
    words = call.shape("words")
    if words is not None and words[2] > 32:
        return f"its DAMSM kernel takes at most 32 words a caption (T = {words[2]})"
    return on_the_cpu(call)


@contextlib.contextmanager
def registered(lib: ctypes.CDLL) -> Iterator[None]:
    """Backend ``cuda_emulated`` (chosen only by name) for the block."""
    k = Kernels(lib)
    with (
        registry.registered(
            "word_attention", NAME, supports=on_the_cpu,
            forward=k.word_attention_forward, backward=k.word_attention_backward,
        ),
        registry.registered(
            "damsm_word_similarity", NAME, supports=damsm_supports,
            forward=k.damsm_forward, backward=k.damsm_backward,
        ),
        registry.registered(
            batch_norm.OP, NAME, supports=on_the_cpu, forward=k.batch_norm_forward,
            backward=batch_norm.backward_without_none(k.batch_norm_backward),
        ),
    ):  # fmt: skip
        yield
