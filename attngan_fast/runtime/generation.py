"""Captions to images with a trained generator: the core that ``generate``, ``eval``, ``serve``
and the training samples share.

    models = load_generation_models("netG_epoch_600.pth", "text_encoder200.pth", vocab)
    prompt = encode_prompt(models.vocab, "this bird has wings that are black and a white belly")
    images, attention = sample_images(models, prompt.ids, n_samples=2, seed=0)

Captions are tokenised as in training; words the vocabulary does not know are left out and
listed (``UnknownWordsWarning`` from ``encode_prompts``; a caption with no known word raises
ValueError). ``run_generator`` draws z and CA_NET's noise from ``seed`` alone, so the same seed
gives the same images on the same kind of device (CUDA's generator draws other numbers than the
CPU's from one seed; with the same noise, both compute the same images).
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from attngan_fast.data.vocab import Vocabulary
from attngan_fast.errors import UsageError
from attngan_fast.models.generator import G_NET
from attngan_fast.models.text_encoder import RNN_ENCODER
from attngan_fast.runtime.networks import load_generator, load_text_encoder

GenerateFn = Callable[[Tensor, Tensor], Tensor]
"""(captions B x T word indices, 0-padded; lengths B) -> images B x 3 x s x s in [-1, 1]."""


class UnknownWordsWarning(UserWarning):
    """Some words of a caption are not in the model's vocabulary and were left out."""


@dataclass
class GenerationModels:
    """What generating needs: G (EMA weights), the DAMSM text encoder and the vocabulary."""

    netG: G_NET
    text_encoder: RNN_ENCODER
    vocab: Vocabulary

    @property
    def device(self) -> torch.device:
        return next(self.netG.parameters()).device

    @property
    def z_dim(self) -> int:
        """Size of G's noise vector z."""
        return self.netG.z_dim

    def to(self, device: str | torch.device) -> GenerationModels:
        self.netG.to(device)
        self.text_encoder.to(device)
        return self


@dataclass
class EncodedPrompt:
    text: str
    ids: list[int]
    words: list[str]  # the known words, in order (what the attention figure shows)
    unknown: list[str]


def encode_prompt(vocab: Vocabulary, text: str) -> EncodedPrompt:
    """Tokenise and encode one caption (unknown words left out and listed); raise ValueError for
    a caption without any known word."""
    enc = vocab.encode(text)
    if not enc.ids:
        detail = f"unknown words: {', '.join(enc.unknown)}" if enc.unknown else "no words"
        raise ValueError(f"caption {text!r} has no word the model knows ({detail})")
    return EncodedPrompt(text, enc.ids, [vocab.ixtoword[i] for i in enc.ids], enc.unknown)


def encode_prompts(vocab: Vocabulary, captions: Sequence[str]) -> list[EncodedPrompt]:
    """``encode_prompt`` on each caption; warn (UnknownWordsWarning) listing each caption's
    unknown words."""
    if not captions:
        raise ValueError("no caption given")
    prompts = []
    for text in captions:
        prompt = encode_prompt(vocab, text)
        if prompt.unknown:
            warnings.warn(
                f"caption {text!r}: {len(prompt.unknown)} word(s) not in the model's vocabulary "
                f"were left out: {', '.join(prompt.unknown)}",
                UnknownWordsWarning,
                stacklevel=2,
            )
        prompts.append(prompt)
    return prompts


@torch.no_grad()
def embed_captions(
    text_encoder: nn.Module, captions: Tensor, cap_lens: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """The text encoder on captions B x T (word indices, 0-padded; lengths B): word embeddings
    B x nef x T', the sentence embedding B x nef and the padding mask B x T' (True = padding),
    T' the longest caption; detached, as G and the DAMSM loss take them."""
    words_embs, sent_emb = text_encoder(captions, cap_lens)
    mask = (captions == 0)[:, : words_embs.shape[2]]
    return words_embs.detach(), sent_emb.detach(), mask


def attention_images(netG: G_NET, images: Sequence[Tensor]) -> list[Tensor]:
    """The image to show each attention map over (one per map, as ``netG`` returns them): the
    image its stage draws, or for G_DCGAN (one image) that image."""
    stages = netG.spec.image_stages
    return [
        images[stages.index(s)] if s in stages else images[-1] for s in netG.spec.attention_stages
    ]


@torch.no_grad()
def generate_images(
    netG: nn.Module,
    text_encoder: nn.Module,
    captions: Tensor,
    cap_lens: Tensor,
    noise: Tensor,
    need_attn: bool = True,
) -> tuple[list[Tensor], list[Tensor]]:
    """G on captions B x T (on G's device) with the noise z B x z_dim given: (images per stage,
    B x 3 x s x s in [-1, 1]; attention maps per stage with attention, B x T' x h x w), on G's
    device. CA_NET draws its own noise from torch's global generator (seed it for repeatable
    images). Every caller that turns captions into images goes through here: ``generate``,
    ``eval``, ``serve`` (``run_generator``) and training's sample grids."""
    words_embs, sent_emb, mask = embed_captions(text_encoder, captions, cap_lens)
    images, att_maps, _, _ = netG(noise, sent_emb, words_embs, mask, need_attn=need_attn)
    return images, att_maps


@torch.no_grad()
def run_generator(
    models: GenerationModels, captions: Tensor, cap_lens: Tensor, seed: int, need_attn: bool = True
) -> tuple[list[Tensor], list[Tensor]]:
    """G on a batch of captions (B x T word indices, 0-padded; lengths B), in eval mode.

    Returns (images per stage, B x 3 x s x s in [-1, 1]; attention maps per stage with attention,
    B x T x h x w), on the CPU. z and CA_NET's noise are drawn inside ``torch.random.fork_rng``
    after ``torch.manual_seed(seed)``: the output depends on nothing else, and the caller's
    random stream is left untouched.
    """
    device = models.device
    captions = captions.to(device)
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        z = torch.randn(len(captions), models.z_dim, device=device)
        fake_imgs, att_maps = generate_images(
            models.netG, models.text_encoder, captions, cap_lens, z, need_attn
        )
    return [x.float().cpu() for x in fake_imgs], [a.float().cpu() for a in att_maps]


def sample_images(
    models: GenerationModels, ids: Sequence[int], n_samples: int = 1, seed: int = 0
) -> tuple[list[Tensor], list[Tensor]]:
    """``n_samples`` images of one caption (word indices): ``run_generator`` on it repeated."""
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    captions = torch.tensor([list(ids)] * n_samples, dtype=torch.long)
    cap_lens = torch.full((n_samples,), len(ids), dtype=torch.long)
    return run_generator(models, captions, cap_lens, seed)


def batch_generate_fn(models: GenerationModels, seed: int = 0) -> GenerateFn:
    """A function (captions B x T, lengths B) -> last-stage images B x 3 x s x s for evaluation.

    The i-th call draws its noise with seed ``seed + i``, so a sequence of calls is reproducible.
    """
    models.netG.eval()
    models.text_encoder.eval()
    calls = itertools.count()

    def generate_batch(captions: Tensor, cap_lens: Tensor) -> Tensor:
        images, _ = run_generator(models, captions, cap_lens, seed + next(calls), need_attn=False)
        return images[-1]

    return generate_batch


def load_generation_models(
    netG_path: str | Path,
    text_encoder_path: str | Path,
    vocab: Vocabulary,
    device: str | torch.device = "cpu",
    legacy_mask: bool = False,
) -> GenerationModels:
    """G from a netG state dict file (EMA weights) and the text encoder from its file."""
    netG = load_generator(netG_path, legacy_mask)
    text_encoder = load_text_encoder(text_encoder_path)
    if text_encoder.ntoken != len(vocab):
        raise UsageError(
            f"the text encoder {text_encoder_path} knows {text_encoder.ntoken} words but the "
            f"vocabulary has {len(vocab)}: they come from different datasets"
        )
    return GenerationModels(netG, text_encoder, vocab).to(device)
