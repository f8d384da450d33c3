"""Every Triton launch runs with its tensors' CUDA device current.

Triton launches on the current device and stream, not on its arguments' device: a launcher
called with tensors on ``cuda:1`` while ``cuda:0`` is current would read foreign memory. Without a
GPU, the guard itself is checked with ``torch.cuda.device`` mocked, and every kernel launch of
every Triton op with a spy that asserts the guard is entered, for the inputs' device, around it.
"""

from __future__ import annotations

import contextlib
import importlib

import pytest
import torch

from attngan_fast import ops
from attngan_fast.ops.triton import _common

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
MODULES = ("word_attention", "damsm", "batch_norm", "upsample_conv")


def test_the_guard_makes_the_tensors_device_current(monkeypatch):
    entered = []

    @contextlib.contextmanager
    def fake_device(device):
        entered.append(device)
        yield

    monkeypatch.setattr(torch.cuda, "device", fake_device)
    with _common.on_device(torch.device("cuda", 1)):
        pass
    with _common.on_device(torch.device("cpu")):
        pass
    assert entered == [torch.device("cuda", 1)]

    @_common.launches_on_input_device
    def launcher(flag, x):
        return flag, x

    x = torch.empty(2)
    assert launcher("f", x=x) == ("f", x)
    assert entered == [torch.device("cuda", 1)]  # a CPU tensor enters no CUDA device


class _GuardState:
    def __init__(self):
        self.active: list[torch.device] = []
        self.launches: list[tuple[str, tuple]] = []


@pytest.fixture
def guard(monkeypatch):
    """on_device mocked to record its device; every kernel replaced by a launch recorder."""
    state = _GuardState()

    @contextlib.contextmanager
    def fake_on_device(device):
        state.active.append(device)
        try:
            yield
        finally:
            state.active.pop()

    monkeypatch.setattr(_common, "on_device", fake_on_device)

    class Spy:
        def __init__(self, name, kernel):
            self.name, self.kernel = name, kernel

        def __getitem__(self, grid):
            state.launches.append((self.name, tuple(state.active)))
            return self.kernel[grid]

        def __getattr__(self, attr):
            return getattr(self.kernel, attr)

    for mod in MODULES:
        module = importlib.import_module(f"attngan_fast.ops.triton.{mod}")
        for name in dir(module):
            if name.endswith("_kernel"):
                monkeypatch.setattr(module, name, Spy(f"{mod}.{name}", getattr(module, name)))
    return state


def _run_every_op():
    x = torch.randn(2, 4, 3, 3, device=DEVICE, requires_grad=True)
    w = torch.randn(6, 4, 3, 3, device=DEVICE, requires_grad=True)
    y = ops.upsample_conv3x3(x, w, backend="triton")
    y = ops.batch_norm_glu(y, None, None, None, None, True, 0.1, 1e-5, backend="triton")
    y = ops.upsample_conv3x3_bn_glu(
        y, torch.randn(4, 3, 3, 3, device=DEVICE), None, None, None, None, True, 0.1, 1e-5,
        backend="triton",
    )  # fmt: skip
    y = ops.batch_norm_add(y, y.detach(), None, None, None, None, True, 0.1, 1e-5, backend="triton")
    q = y.flatten(2)[:, :, :7]
    source = torch.randn(2, 2, 5, device=DEVICE, requires_grad=True)
    ctx, _ = ops.word_attention(q, source, None, need_attn=False, backend="triton")
    img = torch.randn(2, 16, 3, 3, device=DEVICE, requires_grad=True)
    words = torch.randn(2, 16, 5, device=DEVICE, requires_grad=True)
    lens = torch.tensor([5, 3], device=DEVICE)
    losses = ops.damsm_words_loss(img, words, lens, None, 4.0, 5.0, 10.0, backend="triton")
    (ctx.sum() + losses.w_loss0 + losses.w_loss1).backward()


def test_every_launch_runs_under_the_guard_of_its_inputs_device(guard):
    _run_every_op()
    launched = {name for name, _ in guard.launches}
    for mod in MODULES:  # every module's kernels were exercised
        assert any(name.startswith(mod + ".") for name in launched), mod
    assert len(launched) >= 10, launched
    for name, active in guard.launches:
        assert active and active[-1].type == torch.device(DEVICE).type, (name, active)
