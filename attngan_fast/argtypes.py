"""Argument types of the command line that check their range while the command line is parsed.

    p.add_argument("--batch-size", type=int_in(1, 65536))
    p.add_argument("--ema-decay", type=float_in(0.0, 1.0, high_open=True))

A value out of range is an ``argparse.ArgumentTypeError``, so argparse reports it with the
flag's name (``argument --batch-size: must be an integer in [1, 65536], got '0'``) and exit
status 2 before anything runs.
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable


def int_in(low: int, high: int | None = None, multiple_of: int = 1) -> Callable[[str], int]:
    """An integer in ``[low, high]`` (no upper bound when ``high`` is None), a multiple of
    ``multiple_of``."""
    span = f">= {low}" if high is None else f"in [{low}, {high}]"
    if multiple_of > 1:
        span += f" and a multiple of {multiple_of}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer {span}, got {text!r}") from None
        if value < low or (high is not None and value > high) or value % multiple_of:
            raise argparse.ArgumentTypeError(f"must be an integer {span}, got {text!r}")
        return value

    parse.__name__ = "int"
    return parse


def float_in(low: float, high: float | None = None, *, low_open: bool = False,
             high_open: bool = False) -> Callable[[str], float]:  # fmt: skip
    """A finite number between ``low`` and ``high`` (bounds excluded when ``*_open``)."""
    left, right = "(" if low_open else "[", ")" if high_open else "]"
    span = (
        f"in {left}{low}, {high}{right}"
        if high is not None
        else f"{'>' if low_open else '>='} {low}"
    )

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number {span}, got {text!r}") from None
        ok = math.isfinite(value) and (value > low if low_open else value >= low)
        if high is not None:
            ok = ok and (value < high if high_open else value <= high)
        if not ok:
            raise argparse.ArgumentTypeError(f"must be a number {span}, got {text!r}")
        return value

    parse.__name__ = "float"
    return parse


_DEVICE = re.compile(r"cpu|cuda(:\d+)?")


def device_name(text: str) -> str:
    """``cpu``, ``cuda`` or ``cuda:N``."""
    if not _DEVICE.fullmatch(text):
        raise argparse.ArgumentTypeError(f"must be cpu, cuda or cuda:N, got {text!r}")
    return text


SEED = int_in(0, 2**32 - 1)
