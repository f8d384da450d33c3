"""Per-phase time of one training iteration from ``torch.profiler``, without touching the trainer.

``PhaseRanges`` opens a ``record_function`` range named after a phase around the forward of
chosen modules (forward hooks) and around chosen functions (attributes swapped for the duration).
``phase_times`` profiles one call and attributes the device time of every kernel (CPU time on a
CPU) to a phase:

* forward work: the innermost phase range around the op that launched it;
* backward work: the autograd node that launched it carries the sequence number of the forward
  op that created it, so it goes to that forward op's phase (the backward of D, of the image
  encoder, of the DAMSM loss and of G are told apart although they run in one ``backward()``);
* anything else: ``other``.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.autograd import DeviceType
from torch.autograd.profiler import record_function
from torch.profiler import ProfilerActivity, profile

PREFIX = "phase::"
BACKWARD_PREFIX = "autograd::engine::evaluate_function"


class PhaseRanges:
    """Context manager: phase ranges around module forwards and functions while active."""

    def __init__(self) -> None:
        self._modules: list[tuple[nn.Module, str]] = []
        self._functions: list[tuple[Any, str, str]] = []
        self._undo: list[Callable[[], None]] = []

    def module(self, module: nn.Module, phase: str) -> None:
        self._modules.append((module, phase))

    def function(self, owner: Any, attribute: str, phase: str) -> None:
        self._functions.append((owner, attribute, phase))

    def __enter__(self) -> PhaseRanges:
        for module, phase in self._modules:
            stack: list[record_function] = []

            def pre(_m, _args, stack=stack, phase=phase):
                r = record_function(PREFIX + phase)
                r.__enter__()
                stack.append(r)

            def post(_m, _args, _out, stack=stack):
                stack.pop().__exit__(None, None, None)

            handles = (module.register_forward_pre_hook(pre), module.register_forward_hook(post))
            self._undo += [h.remove for h in handles]
        for owner, attribute, phase in self._functions:
            original = getattr(owner, attribute)
            in_instance = attribute in getattr(owner, "__dict__", {})

            @functools.wraps(original)
            def wrapped(*args, _fn=original, _phase=phase, **kwargs):
                with record_function(PREFIX + _phase):
                    return _fn(*args, **kwargs)

            setattr(owner, attribute, wrapped)
            self._undo.append(_restorer(owner, attribute, original, in_instance))
        return self

    def __exit__(self, *exc) -> None:
        while self._undo:
            self._undo.pop()()


def _restorer(owner: Any, attribute: str, original: Any, in_instance: bool) -> Callable[[], None]:
    def undo() -> None:
        if in_instance or isinstance(owner, type) or not hasattr(type(owner), attribute):
            setattr(owner, attribute, original)
        else:  # a bound method looked up through the class: drop the instance attribute
            delattr(owner, attribute)

    return undo


def phase_of(event, backward_phase: dict[int, str]) -> str | None:
    """The phase of a profiler event: innermost phase range, or via its autograd node."""
    e = event
    while e is not None:
        if e.name.startswith(PREFIX):
            return e.name[len(PREFIX) :]
        if e.name.startswith(BACKWARD_PREFIX):
            return backward_phase.get(e.sequence_nr)
        e = e.cpu_parent
    return None


def forward_phases(events) -> dict[int, str]:
    """Sequence number -> phase of every forward op that ran inside a phase range."""
    forward_phase: dict[int, str] = {}
    for e in events:
        if e.sequence_nr >= 0 and not e.name.startswith(BACKWARD_PREFIX):
            phase = phase_of(e, {})
            if phase is not None:
                forward_phase.setdefault(e.sequence_nr, phase)
    return forward_phase


def attribute(events, use_device_time: bool) -> dict[str, float]:
    """Milliseconds per phase from a profiler's ``events()`` (self device or self CPU time)."""
    forward_phase = forward_phases(events)
    totals: dict[str, float] = defaultdict(float)
    for e in events:
        if e.device_type != DeviceType.CPU or e.name.startswith(PREFIX):
            continue  # kernels count through the op that launched them; ranges launch nothing
        us = e.self_device_time_total if use_device_time else e.self_cpu_time_total
        if us:
            totals[phase_of(e, forward_phase) or "other"] += us / 1e3
    return dict(sorted(totals.items(), key=lambda kv: -kv[1]))


def phase_times(step: Callable[[], object], device: torch.device) -> dict[str, float]:
    """Profile one ``step()`` and return milliseconds per phase (device time on a GPU)."""
    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
        torch.cuda.synchronize(device)
    with profile(activities=activities) as prof:
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    return attribute(prof.events(), use_device_time=device.type == "cuda")
