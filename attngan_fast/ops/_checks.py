"""Input validation shared by the ops: every failure names the argument and what was expected."""

from __future__ import annotations

import torch

FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)


def check_float(name: str, t: object, shape: str, ndim: int | tuple[int, ...]) -> torch.Tensor:
    """``t`` must be a floating tensor of ``ndim`` dimensions; ``shape`` is the documented one."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape {shape}, got {type(t).__name__}")
    if t.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"{name} must be float32, bfloat16, float16 or float64 (shape {shape}), got {t.dtype}"
        )
    dims = (ndim,) if isinstance(ndim, int) else ndim
    if t.dim() not in dims:
        raise ValueError(f"{name} must have shape {shape}, got {tuple(t.shape)}")
    return t


def check_size(name: str, t: torch.Tensor, dim: int, expected: int, shape: str) -> None:
    if t.shape[dim] != expected:
        raise ValueError(
            f"{name} must have shape {shape}: size {t.shape[dim]} at dim {dim} should be "
            f"{expected} (got {tuple(t.shape)})"
        )


def check_nonempty(name: str, t: torch.Tensor, shape: str) -> None:
    if t.numel() == 0:
        raise ValueError(f"{name} must not be empty (shape {shape}), got {tuple(t.shape)}")


def check_same_device(*named: tuple[str, torch.Tensor | None]) -> None:
    present = [(n, t) for n, t in named if t is not None]
    first_name, first = present[0]
    for n, t in present[1:]:
        if t.device != first.device:
            raise ValueError(
                f"{n} is on {t.device} but {first_name} is on {first.device}; all inputs must "
                "share one device"
            )


def check_same_dtype(*named: tuple[str, torch.Tensor]) -> None:
    first_name, first = named[0]
    for n, t in named[1:]:
        if t.dtype != first.dtype:
            raise TypeError(
                f"{n} is {t.dtype} but {first_name} is {first.dtype}; cast them to one dtype "
                "(or run under torch.autocast)"
            )


def autocast_dtype(device_type: str) -> torch.dtype | None:
    """The lower-precision dtype when autocast is enabled for ``device_type``, else None."""
    if device_type in ("cuda", "cpu") and torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return None


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulation dtype: float64 for float64 inputs (gradcheck), float32 for everything else."""
    return torch.float64 if dtype == torch.float64 else torch.float32
