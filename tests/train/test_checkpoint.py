"""Atomic checkpoint writes and RNG state capture."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from attngan_fast.train import checkpoint as ckpt


def test_save_atomic_round_trip(tmp_path):
    obj = {"w": torch.randn(3, 4), "step": 7}
    path = ckpt.save_atomic(obj, tmp_path / "sub" / "c.pt")
    back = ckpt.load(path)
    assert back["step"] == 7 and torch.equal(back["w"], obj["w"])
    assert [p.name for p in path.parent.iterdir()] == ["c.pt"]  # no temporary left behind


def test_failed_save_keeps_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "c.pt"
    ckpt.save_atomic({"step": 1, "w": torch.ones(100)}, path)

    def crash(obj, f, *args, **kwargs):
        f.write(b"partial bytes of a checkpoint")
        raise KeyboardInterrupt("killed during save")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save_atomic({"step": 2, "w": torch.zeros(100)}, path)
    monkeypatch.undo()
    back = ckpt.load(path)
    assert back["step"] == 1 and torch.equal(back["w"], torch.ones(100))
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


def test_process_killed_mid_save_keeps_previous_file(tmp_path):
    """A process that dies abruptly (os._exit, no cleanup) half-way through writing."""
    path = tmp_path / "c.pt"
    ckpt.save_atomic({"step": 1}, path)
    script = textwrap.dedent(
        f"""
        import os, torch
        from attngan_fast.train import checkpoint as ckpt
        real_save = torch.save
        def dying_save(obj, f, *a, **k):
            real_save(obj, f, *a, **k)
            f.flush()
            f.truncate(f.tell() // 2)
            os._exit(9)
        torch.save = dying_save
        ckpt.save_atomic({{"step": 2, "w": torch.randn(1000)}}, {str(path)!r})
        """
    )
    result = subprocess.run([sys.executable, "-c", script], timeout=120)
    assert result.returncode == 9
    assert ckpt.load(path) == {"step": 1}
    leftovers = [p for p in tmp_path.iterdir() if p.name != "c.pt"]
    assert leftovers and all(p.name.endswith(".tmp") for p in leftovers)  # the write in flight
    ckpt.save_atomic({"step": 3}, path)  # the next save still works
    assert ckpt.load(path) == {"step": 3}


def test_rng_state_round_trip():
    state = ckpt.rng_state()
    a = (torch.rand(3), np.random.rand(3), random.random())  # noqa: NPY002
    ckpt.set_rng_state(state)
    b = (torch.rand(3), np.random.rand(3), random.random())  # noqa: NPY002
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]


def test_load_missing_file_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nope.pt").replace("\\", ".")):
        ckpt.load(tmp_path / "nope.pt")


def test_no_fd_leak_on_failure(tmp_path, monkeypatch):
    before = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else 0
    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        ckpt.save_atomic({"a": 1}, tmp_path / "c.pt")
    monkeypatch.undo()
    after = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else 0
    assert after <= before
    assert list(tmp_path.iterdir()) == []
