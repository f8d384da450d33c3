"""``attngan-fast eval`` on a tiny run folder laid out as the trainer writes it."""

import json
from dataclasses import asdict

import pytest
import torch

from attngan_fast.config import config_from_dict, preset
from attngan_fast.data.synth_birds import make_synth_birds
from attngan_fast.data.text_image import load_text_image_dataset
from attngan_fast.eval.cli import main
from attngan_fast.models.generator import G_NET
from attngan_fast.models.image_encoder import SmallImageEncoder
from attngan_fast.models.text_encoder import RNN_ENCODER
from attngan_fast.train.encoders import EncoderSpec
from attngan_fast.train.run_dir import save_config, save_vocab


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("evalcli")
    data = make_synth_birds(tmp / "birds", n_train=20, n_test=24, seed=2, image_size=64)
    vocab = load_text_image_dataset(data, "test", "cub", base_size=64, branch_num=1).vocab
    cfg = config_from_dict({"TREE": {"BRANCH_NUM": 2}, "GAN": {"GF_DIM": 2}}, preset("birds"))
    spec = EncoderSpec(len(vocab), nef=16, image_encoder="small", small_ndf=4, small_size=32)
    run = tmp / "run"
    (run / "Model").mkdir(parents=True)
    netG = G_NET(ngf=2, nef=16, ncf=6, z_dim=8, r_num=1, branch_num=2)
    torch.save(netG.state_dict(), run / "Model" / "netG.pth")
    text = RNN_ENCODER(len(vocab), ninput=10, nhidden=16)
    torch.save(text.state_dict(), run / "Model" / "text_encoder.pth")
    image_path = tmp / "image_encoder5.pth"
    torch.save(SmallImageEncoder(16, ndf=4, image_size=32).state_dict(), image_path)
    save_vocab(vocab, run / "vocab.json")
    save_config(cfg, run / "config.yml")
    info = {"data_dir": str(data), "image_encoder": str(image_path), "encoder_spec": asdict(spec)}
    (run / "run.json").write_text(json.dumps(info))
    return run, tmp


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
