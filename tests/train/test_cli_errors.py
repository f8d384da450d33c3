"""Every bad command: one line on stderr (what, which flag or file), no traceback, exit status 2
for a usage error and 1 for a failure while running; ``--debug`` shows the traceback."""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys

import pytest
import torch
from train_helpers import tiny_gan_cfg

from attngan_fast import cli
from attngan_fast.errors import UsageError
from attngan_fast.runtime.networks import build_generator
from attngan_fast.train.gan_trainer import GanTrainOptions, train_gan

TINY = [
    "--set", "TREE.BRANCH_NUM=2", "--set", "GAN.GF_DIM=2", "--set", "GAN.DF_DIM=2",
    "--set", "GAN.R_NUM=1", "--set", "TEXT.EMBEDDING_DIM=16", "--set", "TEXT.WORDS_NUM=12",
    "--no-progress", "--device", "cpu", "--sample-every", "0", "--steps", "1",
]  # fmt: skip


class _Exploit:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def world(synth_root, damsm_files, tmp_path_factory):
    """Paths the bad commands use: data, encoders, a run, a generator file, bad files."""
    root = tmp_path_factory.mktemp("cli_errors")
    w = {"root": root, "data": synth_root, "text": damsm_files[0]}
    w["vocab"] = damsm_files[0].parent / "vocab.json"
    w["damsm"] = damsm_files[0].parent
    w["netG"] = root / "netG.pth"
    torch.save(build_generator(tiny_gan_cfg()).state_dict(), w["netG"])
    w["run"] = root / "run"  # a 1-step run of the tiny model
    opts = GanTrainOptions(out_dir=w["run"], data_dir=synth_root, text_encoder=damsm_files[0],
                           device="cpu", max_steps=1, sample_every=0, progress=False)  # fmt: skip
    train_gan(tiny_gan_cfg(), opts)
    w["eval_run"] = root / "eval_run"  # eval's own main reports; a damaged netG is named
    shutil.copytree(w["run"], w["eval_run"])
    netG = w["eval_run"] / "Model" / "netG.pth"
    netG.write_bytes(netG.read_bytes()[:5000])
    w["damaged_run"] = root / "damaged_run"
    w["damaged_run"].mkdir()
    (w["damaged_run"] / "checkpoint.pt").write_bytes(b"PK\x03\x04 not really a zip")
    w["bad_json"] = root / "vocab.json"
    w["bad_json"].write_text('["<end>", "a"')
    w["marker"] = root / "pwned"
    w["evil_pickle"] = root / "captions.pickle"
    w["evil_pickle"].write_bytes(pickle.dumps([_Exploit(w["marker"])], protocol=2))
    w["latin1_data"] = root / "latin1_data"
    shutil.copytree(synth_root, w["latin1_data"])
    images_txt = w["latin1_data"] / "CUB_200_2011" / "images.txt"
    images_txt.write_bytes(images_txt.read_bytes() + "1 caf\xe9.jpg\n".encode("latin-1"))
    w["evil_data"] = root / "evil_data"
    shutil.copytree(synth_root, w["evil_data"])
    shutil.copy(w["evil_pickle"], w["evil_data"] / "captions.pickle")
    return w


def _train(w, *extra, out="new"):
    return ["train", "--data", str(w["data"]), "--text-encoder", str(w["text"]),
            "--out", str(w["root"] / out), *TINY, *extra]  # fmt: skip


# (exit status, words the line must hold, the command (from `world`))
CASES = {
    "batch 0": (2, "--batch-size: must be an integer in [1, 65536], got '0'",
                lambda w: _train(w, "--batch-size", "0")),
    "batch -1": (2, "--batch-size", lambda w: _train(w, "--batch-size", "-1")),
    "log every 0": (2, "--log-every", lambda w: _train(w, "--log-every", "0")),
    "checkpoint every 0": (2, "--checkpoint-every", lambda w: _train(w, "--checkpoint-every", "0")),
    "ngf 0": (2, "argument --ngf", lambda w: _train(w, "--ngf", "0")),
    "ema decay 1": (2, "--ema-decay: must be a number in [0.0, 1.0)",
                    lambda w: _train(w, "--ema-decay", "1")),
    "lr -1": (2, "--lr", lambda w: _train(w, "--lr", "-1")),
    "epochs 0": (2, "--epochs", lambda w: _train(w, "--epochs", "0")),
    "not a number": (2, "--steps: must be an integer", lambda w: _train(w, "--steps", "ten")),
    "device gpu": (2, "--device: must be cpu, cuda or cuda:N",
                   lambda w: _train(w, "--device", "gpu")),
    "config key": (2, "'GAN.GF_DIM' must be in [1, 1024], got 0",
                   lambda w: _train(w, "--set", "GAN.GF_DIM=0")),
    "batch > data": (2, "--batch-size 1000 is larger than the 24 training images",
                     lambda w: _train(w, "--batch-size", "1000")),
    "fp16 on cpu": (2, "fp16 mixed precision needs a CUDA GPU",
                    lambda w: _train(w, "--precision", "fp16")),
    "no data": (2, "nowhere", lambda w: _train(w, "--data", str(w["root"] / "nowhere"))),
    "existing run": (2, "already holds a training run", lambda w: _train(w, out="run")),
    "resume and overwrite": (2, "give one of them",
                             lambda w: _train(w, "--resume", "--overwrite", out="run")),
    "resume other model": (2, "GAN.GF_DIM (--ngf) 2 there, 4 now",
                           lambda w: _train(w, "--resume", "--ngf", "4", out="run")),
    "pretrain existing": (2, "already holds DAMSM encoders",
                          lambda w: ["pretrain-damsm", "--data", str(w["data"]),
                                     "--out", str(w["damsm"]), "--image-encoder", "small"]),
    "synth size": (2, "--size: must be an integer in [32, 1024], got '100000'",
                   lambda w: ["synth-data", str(w["root"] / "s"), "--size", "100000"]),
    "synth train 0": (2, "--train", lambda w: ["synth-data", str(w["root"] / "s"), "--train", "0"]),
    "synth existing": (2, "--overwrite", lambda w: ["synth-data", str(w["data"])]),
    "generate nothing": (2, "give --checkpoint DIR", lambda w: ["generate", "a red bird"]),
    "eval damaged netG": (2, "netG.pth: not an AttnGAN generator (netG*.pth) (damaged",
                          lambda w: ["eval", "r-precision", "--checkpoint", str(w["eval_run"])]),
    "damaged checkpoint": (1, "checkpoint.pt: not an attngan-fast checkpoint (damaged",
                           lambda w: _train(w, "--resume", out="damaged_run")),
    "G as text encoder": (1, "not a DAMSM text encoder (text_encoder*.pth)",
                          lambda w: ["generate", "--netG", str(w["netG"]), "--text-encoder",
                                     str(w["netG"]), "--vocab", str(w["vocab"]), "a red bird"]),
    "bad vocab json": (1, "vocab.json: not a JSON file",
                       lambda w: ["generate", "--checkpoint", str(w["run"]), "--vocab",
                                  str(w["bad_json"]), "a red bird"]),
    "non-UTF-8 images.txt": (1, "images.txt: not UTF-8 text (byte 0xe9",
                             lambda w: _train(w, "--data", str(w["latin1_data"]))),
    "evil captions pickle": (1, "captions.pickle: refused to load",
                             lambda w: ["generate", "--netG", str(w["netG"]), "--text-encoder",
                                        str(w["text"]), "--captions-pickle",
                                        str(w["evil_pickle"]), "a red bird"]),
    "evil dataset": (1, "captions.pickle: refused to load",
                     lambda w: _train(w, "--data", str(w["evil_data"]))),
}  # fmt: skip


@pytest.mark.parametrize("name", list(CASES))
def test_bad_command_is_one_line(name, world, capsys):
    code, words, command = CASES[name]
    argv = command(world)
    capsys.readouterr()
    try:
        status = cli.main(argv)
    except SystemExit as exc:  # argparse: a flag's value refused while parsing
        status = exc.code
    assert status == code
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1 and err.endswith("\n"), err
    assert lines[0].startswith(f"attngan-fast {argv[0]}") and words in lines[0], lines[0]
    assert "Traceback" not in err
    assert not world["marker"].exists()


def test_debug_shows_the_traceback(world):
    with pytest.raises(UsageError, match="give --checkpoint"):
        cli.main(["generate", "--debug", "a red bird"])


def test_installed_command_exit_status_and_stderr(world):
    """The real process: status, one stderr line; --debug prints the traceback."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    base = [sys.executable, "-m", "attngan_fast.cli"]
    bad_g = ["generate", "--netG", str(world["netG"]), "--text-encoder", str(world["netG"]),
             "--vocab", str(world["vocab"]), "a red bird"]  # fmt: skip
    for argv, code in ((["train", "--batch-size", "0"], 2), (bad_g, 1)):
        result = subprocess.run(
            [*base, *argv], capture_output=True, text=True, env=env, timeout=300
        )
        assert result.returncode == code and len(result.stderr.splitlines()) == 1, result.stderr
    result = subprocess.run([*base, *bad_g, "--debug"], capture_output=True, text=True, env=env,
                            timeout=300)  # fmt: skip
    assert result.returncode == 1 and "Traceback" in result.stderr
