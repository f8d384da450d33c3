"""Build the networks from a ``Config`` (the original's ``cfg``-driven constructors)."""

from __future__ import annotations

from torch import nn

from attngan_fast.config import Config
from attngan_fast.models.discriminator import D_NETS
from attngan_fast.models.generator import G_NET
from attngan_fast.models.image_encoder import CNN_ENCODER
from attngan_fast.models.init import init_weights
from attngan_fast.models.text_encoder import RNN_ENCODER


def build_generator(cfg: Config, legacy_mask: bool = False, init: bool = True) -> G_NET:
    """G_NET with GAN.GF_DIM, TEXT.EMBEDDING_DIM, GAN.CONDITION_DIM, GAN.Z_DIM, GAN.R_NUM and
    TREE.BRANCH_NUM stages; ``init`` applies the orthogonal ``weights_init``."""
    net = G_NET(
        ngf=cfg.GAN.GF_DIM,
        nef=cfg.TEXT.EMBEDDING_DIM,
        ncf=cfg.GAN.CONDITION_DIM,
        z_dim=cfg.GAN.Z_DIM,
        r_num=cfg.GAN.R_NUM,
        branch_num=cfg.TREE.BRANCH_NUM,
        legacy_mask=legacy_mask,
    )
    return init_weights(net) if init else net


def build_discriminators(cfg: Config, init: bool = True) -> nn.ModuleList:
    """One D per stage (D_NET64, D_NET128, D_NET256 up to TREE.BRANCH_NUM) with GAN.DF_DIM."""
    nets = nn.ModuleList(
        d_net(cfg.GAN.DF_DIM, cfg.TEXT.EMBEDDING_DIM) for d_net in D_NETS[: cfg.TREE.BRANCH_NUM]
    )
    return init_weights(nets) if init else nets


def build_text_encoder(cfg: Config, n_words: int) -> RNN_ENCODER:
    """RNN_ENCODER over ``n_words`` tokens with TEXT.EMBEDDING_DIM outputs and cfg.RNN_TYPE."""
    return RNN_ENCODER(n_words, nhidden=cfg.TEXT.EMBEDDING_DIM, rnn_type=cfg.RNN_TYPE)


def build_image_encoder(cfg: Config) -> CNN_ENCODER:
    """CNN_ENCODER with TEXT.EMBEDDING_DIM outputs (load the Inception weights separately)."""
    return CNN_ENCODER(cfg.TEXT.EMBEDDING_DIM)
