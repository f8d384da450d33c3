"""``attngan-fast generate``: every stage's picture and the attention figure of captions, as files.

    models = load_generation_models("netG_epoch_600.pth", "text_encoder200.pth", vocab)
    written = generate(models, ["this bird has wings that are black and a white belly"], "out/")

The generator's architecture (stages, GF_DIM, residual blocks, embedding sizes) is read from its
state dict, so ``netG_epoch_*.pth`` files of the original code load as well as this package's.
Captions are tokenised as in training; words the vocabulary does not know are reported in an
``UnknownWordsWarning`` (a caption with no known word raises ValueError). The models and the
images come from ``attngan_fast.runtime.generation``, shared with ``eval`` and ``serve``.

Output, per caption ``i`` and sample ``k``: ``{i:03d}_{slug}/sample{k}_stage{s}_{size}px.png`` for
each stage s, and ``{i:03d}_{slug}/sample{k}_attention.png`` (one row per stage with attention:
the stage's image, then each word's attention map over it). Results depend only on the seed, the
caption's position and the sample index (with ``same_noise``, not on the position: every caption
gets the same z).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import torch

from attngan_fast.runtime.generation import (
    GenerationModels,
    attention_images,
    encode_prompts,
    load_generation_models,
    sample_images,
)
from attngan_fast.runtime.run_dir import load_vocabulary, resolve_generation_files
from attngan_fast.viz import save_attention_figure, save_image


def _slug(text: str, limit: int = 40) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:limit] or "caption"


def generate(
    models: GenerationModels,
    captions: Sequence[str],
    out_dir: str | Path,
    n_samples: int = 1,
    seed: int = 0,
    attention: bool = True,
    same_noise: bool = False,
) -> list[Path]:
    """Write every stage's image (and the attention figure) of ``n_samples`` samples per caption
    under ``out_dir``; return the written paths. See the module docstring for the file names.

    ``same_noise``: every caption gets the noise of ``seed`` (z and CA_NET's noise), so captions
    that differ in one word show what that word does; otherwise caption i gets ``seed + i``."""
    models.netG.eval()
    models.text_encoder.eval()
    prompts = encode_prompts(models.vocab, captions)
    out_dir = Path(out_dir)
    written = []
    for i, prompt in enumerate(prompts):
        folder = out_dir / f"{i:03d}_{_slug(prompt.text)}"
        images, att_maps = sample_images(
            models, prompt.ids, n_samples, seed if same_noise else seed + i
        )
        stage_numbers = [i + 1 for i in models.netG.spec.image_stages]
        for k in range(n_samples):
            for s, stage in zip(stage_numbers, images):
                size = stage.shape[-1]
                written.append(save_image(stage[k], folder / f"sample{k}_stage{s}_{size}px.png"))
            if attention and att_maps:
                rows = attention_images(models.netG, images)
                written.append(
                    save_attention_figure(
                        folder / f"sample{k}_attention.png",
                        [img[k] for img in rows],
                        [att[k] for att in att_maps],
                        prompt.words,
                        row_labels=[f"{img.shape[-1]} px" for img in rows],
                    )
                )
        (folder / "caption.txt").write_text(
            f"{prompt.text}\nwords: {' '.join(prompt.words)}\n"
            + (f"unknown: {' '.join(prompt.unknown)}\n" if prompt.unknown else ""),
            encoding="utf-8",
        )
    return written


def generate_from_checkpoint(
    checkpoint: str | Path,
    captions: Sequence[str],
    out_dir: str | Path,
    n_samples: int = 1,
    seed: int = 0,
    device: str | torch.device = "cpu",
    text_encoder: str | Path | None = None,
    vocab: str | Path | None = None,
    attention: bool = True,
    same_noise: bool = False,
) -> list[Path]:
    """``generate`` with the models found by ``resolve_generation_files`` (the CLI's command)."""
    files = resolve_generation_files(checkpoint, text_encoder, vocab)
    models = load_generation_models(
        files.netG, files.text_encoder, load_vocabulary(files.vocab), device, files.legacy_mask
    )
    return generate(models, captions, out_dir, n_samples, seed, attention, same_noise)
