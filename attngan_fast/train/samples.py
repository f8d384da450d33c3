"""Sample grids during training: fixed captions and noise through G with its EMA weights.

Every call uses the same captions and the same z (drawn once from a generator seeded with
``seed``) and draws CA_NET's noise inside ``torch.random.fork_rng``, so writing samples never
changes the training run's random stream (a resumed run stays bit-for-bit).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from attngan_fast.data.vocab import Vocabulary
from attngan_fast.runtime.generation import attention_images, generate_images
from attngan_fast.train.ema import ParamEMA
from attngan_fast.viz import save_attention_figure, save_image_grid


def encode_captions_text(
    vocab: Vocabulary, captions: Sequence[str], words_num: int
) -> tuple[Tensor, Tensor, list[list[str]]]:
    """Captions -> (ids B x T 0-padded, lengths B, known words of each), T = longest kept.

    Unknown words are left out with a warning; a caption without a known word raises ValueError.
    Captions longer than ``words_num`` are cut to their first ``words_num`` known words.
    """
    rows, words = [], []
    for text in captions:
        enc = vocab.encode(text)
        if enc.unknown:
            warnings.warn(
                f"sample caption {text!r}: unknown word(s) left out: {', '.join(enc.unknown)}",
                stacklevel=2,
            )
        if not enc.ids:
            raise ValueError(f"sample caption {text!r} has no word of the vocabulary")
        ids = enc.ids[:words_num]
        rows.append(ids)
        words.append([vocab.ixtoword[i] for i in ids])
    width = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.int64)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
    return ids, torch.tensor([len(r) for r in rows]), words


class SampleWriter:
    """Writes ``samples/step_NNNNNNN.png`` (row i: caption i, ``per_caption`` noise samples at the
    last stage) and ``step_NNNNNNN_attention.png`` (caption 0, first sample), plus the captions."""

    def __init__(
        self,
        folder: str | Path,
        vocab: Vocabulary,
        captions: Sequence[str],
        words_num: int,
        z_dim: int,
        per_caption: int = 4,
        seed: int = 0,
    ) -> None:
        self.folder = Path(folder)
        self.captions = list(captions)
        ids, lens, self.words = encode_captions_text(vocab, self.captions, words_num)
        self.per_caption = per_caption
        self.ids = ids.repeat_interleave(per_caption, 0)
        self.lens = lens.repeat_interleave(per_caption, 0)
        g = torch.Generator().manual_seed(seed)
        self.noise = torch.randn(len(self.ids), z_dim, generator=g)
        self.seed = seed

    @torch.no_grad()
    def generate(
        self, generator: nn.Module, ema: ParamEMA | None, text_encoder: nn.Module
    ) -> tuple[list[Tensor], list[Tensor]]:
        """(images per stage, attention maps per attention stage) of every sample, on the CPU."""
        device = next(generator.parameters()).device
        net = copy.deepcopy(generator)
        if ema is not None:
            net.load_state_dict(ema.state_dict_of(generator))
        net.eval()
        devices = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices, device_type=device.type):
            torch.manual_seed(self.seed)
            ids, lens = self.ids.to(device), self.lens.to(device)
            imgs, atts = generate_images(net, text_encoder, ids, lens, self.noise.to(device))
        return [x.float().cpu() for x in imgs], [a.float().cpu() for a in atts]

    def write(
        self, step: int, generator: nn.Module, ema: ParamEMA | None, text_encoder: nn.Module
    ) -> list[Path]:
        imgs, atts = self.generate(generator, ema, text_encoder)
        stem = self.folder / f"step_{step:07d}"
        written = [save_image_grid(imgs[-1], f"{stem}.png", nrow=self.per_caption)]
        if atts:
            rows = attention_images(generator, imgs)
            written.append(
                save_attention_figure(
                    f"{stem}_attention.png",
                    [img[0] for img in rows],
                    [att[0] for att in atts],
                    self.words[0],
                    row_labels=[f"{img.shape[-1]} px" for img in rows],
                )
            )
        captions_file = self.folder / "captions.txt"
        if not captions_file.exists():
            captions_file.write_text("\n".join(self.captions) + "\n", encoding="utf-8")
        return written
