"""The roofline: the card's measured ceilings, and each op's analytic FLOPs and minimal bytes.

Ceilings are measured in the same run as the ops (METHOD.md, "two numbers first"):

* memory bandwidth: a large device-to-device copy, counting bytes read plus bytes written;
* matrix peak: a large matrix product in bf16, in fp32 with TF32 allowed, and in strict fp32.

Per op and pass (``fwd``, ``bwd``, ``fwd+bwd``), ``op_cost`` gives

* FLOPs: 2 x the multiply-adds of the op's contractions, counted for the cheapest exact algorithm
  (word attention and DAMSM recompute their scores in backward, as the fused kernels do; the
  upsample-conv counts the four 2x2 phase convolutions, 16 taps instead of 36 per input pixel).
  The elementwise-only ops (BatchNorm + GLU / + residual) get a per-element estimate; they are
  memory bound by far, so it never sets their floor. A block (``up_block``, ``res_block``) costs
  the sum of its ops.
* minimal bytes: each input read once, each output written once (the pass's own inputs: the
  backward reads the forward's inputs again and the upstream gradient).

The floor of a run is max(bytes / bandwidth, FLOPs / matrix peak); the fraction of the roofline is
floor / measured time. fp32 ops use the TF32 peak (what the matrix units give fp32 inputs),
bf16/fp16 ops the bf16 peak.

``flop_counter_mapping`` hands the same counts (in the model's own formulation) to
``torch.utils.flop_counter.FlopCounterMode`` for the library's registered ops, which the counter
cannot see inside.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from attngan_fast.bench.shapes import OpShape
from attngan_fast.bench.timing import measure

PASSES = ("fwd", "bwd", "fwd+bwd")


@dataclass
class Ceilings:
    """Measured ceilings of one device: GB/s (read + written) and matrix TFLOP/s per precision."""

    device: str
    hbm_gbps: float
    matmul_tflops: dict[str, float] = field(default_factory=dict)
    copy_bytes: int = 0
    matmul_size: int = 0

    def peak_tflops(self, dtype: torch.dtype) -> float:
        """The matrix peak that applies to an op computing in ``dtype``."""
        if dtype in (torch.bfloat16, torch.float16):
            return self.matmul_tflops["bf16"]
        if dtype == torch.float64:
            return self.matmul_tflops["fp32"]
        return self.matmul_tflops["tf32"]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _matmul_tflops(n: int, dtype: torch.dtype, device: torch.device, tf32: bool) -> float:
    gen = torch.Generator(device=device).manual_seed(0)
    sets = [
        (
            torch.randn(n, n, device=device, dtype=dtype, generator=gen),
            torch.randn(n, n, device=device, dtype=dtype, generator=gen),
        )
        for _ in range(2)
    ]
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    try:
        t = measure(
            lambda ab: torch.mm(*ab), sets, device=device, warmup=3, min_reps=5, max_reps=30
        )
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous
    return 2 * n**3 / (t.median_ms * 1e-3) / 1e12


def measure_ceilings(device: torch.device | str, small: bool = False) -> Ceilings:
    """Measure bandwidth and matrix peaks on ``device`` (``small``: quick sizes, for CPU smoke).

    GPU: a 1 GiB copy and 8192^3 products; small: a 32 MiB copy and 256^3 products.
    """
    device = torch.device(device)
    n_bytes = (32 if small else 1024) * 2**20
    size = 256 if small else 8192
    src = torch.randint(0, 255, (n_bytes,), dtype=torch.uint8, device=device)
    pair = [(torch.empty_like(src), src)]
    t = measure(lambda p: p[0].copy_(p[1]), pair, device=device, warmup=3, min_reps=10, max_reps=50)
    gbps = 2 * n_bytes / (t.median_ms * 1e-3) / 1e9
    del src, pair
    peaks = {
        "bf16": _matmul_tflops(size, torch.bfloat16, device, tf32=False),
        "tf32": _matmul_tflops(size, torch.float32, device, tf32=True),
        "fp32": _matmul_tflops(size, torch.float32, device, tf32=False),
    }
    return Ceilings(str(device), gbps, peaks, copy_bytes=2 * n_bytes, matmul_size=size)


@dataclass(frozen=True)
class Cost:
    """Analytic FLOPs and minimal bytes of one pass."""

    flops: float
    bytes: float

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.flops + other.flops, self.bytes + other.bytes)


def _word_attention(d: dict[str, int], es: int) -> tuple[Cost, Cost]:
    b, c, n, t = d["B"], d["C"], d["H"] * d["W"], d["T"]
    mm = 2 * b * n * t * c  # one B x N x T x C contraction
    q, s, mask = b * c * n, b * c * t, b * t
    fwd = Cost(2 * mm, es * (q + s + q) + mask)  # scores, context; read q, s, mask; write context
    # backward: recompute scores, dP, grad_query, grad_source (two terms)
    bwd = Cost(5 * mm, es * (q + q + s + q + s) + mask)
    return fwd, bwd


def _damsm(d: dict[str, int], es: int) -> tuple[Cost, Cost]:
    b, dim, r, t = d["B"], d["D"], d["H"] * d["W"], d["T"]
    mm = 2 * b * b * r * t * dim  # every caption x image pair, R x T x D
    ints = 8 * b * (1 + d.get("classes", 0))  # cap_lens (+ class_ids)
    floats = b * dim * r + b * dim * t + 2 * b * dim  # img_local, words, img_global, sent
    fwd = Cost(2 * mm, es * floats + ints + 4 * 4)  # four float32 losses
    # backward: recompute s and c_k, then d_alpha, two grad_v terms, grad_words
    bwd = Cost(6 * mm, 2 * es * floats + ints)
    return fwd, bwd


def _upsample_conv(d: dict[str, int], es: int) -> tuple[Cost, Cost]:
    b, ci, co, hw = d["B"], d["Cin"], d["Cout"], d["H"] * d["W"]
    mm = 2 * b * co * (4 * hw) * (4 * ci)  # four phases of 2x2 taps at the output resolution
    x, w, y = b * ci * hw, co * ci * 9, b * co * 4 * hw
    return Cost(mm, es * (x + w + y)), Cost(2 * mm, es * (y + x + w + x + w))


def _batch_norm(d: dict[str, int], es: int, glu: bool) -> tuple[Cost, Cost]:
    m = d["B"] * d["C"] * d.get("H", 1) * d.get("W", 1)
    params = 4 * d["C"]  # one float32 per channel
    y = m // 2 if glu else m
    extra = 0 if glu else m  # the residual
    fwd = Cost((7 if glu else 6) * m, es * (m + extra + y) + 6 * params)
    bwd = Cost((12 if glu else 8) * m, es * (y + m + m) + 5 * params)
    return fwd, bwd


def _conv3x3(b: int, ci: int, co: int, hw: int, es: int) -> tuple[Cost, Cost]:
    mm = 2 * b * co * hw * ci * 9
    x, w, y = b * ci * hw, co * ci * 9, b * co * hw
    return Cost(mm, es * (x + w + y)), Cost(2 * mm, es * (y + x + w + x + w))


def _blocks(shape: OpShape, es: int) -> tuple[Cost, Cost]:
    """A block's cost is the sum of its ops' minimal costs: each intermediate written once and
    read once, as the fused path does (the conv outputs are kept for the backward)."""
    d = shape.dims
    parts: list[tuple[Cost, Cost]]
    if shape.op == "up_block":
        out = {"B": d["B"], "C": d["Cout"], "H": 2 * d["H"], "W": 2 * d["W"]}
        parts = [_upsample_conv(d, es), _batch_norm(out, es, glu=True)]
    else:  # res_block
        b, c, hw = d["B"], d["C"], d["H"] * d["W"]
        parts = [
            _conv3x3(b, c, 2 * c, hw, es),
            _batch_norm({**d, "C": 2 * c}, es, glu=True),
            _conv3x3(b, c, c, hw, es),
            _batch_norm(d, es, glu=False),
        ]
    fwd, bwd = parts[0]
    for f, g in parts[1:]:
        fwd, bwd = fwd + f, bwd + g
    return fwd, bwd


def op_cost(shape: OpShape, dtype: torch.dtype, pass_: str) -> Cost:
    """FLOPs and minimal bytes of one pass (``fwd``, ``bwd``, ``fwd+bwd``) of the op at a shape."""
    es = torch.empty(0, dtype=dtype).element_size()
    d = shape.dims
    if shape.op == "word_attention":
        fwd, bwd = _word_attention(d, es)
    elif shape.op == "damsm_loss":
        fwd, bwd = _damsm(d, es)
    elif shape.op == "upsample_conv3x3":
        fwd, bwd = _upsample_conv(d, es)
    elif shape.op in ("batch_norm_glu", "batch_norm_add"):
        fwd, bwd = _batch_norm(d, es, glu=shape.op == "batch_norm_glu")
    elif shape.op in ("up_block", "res_block"):
        fwd, bwd = _blocks(shape, es)
    else:
        raise ValueError(f"no cost model for op {shape.op!r}")
    if pass_ == "fwd":
        return fwd
    if pass_ == "bwd":
        return bwd
    if pass_ == "fwd+bwd":
        return fwd + bwd
    raise ValueError(f"pass must be one of {PASSES}, got {pass_!r}")


def roofline_metrics(cost: Cost, ms: float, dtype: torch.dtype, ceilings: Ceilings) -> dict:
    """Achieved GB/s and TFLOP/s, the floor time, what bounds it, and the fraction reached."""
    seconds = ms * 1e-3
    t_mem = cost.bytes / (ceilings.hbm_gbps * 1e9)
    t_math = cost.flops / (ceilings.peak_tflops(dtype) * 1e12)
    floor = max(t_mem, t_math)
    return {
        "gbps": cost.bytes / seconds / 1e9,
        "tflops": cost.flops / seconds / 1e12,
        "floor_ms": floor * 1e3,
        "bound": "memory" if t_mem >= t_math else "compute",
        "roofline_frac": floor / seconds,
    }


# --- model FLOPs of the registered ops, for FlopCounterMode -------------------------------------


def _raw(fn):
    fn._get_raw = True  # FlopCounterMode passes the real arguments (cap_lens values are needed)
    return fn


@_raw
def _wa_fwd(query, source, *args, out_val=None, **kwargs) -> int:
    b, c, n = query.shape
    return 4 * b * n * source.shape[2] * c  # the two batched products of the model


@_raw
def _wa_bwd(grad_context, grad_attn, query, source, *args, out_val=None, **kwargs) -> int:
    return 2 * _wa_fwd(query, source)  # autograd of the two products: two products each


@_raw
def _damsm_fwd(img_local, words, cap_lens, *args, out_val=None, **kwargs) -> int:
    b, dim, r = img_local.shape
    return 4 * b * r * dim * int(cap_lens.sum())  # every image against every caption's words


@_raw
def _damsm_bwd(grad_s, img_local, words, cap_lens, *args, out_val=None, **kwargs) -> int:
    return 2 * _damsm_fwd(img_local, words, cap_lens)


@_raw
def _upconv_fwd(x, weight, *args, out_val=None, **kwargs) -> int:
    b, ci, h, w = x.shape
    return 2 * b * weight.shape[0] * ci * 9 * (2 * h) * (2 * w)  # the model's conv on 2H x 2W


@_raw
def _upconv_bwd(grad_y, x, weight, need_x, need_weight, *args, out_val=None, **kwargs) -> int:
    return _upconv_fwd(x, weight) * (int(need_x) + int(need_weight))


def flop_counter_mapping() -> dict:
    """``custom_mapping`` for ``FlopCounterMode``: the model FLOPs of the library's custom ops.

    Counts what the model's own formulation costs (the dense conv on the upsampled tensor, the
    per-caption products of the original DAMSM), so a run through the fused ops and one through
    plain PyTorch report the same model FLOPs. BatchNorm ops count 0, like aten's batch norm.
    """
    from attngan_fast.ops import registry

    counts = {
        "word_attention": (_wa_fwd, _wa_bwd),
        "damsm_word_similarity": (_damsm_fwd, _damsm_bwd),
        "upsample_conv3x3": (_upconv_fwd, _upconv_bwd),
        "upsample_conv3x3_bn_glu": (_upconv_fwd, None),  # its backward runs the conv's
    }
    mapping = {}
    for op, (forward, backward) in counts.items():
        for impl in registry.implementations(op):  # the custom ops of every kernel backend
            if impl.forward_op is not None:
                mapping[registry.custom_op(op, impl.backend)] = forward
            if impl.backward_op is not None and backward is not None:
                mapping[registry.custom_op(op, impl.backend, backward=True)] = backward
    return mapping
