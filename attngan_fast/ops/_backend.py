"""The one backend switch of ``attngan_fast.ops``.

Every op has up to three implementations ("backends"):

* ``torch``  -- the pure-PyTorch reference in this package (always available, any device);
* ``triton`` -- fused Triton kernels in ``attngan_fast/ops/triton/`` (CUDA tensors, or CPU tensors
  when ``TRITON_INTERPRET=1`` was set before the first import of triton);
* ``cuda``   -- hand-written kernels in ``csrc/``, compiled into ``attngan_fast._C`` (CUDA tensors).

Which one runs is decided, in this order, by the ``backend=`` argument of the op, the environment
variable ``ATTNGAN_FAST_BACKEND`` (``torch`` | ``triton`` | ``cuda`` | ``auto``; empty means auto),
and otherwise automatically: the fastest backend available for the tensors' device (on CPU, the
reference).

A backend module implements an op by defining the functions listed in ``OP_INTERFACES`` (see each
op's module for their exact contracts). ``BACKEND_MODULES`` maps (op, backend) to the module.
"""

from __future__ import annotations

import functools
import importlib
import os
from types import ModuleType

import torch

BACKENDS = ("torch", "triton", "cuda")
ENV_VAR = "ATTNGAN_FAST_BACKEND"

OPS = (
    "word_attention",
    "damsm_word_similarity",
    "upsample_conv3x3",
    "batch_norm_act",
    "upsample_conv3x3_bn_glu",
)

# Automatic choice on CUDA tensors: first available wins. The order is the expected speed; it is
# not yet measured on a GPU (benchmarks/NOTES.md), and the benchmark tables should decide it.
AUTO_PREFERENCE: dict[str, tuple[str, ...]] = {
    "word_attention": ("triton", "cuda", "torch"),
    "damsm_word_similarity": ("triton", "cuda", "torch"),
    "upsample_conv3x3": ("triton", "cuda", "torch"),
    "batch_norm_act": ("triton", "cuda", "torch"),
    "upsample_conv3x3_bn_glu": ("triton", "cuda", "torch"),
}

# Where each backend's implementation of each op lives.
BACKEND_MODULES: dict[tuple[str, str], str] = {
    ("word_attention", "torch"): "attngan_fast.ops.word_attention",
    ("damsm_word_similarity", "torch"): "attngan_fast.ops.damsm",
    ("upsample_conv3x3", "torch"): "attngan_fast.ops.upsample_conv",
    ("batch_norm_act", "torch"): "attngan_fast.ops.batch_norm",
    ("upsample_conv3x3_bn_glu", "torch"): "attngan_fast.ops.upsample_conv_bn",
    ("word_attention", "triton"): "attngan_fast.ops.triton.word_attention",
    ("damsm_word_similarity", "triton"): "attngan_fast.ops.triton.damsm",
    ("upsample_conv3x3", "triton"): "attngan_fast.ops.triton.upsample_conv",
    ("batch_norm_act", "triton"): "attngan_fast.ops.triton.batch_norm",
    ("upsample_conv3x3_bn_glu", "triton"): "attngan_fast.ops.triton.upsample_conv_bn",
    ("word_attention", "cuda"): "attngan_fast.ops.cuda_ext",
    ("damsm_word_similarity", "cuda"): "attngan_fast.ops.cuda_ext",
    ("upsample_conv3x3", "cuda"): "attngan_fast.ops.cuda_ext",
    ("batch_norm_act", "cuda"): "attngan_fast.ops.cuda_ext",
    ("upsample_conv3x3_bn_glu", "cuda"): "attngan_fast.ops.cuda_ext",
}


class BackendUnavailableError(RuntimeError):
    """The requested backend cannot run the op here; the message says what is missing."""


def triton_interpret() -> bool:
    """True when Triton kernels run on the CPU through the interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@functools.cache
def _import_error(module: str) -> str | None:
    try:
        importlib.import_module(module)
    except ImportError as exc:  # missing triton, missing _C, or the op not written yet
        return f"{type(exc).__name__}: {exc}"
    return None


def _why_unavailable(op: str, backend: str, device: torch.device) -> str | None:
    """None if ``backend`` can run ``op`` on ``device``, else a sentence saying what is missing."""
    if backend == "torch":
        return None
    if backend == "triton":
        if device.type != "cuda" and not (device.type == "cpu" and triton_interpret()):
            return (
                f"the triton backend runs on CUDA tensors (got {device.type}); on the CPU it needs "
                "TRITON_INTERPRET=1 set before triton is first imported"
            )
        if _import_error("triton") is not None:
            return "the triton package is not installed (pip install triton)"
    if backend == "cuda":
        if device.type != "cuda":
            return f"the cuda backend runs on CUDA tensors (got {device.type})"
        # whether _C is built, or can be built on first use, is for cuda_ext to say
    module = BACKEND_MODULES.get((op, backend))
    err = _import_error(module) if module else "no module registered"
    if err is not None:
        return f"the {backend} implementation of {op} could not be loaded ({err})"
    impl = importlib.import_module(module)
    supports = getattr(impl, f"{op}_supported", None)
    if supports is None:
        return f"{module} does not implement {op}"
    return supports(device)


def available_backends(op: str, device: torch.device | str = "cpu") -> list[str]:
    """The backends that can run ``op`` on tensors of ``device``, in automatic-preference order
    (none for ``cuda`` where no GPU is usable)."""
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        return []
    return [b for b in AUTO_PREFERENCE[op] if _why_unavailable(op, b, device) is None]


def resolve_backend(op: str, requested: str | None, device: torch.device) -> str:
    """Pick the backend for one call: argument > ``ATTNGAN_FAST_BACKEND`` > automatic.

    Under ``torch.compile`` the choice is made once, while tracing, and baked into the graph.
    """
    return _resolve(op, requested, device.type)


@torch.compiler.assume_constant_result
def _resolve(op: str, requested: str | None, device_type: str) -> str:
    device = torch.device(device_type)
    if requested is not None and not isinstance(requested, str):
        raise TypeError(
            f"backend= must be a string ({', '.join(BACKENDS)} or 'auto') or None, "
            f"got {type(requested).__name__} {requested!r}"
        )
    name = requested if requested is not None else os.environ.get(ENV_VAR, "").strip() or "auto"
    name = name.strip().lower()
    if name == "auto":
        if device.type == "cpu":
            return "torch"
        for candidate in AUTO_PREFERENCE[op]:
            if _why_unavailable(op, candidate, device) is None:
                return candidate
        return "torch"
    if name not in BACKENDS:
        source = "backend=" if requested is not None else ENV_VAR
        raise ValueError(f"{source}{name!r} is not a backend; choose one of {BACKENDS} or 'auto'")
    why = _why_unavailable(op, name, device)
    if why is not None:
        raise BackendUnavailableError(f"{op}: backend {name!r} is not available: {why}")
    return name


def implementation(op: str, backend: str) -> ModuleType:
    """The module holding ``backend``'s functions for ``op`` (already checked to be importable)."""
    return importlib.import_module(BACKEND_MODULES[(op, backend)])
