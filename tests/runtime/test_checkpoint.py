"""Atomic checkpoint writes and RNG state capture."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from fuzz import mutations

from attngan_fast.errors import FileFormatError
from attngan_fast.runtime import checkpoint as ckpt
from attngan_fast.runtime.seeding import rng_state, set_rng_state


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
        from attngan_fast.runtime import checkpoint as ckpt
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
    assert ckpt.stale_temporaries(path) == leftovers
    ckpt.save_atomic({"step": 3}, path)  # the next save still works, and cleans up
    assert ckpt.load(path) == {"step": 3}
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


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


class _Exploit:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_checkpoint_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "checkpoint.pt"
    torch.save({"format": "attngan-fast/gan-training", "step": _Exploit(marker)}, path)
    with pytest.raises(FileFormatError, match=re.escape(str(path)) + ".*refused.*posix.system"):
        ckpt.load(path)
    with pytest.raises(FileFormatError, match="refused"):
        ckpt.load_torch_file(path)
    assert not marker.exists()
    torch.save({"rng": np.array([1, "x"], dtype=object)}, path)  # numpy, but not the RNG's
    with pytest.raises(FileFormatError, match="refused.*ObjectDType"):
        ckpt.load(path)


def test_training_checkpoints_load_weights_only(tmp_path):
    """What a training checkpoint holds (numpy's generator state included) loads as before:
    the file below is laid out as this project has always written them."""
    adam = torch.optim.Adam([torch.nn.Parameter(torch.ones(1))])
    payload = {"format": "attngan-fast/gan-training", "version": 1, "step": 3,
               "netG": {"w": torch.randn(2)}, "rng": [rng_state()], "scaler": None,
               "optimizerG": adam.state_dict()}  # fmt: skip
    path = ckpt.save_atomic(payload, tmp_path / "checkpoint.pt")
    back = ckpt.load(path)
    assert back["step"] == 3 and torch.equal(back["netG"]["w"], payload["netG"]["w"])
    state = back["rng"][0]["numpy"]
    assert state[1].dtype == np.uint32 and np.array_equal(state[1], payload["rng"][0]["numpy"][1])
    set_rng_state(back["rng"][0])


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")
def test_checkpoint_loader_fuzz(tmp_path):
    """Damaged checkpoints (random bytes, bit flips, truncations; fixed seed): each loads or is one
    FileFormatError naming the file."""
    payload = {"format": "attngan-fast/gan-training", "step": 3, "netG": {"w": torch.randn(64)},
               "rng": [rng_state()], "cfg": {"GAN": {"GF_DIM": 2}}}  # fmt: skip
    good = ckpt.save_atomic(payload, tmp_path / "good.pt").read_bytes()
    path = tmp_path / "checkpoint.pt"
    outcomes = {"loaded": 0, "refused": 0}
    for data in mutations(good, 210, seed=5, max_random=2000):
        path.write_bytes(data)
        try:
            ckpt.load(path)
            outcomes["loaded"] += 1
        except FileFormatError as exc:
            assert str(path) in str(exc) and "\n" not in str(exc)
            outcomes["refused"] += 1
    assert outcomes["refused"] > 140


def test_first_non_finite_names_the_tensor():
    tensors = {"a": torch.ones(3), "steps": torch.tensor([1, 2]), "b": torch.ones(2)}
    assert ckpt.first_non_finite(tensors) is None
    tensors["b"][1] = float("nan")
    assert ckpt.first_non_finite(tensors) == "b"
    tensors["a"][0] = float("inf")
    assert ckpt.first_non_finite(tensors) == "a"
