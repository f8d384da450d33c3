"""The generation service behind DrawingBot: a caption -> every stage's image and each word's
attention map, as base64 PNG in a JSON-ready dict. Needs only the core package.

    engine = DrawingEngine.from_checkpoint("runs/demo/gan")
    result = engine.generate("this bird has a red crown and blue wings", n=2, seed=7)
    result["stages"][-1]["images_png"][0]        # the last stage's first image, base64 PNG

A request is one batch of ``n`` images through ``runtime.generation.run_generator`` (the same
noise and the same images as ``attngan-fast generate`` with this seed). The noise depends on the
seed and ``n`` only, never on the caption: with the same seed, changing one word shows what that
word does.

Limits (``ServeLimits``) keep one client from exhausting memory: at most ``max_n`` images per
request, captions of at most ``max_words`` tokens (the model's ``TEXT.WORDS_NUM``) and
``max_chars`` characters, and at most ``max_pending`` requests running or waiting at once (more are
refused at once with 503). The modules are not thread-safe and the noise is drawn from the seeded
global generator, so one request runs the model at a time (a lock); encoding the PNGs happens
outside the lock.
"""

from __future__ import annotations

import base64
import io
import secrets
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from attngan_fast.config import Config, load_config
from attngan_fast.data.vocab import tokenize
from attngan_fast.runtime.generation import (
    EncodedPrompt,
    GenerationModels,
    encode_prompt,
    load_generation_models,
    run_generator,
)
from attngan_fast.runtime.run_dir import load_vocabulary, resolve_generation_files
from attngan_fast.viz import to_uint8

MAX_SEED = 2**32 - 1
"""Seeds are 0..MAX_SEED (exact in JavaScript numbers; torch.manual_seed takes them)."""


@dataclass(frozen=True)
class ServeLimits:
    """What one request may ask for, and how many requests may be in the server at once."""

    max_n: int = 8
    max_words: int = Config().TEXT.WORDS_NUM
    max_chars: int = 1000
    max_pending: int = 4

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")


class RequestError(Exception):
    """A request the engine refuses: HTTP ``status``, a stable ``code`` and a readable message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def png_base64(pixels: np.ndarray) -> str:
    """uint8 H x W x 3 (RGB) or H x W (grey) -> PNG, base64 (ASCII)."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=3)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def attention_pixels(att: Tensor) -> np.ndarray:
    """Attention maps T x h x w -> uint8 T x h x w, each map rescaled to 0..255 by its minimum
    and maximum (as ``viz.overlay_attention`` does; a uniform map gives 0)."""
    a = att.detach().float().cpu()
    low = a.amin(dim=(1, 2), keepdim=True)
    a = (a - low) / (a.amax(dim=(1, 2), keepdim=True) - low).clamp_min(1e-12)
    return (a * 255).round().to(torch.uint8).numpy()


class DrawingEngine:
    """Generation requests on one loaded model, safe to call from many threads."""

    def __init__(
        self, models: GenerationModels, limits: ServeLimits | None = None, name: str = "model"
    ) -> None:
        self.models = models
        self.limits = limits or ServeLimits()
        self.name = name
        models.netG.eval()
        models.text_encoder.eval()
        self._slots = threading.BoundedSemaphore(self.limits.max_pending)
        self._model_lock = threading.Lock()

    @classmethod
    def from_checkpoint(
        cls,
        checkpoint: str | Path,
        text_encoder: str | Path | None = None,
        vocab: str | Path | None = None,
        device: str | torch.device | None = None,
        *,
        max_n: int = ServeLimits.max_n,
        max_pending: int = ServeLimits.max_pending,
        max_words: int | None = None,
        max_chars: int = ServeLimits.max_chars,
        legacy_mask: bool = False,
    ) -> DrawingEngine:
        """Load a training run's folder (or a netG file with ``text_encoder`` and ``vocab``), as
        ``attngan-fast generate --checkpoint`` does; device default: the GPU when there is one.
        ``max_words`` default: the run's ``TEXT.WORDS_NUM`` (its config.yml), else 18.
        ``legacy_mask``: the original's attention-mask bug, for the original's checkpoints (a
        run that was trained with it says so in its run.json)."""
        files = resolve_generation_files(checkpoint, text_encoder, vocab)
        dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
        models = load_generation_models(
            files.netG, files.text_encoder, load_vocabulary(files.vocab), dev,
            legacy_mask or files.legacy_mask,
        )  # fmt: skip
        if max_words is None:
            config = files.netG.parent.parent / "config.yml"
            max_words = load_config(config).TEXT.WORDS_NUM if config.is_file() else None
        limits = ServeLimits(max_n, max_words or ServeLimits.max_words, max_chars, max_pending)
        path = Path(checkpoint)
        return cls(models, limits, name=path.name if path.is_dir() else path.stem)

    def warm_up(self) -> None:
        """Generate one image once (on a GPU the first call compiles the fused kernels)."""
        with self._model_lock:
            one = torch.ones(1, dtype=torch.long)
            run_generator(self.models, one[:, None], one, 0)

    # --- description --------------------------------------------------------------------------

    def stage_sizes(self) -> list[int]:
        """Image side of each image G draws (64, 128, 256 for a 3-stage G; one for G_DCGAN)."""
        return list(self.models.netG.image_sizes)

    def attention_stages(self) -> list[int]:
        """For each attention map G returns, the (1-based) stage of the image it is shown over."""
        spec = self.models.netG.spec
        stages = spec.image_stages
        return [
            (stages.index(s) if s in stages else len(stages) - 1) + 1 for s in spec.attention_stages
        ]

    def info(self) -> dict[str, Any]:
        """What ``GET /api/health`` reports: the model, the device, the ops' backend, the limits."""
        from attngan_fast.ops import resolve_backend

        device = self.models.device
        return {
            "model": {
                "name": self.name,
                "stages": self.stage_sizes(),
                "attention_stages": self.attention_stages(),
                "vocabulary_size": len(self.models.vocab),
                "z_dim": self.models.z_dim,
            },
            "device": str(device),
            "attention_backend": resolve_backend("word_attention", device),
            "limits": asdict(self.limits),
        }

    # --- requests -----------------------------------------------------------------------------

    def check(self, caption: str, n: int, seed: int | None) -> EncodedPrompt:
        """Validate a request; its encoded caption, or RequestError (422) saying what is wrong."""
        lim = self.limits
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise RequestError(422, "invalid_n", f"n must be a whole number >= 1, got {n!r}")
        if n > lim.max_n:
            raise RequestError(
                422, "n_too_large", f"n = {n} images: this server makes at most {lim.max_n}"
            )
        if seed is not None and not 0 <= seed <= MAX_SEED:
            raise RequestError(422, "invalid_seed", f"seed must be in 0..{MAX_SEED}, got {seed}")
        if not caption.strip():
            raise RequestError(422, "empty_caption", "the caption is empty")
        if len(caption) > lim.max_chars:
            raise RequestError(
                422,
                "caption_too_long",
                f"the caption has {len(caption)} characters; at most {lim.max_chars}",
            )
        tokens = tokenize(caption)
        if not tokens:
            raise RequestError(422, "empty_caption", "the caption has no words")
        if len(tokens) > lim.max_words:
            raise RequestError(
                422,
                "caption_too_long",
                f"the caption has {len(tokens)} words; the model takes at most {lim.max_words}",
            )
        try:
            return encode_prompt(self.models.vocab, caption)
        except ValueError:
            raise RequestError(
                422,
                "no_known_word",
                f"no word of the caption is in the model's vocabulary: {', '.join(tokens)}",
            ) from None

    def generate(
        self, caption: str, n: int = 1, seed: int | None = None, same_noise: bool = True
    ) -> dict[str, Any]:
        """Generate ``n`` images of ``caption``. With ``same_noise`` and a ``seed`` the noise is
        that seed's; otherwise a fresh seed is drawn (returned as ``seed``).

        Result: caption, seed, n, tokens (the words the model used), unknown (words left out),
        stages [{stage, size, images_png: n base64 PNG}], attention [{stage, size, map_size,
        maps_png: n lists of one base64 grey PNG per token}], device, seconds (model time).
        Raises RequestError: 422 for a bad request, 503 when ``max_pending`` are already in.
        """
        prompt = self.check(caption, n, seed)
        if seed is None or not same_noise:
            seed = secrets.randbelow(MAX_SEED + 1)
        if not self._slots.acquire(blocking=False):
            raise RequestError(
                503,
                "busy",
                f"{self.limits.max_pending} requests are already running or waiting; retry later",
            )
        try:
            with self._model_lock:
                start = time.perf_counter()
                captions = torch.tensor([prompt.ids] * n, dtype=torch.long)
                lens = torch.full((n,), len(prompt.ids), dtype=torch.long)
                images, att_maps = run_generator(self.models, captions, lens, seed)
                seconds = time.perf_counter() - start
            return self._result(prompt, seed, n, images, att_maps, seconds)
        finally:
            self._slots.release()

    def _result(
        self,
        prompt: EncodedPrompt,
        seed: int,
        n: int,
        images: list[Tensor],
        att_maps: list[Tensor],
        seconds: float,
    ) -> dict[str, Any]:
        words = len(prompt.ids)
        return {
            "caption": prompt.text,
            "seed": seed,
            "n": n,
            "tokens": prompt.words,
            "unknown": prompt.unknown,
            "stages": [
                {
                    "stage": s,
                    "size": stage.shape[-1],
                    "images_png": [png_base64(x) for x in to_uint8(stage)],
                }
                for s, stage in enumerate(images, 1)
            ],
            "attention": [
                {
                    "stage": s,
                    "size": images[s - 1].shape[-1],
                    "map_size": list(att.shape[-2:]),
                    "maps_png": [
                        [png_base64(m) for m in attention_pixels(att[k, :words])] for k in range(n)
                    ],
                }
                for s, att in zip(self.attention_stages(), att_maps)
            ],
            "device": str(self.models.device),
            "seconds": round(seconds, 4),
        }
