"""A tiny untrained model laid out as a training run (what ``attngan-fast serve`` loads)."""

import torch

from attngan_fast.config import config_from_dict, preset
from attngan_fast.data.vocab import Vocabulary
from attngan_fast.models.generator import G_NET
from attngan_fast.models.text_encoder import RNN_ENCODER
from attngan_fast.runtime.run_dir import save_config, save_vocab

WORDS = "this bird has a red blue white crown body wings and with belly small".split()
WORDS_NUM = 16  # the run's TEXT.WORDS_NUM: the longest caption the server takes


def make_tiny_run(run):
    """Write a run folder: Model/netG.pth (3 stages: 64, 128, 256 px), Model/text_encoder.pth,
    vocab.json, config.yml. Returns ``run``."""
    torch.manual_seed(0)
    (run / "Model").mkdir(parents=True)
    vocab = Vocabulary.build([WORDS])
    netG = G_NET(ngf=2, nef=16, ncf=6, z_dim=8, r_num=1, branch_num=3)
    with torch.no_grad():  # an untrained G is almost flat grey: give its images some contrast
        for i in (1, 2, 3):
            getattr(netG, f"img_net{i}").img[0].weight.mul_(30)
    torch.save(netG.state_dict(), run / "Model" / "netG.pth")
    text = RNN_ENCODER(len(vocab), ninput=10, nhidden=16)
    torch.save(text.state_dict(), run / "Model" / "text_encoder.pth")
    save_vocab(vocab, run / "vocab.json")
    cfg = config_from_dict({"TEXT": {"WORDS_NUM": WORDS_NUM}}, preset("birds"))
    save_config(cfg, run / "config.yml")
    return run
