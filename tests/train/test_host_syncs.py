"""One GAN training step reads the device back into the host once (the losses), no more.

On a GPU each such read (``.item()``, ``int(t)``, ``.tolist()``, ``.cpu()``, ``.to("cpu")``) waits
for every queued kernel. Without a GPU the step runs on the CPU with those methods of
``torch.Tensor`` patched: a read counts when attngan_fast code makes it on a tensor that would
live on the device, that is any tensor but the data loader's own CPU tensors (the batch's, whose
moves to the step's device are made to return copies, as a real transfer does).
"""

from __future__ import annotations

import contextlib
import sys

import torch
from train_helpers import tiny_gan_cfg

from attngan_fast.train.gan_step import build_gan_state, gan_train_step, synthetic_batch

READS = ("item", "tolist", "numpy", "cpu", "__int__", "__float__", "__bool__", "__index__")


class HostReads:
    """Patches the read methods; ``reads`` lists (method, file:line) of each counted read."""

    def __init__(self, host_tensors: list[torch.Tensor]):
        self.host = {t.untyped_storage().data_ptr() for t in host_tensors}
        self.reads: list[tuple[str, str]] = []

    def _is_host(self, t: torch.Tensor) -> bool:
        return t.untyped_storage().data_ptr() in self.host

    def _from_package(self) -> str | None:
        frame = sys._getframe(2)  # the caller of the patched method
        if not frame.f_globals.get("__name__", "").startswith("attngan_fast"):
            return None
        return f"{frame.f_code.co_filename.split('attngan_fast/')[-1]}:{frame.f_lineno}"

    @contextlib.contextmanager
    def patched(self, monkeypatch):
        def reading(name, original):
            def method(t, *args, **kwargs):
                site = self._from_package()
                if site is not None and not self._is_host(t):
                    self.reads.append((name, site))
                return original(t, *args, **kwargs)

            return method

        for name in READS:
            monkeypatch.setattr(torch.Tensor, name, reading(name, getattr(torch.Tensor, name)))
        original_to = torch.Tensor.to

        def to(t, *args, **kwargs):
            site = self._from_package()
            target = args[0] if args else kwargs.get("device")
            out = original_to(t, *args, **kwargs)
            if site is None:
                return out
            if isinstance(target, str) and target.startswith("cpu") and not self._is_host(t):
                self.reads.append(("to('cpu')", site))
            if self._is_host(t) and isinstance(target, (str, torch.device)):
                return out.clone()  # a host-to-device copy: a new tensor on the device
            return out

        monkeypatch.setattr(torch.Tensor, "to", to)
        yield self


def _state():
    return build_gan_state(tiny_gan_cfg(), 30, "cpu", "fp32", image_encoder_kind="small")


def test_one_step_reads_the_device_once(monkeypatch):
    torch.manual_seed(0)
    state = _state()
    batch = synthetic_batch(state.cfg, 30, 4)
    host = [*batch.images, batch.captions, batch.cap_lens, batch.class_ids]
    with HostReads(host).patched(monkeypatch) as counter:
        gan_train_step(state, batch)
    assert [name for name, _ in counter.reads] == ["tolist"], counter.reads
    assert counter.reads[0][1].startswith("train/gan_step.py"), counter.reads


def test_the_counter_sees_a_read_of_a_device_copy(monkeypatch):
    """The harness counts what it should: lengths moved to the device and read back."""
    lens = torch.tensor([3, 1])
    with HostReads([lens]).patched(monkeypatch) as counter:
        from attngan_fast.ops import damsm

        exec(  # run as package code, like a read inside attngan_fast would be
            "moved = lens.to(torch.device('cpu')); n = int(moved.max()); moved.to('cpu')",
            {"__name__": "attngan_fast.fake", "lens": lens, "torch": torch},
        )
        damsm._check_lengths(lens, 4)  # the loader's own tensor: no device read
    assert [name for name, _ in counter.reads] == ["__int__", "to('cpu')"], counter.reads
