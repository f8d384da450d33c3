"""Op microbenchmarks: every op, every implementation, forward / backward / both, fp32 / bf16.

Implementations ("backends" in the rows) of each op at each shape, timed on the same inputs:

* ``eager``    -- the op on its ``reference`` backend: the ``*_reference`` function in plain
  PyTorch, differentiated by autograd (what a user writes without this library; the speed-up
  baseline);
* ``compiled`` -- ``torch.compile`` of that same call, compiled once per shape and dtype
  (``dynamic=False``; compile time reported in ``compile_s``);
* ``original`` -- DAMSM only: the original per-caption loop (``ops.original.words_loss`` +
  ``sent_loss``);
* ``torch`` / ``triton`` / ``cuda`` / ... -- the library's op with that backend
  (``available_backends`` decides which exist on the device);
* ``triton_unfused`` -- ``up_block`` only: ``upsample_conv3x3`` then ``batch_norm_glu``, both
  on the triton backend (BatchNorm's own statistics pass), against which ``triton`` (statistics
  from the conv epilogue) shows what the fusion saves.

The blocks (``up_block``, ``res_block``) run exactly as G runs them: ``up_block`` is
``ops.upsample_conv3x3_bn_glu``; ``res_block`` is cuDNN's conv3x3 with ``ops.batch_norm_glu`` and
``ops.batch_norm_add``.

Passes: ``fwd`` (a training forward, inputs requiring grad), ``bwd`` (the backward alone; the
forward runs before each timed run, outside the events) and ``fwd+bwd``. Gradients are taken
with ``torch.autograd.grad`` (no accumulation into ``.grad``) against random upstream gradients.
Image ops run on channels-last inputs (the library's fast layout) unless told otherwise.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from attngan_fast import ops
from attngan_fast.bench.roofline import Ceilings, op_cost, roofline_metrics
from attngan_fast.bench.shapes import OpShape
from attngan_fast.bench.timing import (
    cache_bytes,
    measure,
    n_input_sets,
    peak_memory_mb,
    tensor_bytes,
)
from attngan_fast.ops import original

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
PASSES = ("fwd", "bwd", "fwd+bwd")
BASELINES = ("eager", "compiled")
REFERENCE = "reference"  # the backend the baselines run (so not a row of its own)
GAMMAS = (4.0, 5.0, 10.0)  # GAMMA1, GAMMA2, GAMMA3 of both configs
BN_MOMENTUM, BN_EPS = 0.1, 1e-5
# internal op name of each public op (for ``available_backends``)
INTERNAL_OP = {
    "word_attention": "word_attention",
    "damsm_loss": "damsm_word_similarity",
    "upsample_conv3x3": "upsample_conv3x3",
    "batch_norm_glu": "batch_norm_act",
    "batch_norm_add": "batch_norm_act",
    "up_block": "upsample_conv3x3_bn_glu",
    "res_block": "batch_norm_act",
}
UNFUSED = "triton_unfused"


@dataclass
class Case:
    """One input set: ``args`` for the op's function, the tensors to differentiate, and the
    upstream gradient of each output (None for a scalar loss)."""

    args: tuple
    diff: list[Tensor]
    grads: list[Tensor | None]


def _randn(shape: Sequence[int], dtype: torch.dtype, device: torch.device, g: torch.Generator):
    return torch.randn(*shape, generator=g, device=device, dtype=torch.float32).to(dtype)


def _image(t: Tensor, channels_last: bool) -> Tensor:
    return t.contiguous(memory_format=torch.channels_last) if channels_last else t


def make_case(
    shape: OpShape,
    dtype: torch.dtype,
    device: torch.device,
    g: torch.Generator,
    channels_last: bool = True,
) -> Case:
    """Fresh random inputs (never zeros) for one run of ``shape.op``."""
    d = shape.dims
    r = lambda *s, dt=dtype: _randn(s, dt, device, g)  # noqa: E731
    if shape.op == "word_attention":
        b, c, n, t = d["B"], d["C"], d["H"] * d["W"], d["T"]
        lens = torch.randint(1, t + 1, (b,), generator=g, device=device)
        lens[0] = t
        mask = torch.arange(t, device=device)[None, :] >= lens[:, None]
        q, s = r(b, c, n).requires_grad_(), (r(b, c, t) * 0.3).requires_grad_()
        return Case((q, s, mask), [q, s], [r(b, c, n)])
    if shape.op == "damsm_loss":
        b, dim, t = d["B"], d["D"], d["T"]
        lens = torch.randint(1, t + 1, (b,), generator=g, device=device)
        lens[0] = t
        classes = (
            torch.randint(0, max(2, b // 2), (b,), generator=g, device=device)
            if d.get("classes")
            else None
        )
        tensors = [r(b, dim, d["H"], d["W"]), r(b, dim), r(b, dim, t), r(b, dim)]
        tensors = [x.requires_grad_() for x in tensors]
        return Case((*tensors, lens, classes), tensors, [None])
    if shape.op == "upsample_conv3x3":
        x = _image(r(d["B"], d["Cin"], d["H"], d["W"]), channels_last).requires_grad_()
        w = (r(d["Cout"], d["Cin"], 3, 3) * (d["Cin"] * 9) ** -0.5).requires_grad_()
        grad = _image(r(d["B"], d["Cout"], 2 * d["H"], 2 * d["W"]), channels_last)
        return Case((x, w), [x, w], [grad])
    if shape.op in ("batch_norm_glu", "batch_norm_add"):
        spatial = (d["H"], d["W"]) if "H" in d else ()
        c = d["C"]
        x = _image(r(d["B"], c, *spatial) * 2 + 0.5, channels_last and bool(spatial))
        x.requires_grad_()
        f32 = torch.float32
        weight = (1 + 0.02 * r(c, dt=f32)).requires_grad_()
        bias = (0.1 * r(c, dt=f32)).requires_grad_()
        running = (torch.zeros(c, device=device), torch.ones(c, device=device))
        out_c = c // 2 if shape.op == "batch_norm_glu" else c
        grad = _image(r(d["B"], out_c, *spatial), channels_last and bool(spatial))
        if shape.op == "batch_norm_glu":
            return Case((x, weight, bias, *running), [x, weight, bias], [grad])
        res = _image(r(d["B"], c, *spatial), channels_last and bool(spatial)).requires_grad_()
        return Case((x, res, weight, bias, *running), [x, res, weight, bias], [grad])
    if shape.op == "up_block":
        x = _image(r(d["B"], d["Cin"], d["H"], d["W"]), channels_last).requires_grad_()
        conv = (r(d["Cout"], d["Cin"], 3, 3) * (d["Cin"] * 9) ** -0.5).requires_grad_()
        bn = _bn_params(d["Cout"], r, device)
        grad = _image(r(d["B"], d["Cout"] // 2, 2 * d["H"], 2 * d["W"]), channels_last)
        return Case((x, conv, *bn), [x, conv, *bn[:2]], [grad])
    if shape.op == "res_block":
        c, side = d["C"], (d["H"], d["W"])
        x = _image(r(d["B"], c, *side), channels_last).requires_grad_()
        conv1 = (r(2 * c, c, 3, 3) * (c * 9) ** -0.5).requires_grad_()
        conv2 = (r(c, c, 3, 3) * (c * 9) ** -0.5).requires_grad_()
        bn1, bn2 = _bn_params(2 * c, r, device), _bn_params(c, r, device)
        grad = _image(r(d["B"], c, *side), channels_last)
        diff = [x, conv1, *bn1[:2], conv2, *bn2[:2]]
        return Case((x, conv1, *bn1, conv2, *bn2), diff, [grad])
    raise ValueError(f"unknown op {shape.op!r}")


def _bn_params(c: int, r: Callable, device: torch.device) -> list[Tensor]:
    """weight, bias (float32, requiring grad), running_mean, running_var of a C-channel BN."""
    weight = (1 + 0.02 * r(c, dt=torch.float32)).requires_grad_()
    bias = (0.1 * r(c, dt=torch.float32)).requires_grad_()
    return [weight, bias, torch.zeros(c, device=device), torch.ones(c, device=device)]


# --- the functions timed: each returns a tuple of output tensors --------------------------------


def _total(loss: ops.DamsmLoss) -> tuple[Tensor]:
    return (loss.w_loss0 + loss.w_loss1 + loss.s_loss0 + loss.s_loss1,)


def res_block(x, conv1, w1, b1, rm1, rv1, conv2, w2, b2, rm2, rv2, backend: str):
    """G's ResBlock: conv3x3 -> BN + GLU -> conv3x3 -> BN + x, the BatchNorm ops on ``backend``
    (the convs are cuDNN's either way)."""
    h = F.conv2d(x, conv1, padding=1)
    h = ops.batch_norm_glu(h, w1, b1, rm1, rv1, True, BN_MOMENTUM, BN_EPS, backend=backend)
    h = F.conv2d(h, conv2, padding=1)
    return ops.batch_norm_add(h, x, w2, b2, rm2, rv2, True, BN_MOMENTUM, BN_EPS, backend=backend)


def _up_block_unfused(x, conv, w, b, rm, rv):
    """up_block as two triton ops, BatchNorm computing its own statistics (the baseline of the
    epilogue statistics)."""
    y = ops.upsample_conv3x3(x, conv, backend="triton")
    return ops.batch_norm_glu(y, w, b, rm, rv, True, BN_MOMENTUM, BN_EPS, backend="triton")


def _original_damsm(img_local, img_global, words, sent, cap_lens, class_ids):
    g1, g2, g3 = GAMMAS
    batch = img_local.shape[0]
    labels = torch.arange(batch, device=img_local.device)
    w0, w1, _, _ = original.words_loss(
        img_local, words, labels, cap_lens, class_ids, batch, g1, g2, g3
    )
    s0, s1 = original.sent_loss(img_global, sent, labels, class_ids, batch, g3)
    return (w0 + w1 + s0 + s1,)


def _library(op: str, backend: str) -> Callable[..., tuple[Tensor, ...]]:
    """The library's public op with ``backend``."""
    if op == "word_attention":
        return lambda q, s, m: (ops.word_attention(q, s, m, need_attn=False, backend=backend)[0],)
    if op == "damsm_loss":
        return lambda *a: _total(ops.damsm_loss(*a, *GAMMAS, backend=backend))
    if op == "upsample_conv3x3":
        return lambda x, w: (ops.upsample_conv3x3(x, w, backend=backend),)
    if op == "batch_norm_glu":
        return lambda x, w, b, rm, rv: (
            ops.batch_norm_glu(x, w, b, rm, rv, True, BN_MOMENTUM, BN_EPS, backend=backend),
        )
    if op == "batch_norm_add":
        return lambda x, res, w, b, rm, rv: (
            ops.batch_norm_add(x, res, w, b, rm, rv, True, BN_MOMENTUM, BN_EPS, backend=backend),
        )
    if op == "up_block" and backend == UNFUSED:
        return lambda *a: (_up_block_unfused(*a),)
    if op == "up_block":
        return lambda x, conv, w, b, rm, rv: (
            ops.upsample_conv3x3_bn_glu(
                x, conv, w, b, rm, rv, True, BN_MOMENTUM, BN_EPS, backend=backend
            ),
        )
    if op == "res_block":
        return lambda *a: (res_block(*a, backend=backend),)
    raise ValueError(f"unknown op {op!r}")


def implementations(op: str, device: torch.device) -> list[str]:
    """Names of everything timed for ``op`` on ``device``, baselines first."""
    names = list(BASELINES)
    if op == "damsm_loss":
        names.append("original")
    backends = [b for b in ops.available_backends(INTERNAL_OP[op], device) if b != REFERENCE]
    if op == "up_block" and "triton" in backends:
        backends.append(UNFUSED)
    return names + backends


def implementation(op: str, name: str, compile_backend: str = "inductor") -> Callable:
    """The callable timed as ``name`` (a fresh compiled one for ``compiled``)."""
    if name == "eager":
        return _library(op, REFERENCE)
    if name == "compiled":
        torch._dynamo.reset()  # compiled once per shape: no stale graphs, no recompile limit
        return torch.compile(_library(op, REFERENCE), backend=compile_backend, dynamic=False)
    if name == "original":
        if op != "damsm_loss":
            raise ValueError("only damsm_loss has an original-loop implementation")
        return _original_damsm
    return _library(op, name)


# --- timing one implementation ------------------------------------------------------------------


def pass_callables(fn: Callable, pass_: str) -> tuple[Callable, Callable | None]:
    """(run, prepare) for ``measure``: what is timed, and what runs untimed before it."""

    def grads(outs: tuple[Tensor, ...], case: Case):
        return torch.autograd.grad(outs, case.diff, case.grads)

    if pass_ == "fwd":
        return (lambda c: fn(*c.args)), None
    if pass_ == "fwd+bwd":
        return (lambda c: grads(fn(*c.args), c)), None
    if pass_ == "bwd":
        return (lambda st: grads(*st)), (lambda c: (fn(*c.args), c))
    raise ValueError(f"pass must be one of {PASSES}, got {pass_!r}")


@dataclass
class TimingConfig:
    """Knobs of the op timings (defaults for a GPU; ``smoke`` ones for the CPU mode)."""

    warmup: int = 3
    min_reps: int = 10
    max_reps: int = 100
    target_ms: float = 100.0
    cuda_graph: bool = False
    compile_backend: str = "inductor"
    channels_last: bool = True
    max_sets: int = 64

    @classmethod
    def smoke(cls) -> TimingConfig:
        return cls(warmup=1, min_reps=2, max_reps=2, target_ms=0.0, compile_backend="aot_eager")


def _base_row(shape: OpShape, name: str, dtype_name: str, pass_: str, tc: TimingConfig) -> dict:
    return {
        "op": shape.op,
        "shape": shape.label,
        "config": shape.config,
        "tier": shape.tier,
        "dims": dict(shape.dims),
        "backend": name,
        "dtype": dtype_name,
        "pass": pass_,
        "layout": "channels_last" if tc.channels_last else "contiguous",
    }


def bench_shape(
    shape: OpShape,
    dtype_name: str,
    device: torch.device,
    ceilings: Ceilings,
    tc: TimingConfig,
    names: Sequence[str] | None = None,
    passes: Sequence[str] = PASSES,
    seed: int = 0,
) -> list[dict]:
    """Rows for every implementation and pass of one (shape, dtype), with speed-ups filled in."""
    dtype = DTYPES[dtype_name]
    names = list(names) if names is not None else implementations(shape.op, device)
    g = torch.Generator(device=device).manual_seed(seed)
    first = make_case(shape, dtype, device, g, tc.channels_last)
    n_sets = (
        1
        if tc.max_sets <= 1
        else n_input_sets(tensor_bytes([first.args, first.grads]), cache_bytes(device), tc.max_sets)
    )
    cases = [first] + [
        make_case(shape, dtype, device, g, tc.channels_last) for _ in range(n_sets - 1)
    ]
    rows = []
    for name in names:
        rows += _bench_impl(shape, name, dtype_name, device, cases, ceilings, tc, passes)
    add_speedups(rows)
    return rows


def _bench_impl(shape, name, dtype_name, device, cases, ceilings, tc, passes) -> list[dict]:
    dtype = DTYPES[dtype_name]
    rows = []
    try:
        fn = implementation(shape.op, name, tc.compile_backend)
        compile_s = None
        if name == "compiled":  # compile the training graph (forward and backward) once
            t0 = time.perf_counter()
            pass_callables(fn, "fwd+bwd")[0](cases[0])
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            compile_s = time.perf_counter() - t0
    except Exception as exc:  # a backend that cannot run this case: say why, go on
        return [
            {**_base_row(shape, name, dtype_name, p, tc), "status": f"error: {_short(exc)}"}
            for p in passes
        ]
    for pass_ in passes:
        row = _base_row(shape, name, dtype_name, pass_, tc)
        if compile_s is not None:
            row["compile_s"] = compile_s
        try:
            run, prepare = pass_callables(fn, pass_)
            graph = tc.cuda_graph and prepare is None and device.type == "cuda"
            t = measure(
                run,
                cases,
                device=device,
                prepare=prepare,
                warmup=tc.warmup,
                min_reps=tc.min_reps,
                max_reps=tc.max_reps,
                target_ms=tc.target_ms,
                cuda_graph=graph,
            )
            row.update(t.to_dict())
            row["peak_mb"] = peak_memory_mb(run, cases[0], device=device, prepare=prepare)
            row.update(roofline_metrics(op_cost(shape, dtype, pass_), t.median_ms, dtype, ceilings))
            row["status"] = "ok"
        except Exception as exc:
            row["status"] = f"error: {_short(exc)}"
            if device.type == "cuda":
                torch.cuda.empty_cache()
        rows.append(row)
    return rows


def _short(exc: BaseException, limit: int = 300) -> str:
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def add_speedups(rows: list[dict]) -> None:
    """``speedup_vs_eager`` / ``speedup_vs_compiled``: baseline median over the row's median,
    matching op, shape, dtype and pass within the same run."""
    key = lambda r: (r["op"], r["shape"], r["dtype"], r["pass"])  # noqa: E731
    base: dict[tuple, dict[str, float]] = {}
    for r in rows:
        if r.get("status") == "ok" and r["backend"] in BASELINES:
            base.setdefault(key(r), {})[r["backend"]] = r["median_ms"]
    for r in rows:
        if r.get("status") != "ok":
            continue
        for b in BASELINES:
            ref = base.get(key(r), {}).get(b)
            r[f"speedup_vs_{b}"] = ref / r["median_ms"] if ref else None


def run_op_benchmarks(
    shapes: Sequence[OpShape],
    dtypes: Sequence[str],
    device: torch.device | str,
    ceilings: Ceilings,
    tc: TimingConfig | None = None,
    passes: Sequence[str] = PASSES,
    deadline: float | None = None,
    log: Callable[[str], None] = print,
    checkpoint: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Rows for every shape x dtype (in order) until ``deadline`` (a ``time.monotonic()`` value).

    Returns ``{"rows": [...], "skipped": ["op shape dtype", ...]}``; what the deadline cut is
    listed. ``checkpoint`` gets the partial result after every shape x dtype (to save it).
    """
    device = torch.device(device)
    tc = tc or TimingConfig()
    out: dict[str, Any] = {"rows": [], "skipped": []}
    for shape, dtype_name in run_order(shapes, dtypes):
        if deadline is not None and time.monotonic() > deadline:
            out["skipped"].append(f"{shape.op} {shape.label} {dtype_name}")
            continue
        t0 = time.perf_counter()
        got = bench_shape(shape, dtype_name, device, ceilings, tc, passes=passes)
        out["rows"] += got
        log(_progress(shape, dtype_name, got, time.perf_counter() - t0))
        if checkpoint is not None:
            checkpoint(out)
    return out


def run_order(shapes: Sequence[OpShape], dtypes: Sequence[str]) -> list[tuple[OpShape, str]]:
    """(shape, dtype) pairs by tier first, then dtype (in the order given), then shape order:
    all core shapes in the first dtype, then in the second, then the extra shapes."""
    pairs = [(s, d) for s in shapes for d in dtypes]
    tiers = ("tiny", "core", "extra")
    return sorted(pairs, key=lambda p: (tiers.index(p[0].tier), list(dtypes).index(p[1])))


def _progress(shape: OpShape, dtype_name: str, rows: list[dict], seconds: float) -> str:
    parts = []
    for r in rows:
        if r["pass"] == "fwd+bwd":
            ms = f"{r['median_ms']:.3f}" if r.get("status") == "ok" else "err"
            parts.append(f"{r['backend']}={ms}")
    head = f"[ops] {shape.op:16s} {shape.label:22s} {dtype_name}"
    return f"{head} fwd+bwd ms: {' '.join(parts)} ({seconds:.1f}s)"
