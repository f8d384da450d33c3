"""``attngan-fast train`` under torchrun with two gloo processes on the CPU: the training loop's
DDP path end to end (one checkpoint per run, written by rank 0; resume), and --sync-bn refused.

Tiny sizes: 24 images, 2 processes x batch 4 = 3 steps an epoch; 4 steps cross an epoch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import torch

from attngan_fast.runtime import checkpoint as ckpt

TINY = [
    "--set", "TREE.BRANCH_NUM=2", "--set", "GAN.GF_DIM=2", "--set", "GAN.DF_DIM=2",
    "--set", "GAN.R_NUM=1", "--set", "TEXT.EMBEDDING_DIM=16", "--set", "TEXT.WORDS_NUM=12",
    "--set", "TRAIN.SNAPSHOT_INTERVAL=1", "--batch-size", "4", "--no-progress",
    "--device", "cpu", "--sample-every", "0", "--log-every", "1", "--seed", "5",
    "--workers", "0",  # bit for bit needs the loader in the process (the default: WORKERS)
]  # fmt: skip


def _torchrun(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
               "2", "-m", "attngan_fast.cli", "train", *args]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)


def _state_tensors(path):
    saved = ckpt.load(path)
    tensors = {f"G.{k}": v for k, v in saved["netG"].items()}
    tensors.update({f"ema.{k}": v for k, v in saved["netG_ema"].items()})
    for i, d in enumerate(saved["netsD"]):
        tensors.update({f"D{i}.{k}": v for k, v in d.items()})
    for i, opt in enumerate([saved["optimizerG"], *saved["optimizersD"]]):
        for pid, st in opt["state"].items():
            tensors.update({f"opt{i}.{pid}.{k}": v for k, v in st.items() if torch.is_tensor(v)})
    return saved, tensors


def test_two_processes_train_checkpoint_and_resume(tmp_path, synth_root, damsm_files):
    """4 steps straight == 2 steps, then `--resume` to 4, both under torchrun: same tensors
    (parameters, EMA, Adam moments), same sampler position, one checkpoint per run."""
    common = [*TINY, "--data", str(synth_root), "--text-encoder", str(damsm_files[0])]
    runs = {"straight": tmp_path / "straight", "resumed": tmp_path / "resumed"}
    for proc in (
        _torchrun(*common, "--out", str(runs["straight"]), "--steps", "4"),
        _torchrun(*common, "--out", str(runs["resumed"]), "--steps", "2"),
    ):
        assert proc.returncode == 0, proc.stderr[-3000:]
    first = ckpt.load(runs["resumed"] / "checkpoint.pt")
    assert first["step"] == 2 and len(first["rng"]) == 2  # every rank's random streams
    proc = _torchrun(*common, "--out", str(runs["resumed"]), "--steps", "4", "--resume")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count(f"resuming {runs['resumed']} at step 2") == 1  # rank 0 only
    a, ta = _state_tensors(runs["straight"] / "checkpoint.pt")
    b, tb = _state_tensors(runs["resumed"] / "checkpoint.pt")
    assert a["step"] == b["step"] == 4 and a["epoch"] == b["epoch"] == 1
    assert a["sampler"] == b["sampler"]
    assert set(ta) == set(tb)
    for key in ta:
        assert torch.equal(ta[key], tb[key]), key
    for run in runs.values():
        assert sorted(p.name for p in run.glob("*.pt*")) == ["checkpoint.pt"]  # no rank copies
        assert json.loads((run / "run.json").read_text())["world_size"] == 2
        steps = [
            json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()
        ]
        assert steps == [1, 2, 3, 4]  # rank 0 logs, once per step


def test_sync_bn_is_refused_on_cpu(tmp_path, synth_root, damsm_files):
    proc = _torchrun(*TINY, "--data", str(synth_root), "--text-encoder", str(damsm_files[0]),
                     "--out", str(tmp_path / "run"), "--steps", "1", "--sync-bn")  # fmt: skip
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.splitlines() if "attngan-fast train: error:" in ln]
    assert len(lines) == 2  # one line from each process, no traceback
    assert all("--sync-bn needs CUDA GPUs" in ln for ln in lines)
    assert "exitcode  : 2" in proc.stderr  # a usage error
    assert not (tmp_path / "run" / "checkpoint.pt").exists()
