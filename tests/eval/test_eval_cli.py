"""``attngan-fast eval`` on a tiny run folder laid out as the trainer writes it."""

import json

import pytest
import torch

from attngan_fast.eval.cli import main


def test_r_precision_command(run, capsys):
    folder, tmp = run
    out = tmp / "rp.json"
    args = ["r-precision", "--checkpoint", str(folder), "--n-images", "24", "--candidates", "5"]
    assert main([*args, "--folds", "3", "--batch-size", "10", "--json", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["n_images"] == 24 and len(record["folds"]) == 3
    assert 0 <= record["r_precision_mean"] <= 100
    assert json.loads(capsys.readouterr().out)["folds"] == record["folds"]


def test_attributes_command(run):
    folder, tmp = run
    out = tmp / "attr.json"
    args = ["attributes", "--checkpoint", str(folder), "--classifier-steps", "2"]
    with pytest.warns(RuntimeWarning, match="unreliable"):  # two steps: an untrained classifier
        assert main([*args, "--classifier", str(tmp / "clf.pth"), "--json", str(out)]) == 0
    record = json.loads(out.read_text())
    assert 0 <= record["attribute_accuracy"] <= 1 and record["named_colours"] > 0
    assert (tmp / "clf.pth").is_file()


def test_inception_command_needs_a_weights_file(run, capsys):
    folder, _ = run
    assert main(["inception", "--checkpoint", str(folder)]) == 2
    assert "local file" in capsys.readouterr().err


@pytest.mark.gpu
def test_inception_command_on_cuda(run):
    from attngan_fast.models.inception import Inception3

    folder, tmp = run
    torch.save(Inception3(num_classes=10).state_dict(), tmp / "inception.pth")
    out = tmp / "is.json"
    args = [
        "inception",
        "--checkpoint",
        str(folder),
        "--inception-weights",
        str(tmp / "inception.pth"),
    ]
    assert main([*args, "--splits", "2", "--device", "cuda", "--json", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["n_images"] == 24 and record["inception_score_mean"] >= 1.0
    assert record["fid"] is not None
