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
and ``vocab.json`` into its own ``--out``. ``resolve_generation_files`` finds what generating
needs (G, text encoder, vocabulary) in a run folder, or beside the original code's files.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from attngan_fast.config import Config
from attngan_fast.data._io import read_json
from attngan_fast.data.captions import load_captions_pickle
from attngan_fast.data.vocab import Vocabulary
from attngan_fast.errors import FileFormatError, OutputExistsError, UsageError

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

    def outputs(self) -> list[Path]:
        """The files of this folder a training run wrote (and ``overwrite`` removes); other
        files in it are left alone."""
        fixed = [self.run_json, self.config, self.vocab, self.checkpoint, self.metrics]
        fixed += [self.netG, self.text_encoder]
        found = [p for p in fixed if p.is_file()]
        for folder, pattern in (
            (self.samples, "step_*.png"),
            (self.model_dir, "netG_epoch_*.pth"),
            (self.model_dir, "netD*.pth"),
            (self.root, ".checkpoint.pt.*.tmp"),  # saves killed half-way (save_atomic)
            (self.model_dir, ".*.pth.*.tmp"),
        ):
            found += sorted(p for p in folder.glob(pattern) if p.is_file())
        return found


def damsm_outputs(root: str | Path) -> list[Path]:
    """The files of a DAMSM pretraining folder (``pretrain_damsm``'s ``out_dir``) that exist."""
    root = Path(root)
    names = ("encoders.json", VOCAB_FILE, "metrics.jsonl", "best_encoders.json")
    found = [root / n for n in names if (root / n).is_file()]
    for pattern in ("text_encoder*.pth", "image_encoder*.pth", ".*_encoder*.pth.*.tmp"):
        found += sorted(p for p in root.glob(pattern) if p.is_file())
    return found


def claim_output_dir(
    root: Path, existing: list[Path], what: str, *, overwrite: bool, resume: bool = False
) -> list[Path]:
    """Check that a run may write into ``root``, which holds the ``existing`` outputs of an
    earlier one; returns the files to delete first (``overwrite``), else ``[]``.

    Raises:
        OutputExistsError: ``existing`` is not empty and neither ``resume`` nor ``overwrite``.
        UsageError: both ``resume`` and ``overwrite``.
    """
    if resume and overwrite:
        raise UsageError(
            "--resume continues the run in --out, --overwrite starts it again: give one of them"
        )
    if not existing or resume:
        return []
    if overwrite:
        return existing
    names = ", ".join(str(p.relative_to(root)) for p in existing[:3])
    more = f" and {len(existing) - 3} more" if len(existing) > 3 else ""
    resume_hint = "--resume to continue it, " if what == "a training run" else ""
    raise OutputExistsError(
        f"{root} already holds {what} ({names}{more}): pass {resume_hint}--overwrite to replace "
        "its files, or choose another --out"
    )


def remove_files(paths: list[Path]) -> None:
    """Delete ``paths`` (files that an earlier run wrote; see ``claim_output_dir``)."""
    for path in paths:
        path.unlink(missing_ok=True)


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


@dataclass
class GenerationFiles:
    """Where a trained model's parts are: G (EMA weights), text encoder, vocabulary."""

    netG: Path
    text_encoder: Path
    vocab: Path
    legacy_mask: bool = False


def _latest(folder: Path, pattern: str) -> Path | None:
    """The file matching ``pattern`` (one ``*``) with the largest number in it, if any."""
    found = []
    for path in folder.glob(pattern):
        digits = re.findall(r"\d+", path.stem)
        found.append((int(digits[-1]) if digits else -1, path.name, path))
    return max(found)[2] if found else None


def _first(candidates: Sequence[Path | None]) -> Path | None:
    return next((p for p in candidates if p is not None and p.is_file()), None)


def resolve_generation_files(
    checkpoint: str | Path,
    text_encoder: str | Path | None = None,
    vocab: str | Path | None = None,
) -> GenerationFiles:
    """Find G, the text encoder and the vocabulary from ``checkpoint``.

    ``checkpoint`` is a training run's folder (``Model/netG.pth`` or the latest
    ``Model/netG_epoch_*.pth``, ``Model/text_encoder.pth``, ``vocab.json``), its ``Model`` folder,
    or a netG file (original ``netG_epoch_600.pth`` included). ``text_encoder`` (a
    ``text_encoder*.pth``) and ``vocab`` (``vocab.json`` or the original's ``captions.pickle``)
    override what is found; for original checkpoints give both.
    """
    path = Path(checkpoint)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no checkpoint file or folder there")
    if path.is_file():
        netG, model_dir = path, path.parent
    else:
        model_dir = path / "Model" if (path / "Model").is_dir() else path
        netG = _first([model_dir / "netG.pth", _latest(model_dir, "netG_epoch_*.pth")])
        if netG is None:
            raise FileNotFoundError(
                f"{path}: no generator there (expected Model/netG.pth or Model/netG_epoch_N.pth "
                "of a training run, or pass the netG file itself)"
            )
    roots = [model_dir, model_dir.parent]
    text = Path(text_encoder) if text_encoder is not None else _first(
        [model_dir / "text_encoder.pth", *(_latest(r, "text_encoder*.pth") for r in roots)]
    )  # fmt: skip
    if text is None:
        raise FileNotFoundError(
            f"no text encoder found beside {netG}: pass --text-encoder text_encoderN.pth"
        )
    voc = Path(vocab) if vocab is not None else _first(
        [r / name for r in roots for name in ("vocab.json", "captions.pickle")]
    )  # fmt: skip
    if voc is None:
        raise FileNotFoundError(
            f"no vocabulary found beside {netG}: pass --vocab vocab.json (written by training) "
            "or the dataset's captions.pickle"
        )
    return GenerationFiles(netG, text, voc, run_legacy_mask(RunFiles(model_dir.parent)))


def run_legacy_mask(run: RunFiles) -> bool:
    """Whether the run was trained with the original's attention mask (``legacy_mask`` in its
    run.json; False without a run.json)."""
    if not run.run_json.is_file():
        return False
    info = read_json(run.run_json, "run.json (written by training) records the run's options")
    return bool(info.get("legacy_mask", False)) if isinstance(info, dict) else False


def load_vocabulary(path: str | Path) -> Vocabulary:
    """A vocabulary from ``vocab.json`` (training runs) or a ``captions.pickle`` (datasets)."""
    path = Path(path)
    if path.suffix == ".json":
        return load_vocab(path)
    return load_captions_pickle(path).vocab
