"""A tiny run folder laid out as the trainer writes it, on a tiny SynthBirds (``eval`` tests)."""

import json
from dataclasses import asdict

import pytest
import torch

from attngan_fast.config import config_from_dict, preset
from attngan_fast.data.synth_birds import make_synth_birds
from attngan_fast.data.text_image import load_text_image_dataset
from attngan_fast.models.generator import G_NET
from attngan_fast.models.image_encoder import SmallImageEncoder
from attngan_fast.models.text_encoder import RNN_ENCODER
from attngan_fast.runtime.networks import EncoderSpec
from attngan_fast.runtime.run_dir import save_config, save_vocab


@pytest.fixture(scope="session")
def run(tmp_path_factory):
    """(run folder, its parent): 2-stage G, text and small image encoders, 20 + 24 images."""
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
