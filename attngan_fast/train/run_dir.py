"""The files of a training run's output folder (``--out``), and how to find them again.

    <out>/run.json                 options of the run: data, encoders, precision, ...
    <out>/config.yml               the configuration, original yml keys (reusable with --cfg)
    <out>/vocab.json               the vocabulary, index -> word (index 0 = <end>)
    <out>/checkpoint.pt            training state: G, EMA, Ds, optimisers, scaler, RNG, sampler
    <out>/metrics.jsonl            one JSON record per logged step
    <out>/samples/step_NNNNNNN.png sample grids (one row per caption) and *_attention.png figures
    <out>/Model/netG_epoch_E.pth   G with EMA weights, a plain state dict (the original's file)
    <out>/Model/netG.pth           the latest of those; Model/netD{i}.pth the discriminators
    <out>/Model/text_encoder.pth   copy of the frozen text encoder used (generation needs it)

DAMSM pretraining writes ``text_encoder{E}.pth`` / ``image_encoder{E}.pth`` / ``encoders.json``
and ``vocab.json`` into its own ``--out``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from attngan_fast.config import Config
from attngan_fast.data._io import read_json
from attngan_fast.data.vocab import Vocabulary
from attngan_fast.errors import FileFormatError

VOCAB_FILE = "vocab.json"


@dataclass(frozen=True)
class RunFiles:
    root: Path

    @property
    def run_json(self) -> Path:
        return self.root / "run.json"

    @property
    def config(self) -> Path:
        return self.root / "config.yml"

    @property
    def vocab(self) -> Path:
        return self.root / VOCAB_FILE

    @property
    def checkpoint(self) -> Path:
        return self.root / "checkpoint.pt"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def samples(self) -> Path:
        return self.root / "samples"

    @property
    def model_dir(self) -> Path:
        return self.root / "Model"

    @property
    def netG(self) -> Path:
        return self.model_dir / "netG.pth"

    @property
    def text_encoder(self) -> Path:
        return self.model_dir / "text_encoder.pth"

    def netG_epoch(self, epoch: int) -> Path:
        return self.model_dir / f"netG_epoch_{epoch}.pth"

    def netD(self, index: int) -> Path:
        return self.model_dir / f"netD{index}.pth"


def save_vocab(vocab: Vocabulary, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    words = [vocab.ixtoword[i] for i in range(len(vocab))]
    path.write_text(json.dumps(words) + "\n", encoding="utf-8")
    return path


VOCAB_EXPECTS = "vocab.json (written by training) holds the list of words, '<end>' first"


def load_vocab(path: str | Path) -> Vocabulary:
    path = Path(path)
    words = read_json(path, VOCAB_EXPECTS)
    if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
        raise FileFormatError(f"{path}: not a list of words; {VOCAB_EXPECTS}")
    try:
        return Vocabulary(dict(enumerate(words)))
    except ValueError as exc:
        raise FileFormatError(f"{path}: {exc}; {VOCAB_EXPECTS}") from None


def save_config(cfg: Config, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False), encoding="utf-8")
    return path


def write_json(data: dict[str, Any], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    return path
