"""Run a sweep: train every setting with the same budget and seed, evaluate it, write the table.

    result = run_sweep("lambda", SweepOptions(out_dir="runs/experiments", budget=300))
    result.table_md, result.table_json, result.plot     # <out>/lambda.md, .json, .png

Under ``out_dir``:

    data/                    SynthBirds (made when no --data is given)
    damsm/                   DAMSM encoders (pretrained when no --text-encoder is given; the
                             best epoch on the test split is used)
    attribute_classifier.pt  SynthBirds part-colour classifier (trained once)
    runs/<setting>/          each setting's training run (checkpoint.pt, Model/netG.pth, ...)
    results/<setting>.json   each setting's scores, train time and load
    <sweep>.md / .json / .png  the table and the plot

Resumable at every level: a setting whose results match the budget, seed and sizes is not
touched again; a setting whose training stopped continues from its checkpoint (``train
--resume``; checkpoints every ``Sizes.checkpoint_every`` steps); the data, the encoders and the
classifier are made once. A setting shared by two sweeps (AttnGAN1, lambda 5) is trained once
per output folder.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from attngan_fast.config import Config, config_from_dict, preset
from attngan_fast.data.synth_birds import ATTRIBUTES_FILE, make_synth_birds
from attngan_fast.errors import UsageError
from attngan_fast.eval.attribute_accuracy import evaluate_synth_birds
from attngan_fast.eval.inception_metrics import inception_metrics, load_inception
from attngan_fast.eval.r_precision import caption_choice, evaluate_r_precision
from attngan_fast.experiment.report import write_report
from attngan_fast.experiment.settings import SIZES, SWEEPS, Setting, Sizes
from attngan_fast.runtime.generation import (
    GenerateFn,
    batch_generate_fn,
    load_generation_models,
)
from attngan_fast.runtime.loaders import load_dataset
from attngan_fast.runtime.networks import image_encoder_path, load_encoders
from attngan_fast.runtime.retrieval import pad_captions
from attngan_fast.runtime.run_dir import RunFiles, load_vocab, write_json
from attngan_fast.train.damsm_eval import BEST_FILE, BEST_IMAGE, BEST_TEXT
from attngan_fast.train.gan_trainer import GanTrainOptions, train_gan
from attngan_fast.train.pretrain_damsm import PretrainOptions, pretrain_damsm

STATE_FILE = "experiment.json"


@dataclass
class SweepOptions:
    """Where and how a sweep runs.

    data_dir / layout: the dataset (None: SynthBirds made in ``out_dir/data``). text_encoder /
    image_encoder: pretrained DAMSM files (None: pretrained in ``out_dir/damsm``). size: a key of
    ``SIZES``; budget: steps per setting (default the size's). only: the names of the settings to
    run (default all). inception_weights: a local Inception-v3 state dict for IS and FID.
    """

    out_dir: str | Path = "runs/experiments"
    data_dir: str | Path | None = None
    layout: str = "auto"
    text_encoder: str | Path | None = None
    image_encoder: str | Path | None = None
    size: str = "cpu"
    budget: int | None = None
    seed: int = 0
    device: str | None = None
    inception_weights: str | Path | None = None
    only: Sequence[str] = field(default_factory=tuple)
    progress: bool = True


@dataclass
class SweepResult:
    rows: list[dict[str, Any]]
    table_md: Path
    table_json: Path
    plot: Path | None


def sweep_settings(name: str, only: Sequence[str] = ()) -> list[Setting]:
    """The settings of sweep ``name`` (those named in ``only``, when given)."""
    if name not in SWEEPS:
        raise UsageError(f"unknown experiment {name!r}; choose one of {', '.join(SWEEPS)}")
    settings = list(SWEEPS[name])
    unknown = sorted(set(only) - {s.name for s in settings})
    if unknown:
        names = ", ".join(s.name for s in settings)
        raise UsageError(f"experiment {name} has no setting {unknown[0]!r}; its settings: {names}")
    return [s for s in settings if not only or s.name in only]


def setting_config(setting: Setting, sizes: Sizes, embedding_dim: int) -> Config:
    """The setting's preset with the sweep's sizes (widths, batch, learning rate) and its
    lambda; one loader process (WORKERS 0), so that a resumed run is the uninterrupted one."""
    train: dict[str, Any] = {
        "BATCH_SIZE": sizes.batch, "GENERATOR_LR": sizes.lr, "DISCRIMINATOR_LR": sizes.lr,
        "MAX_EPOCH": 1_000_000, "SNAPSHOT_INTERVAL": 1_000_000,
    }  # fmt: skip
    if setting.lambda_ is not None:
        train["SMOOTH"] = {"LAMBDA": setting.lambda_}
    values = {
        "WORKERS": 0,
        "GAN": {"GF_DIM": sizes.ngf, "DF_DIM": sizes.ndf, "R_NUM": sizes.r_num},
        "TEXT": {"EMBEDDING_DIM": embedding_dim},
        "TRAIN": train,
    }
    return config_from_dict(values, preset(setting.preset))


def run_sweep(name: str, opts: SweepOptions, log: Callable[[str], None] = print) -> SweepResult:
    """Train and evaluate every setting of sweep ``name`` (skipping what is done), then write
    the table (Markdown and JSON) and the plot."""
    settings = sweep_settings(name, opts.only)
    if opts.size not in SIZES:
        raise UsageError(f"unknown size {opts.size!r}; choose one of {', '.join(SIZES)}")
    sizes = SIZES[opts.size]
    budget = opts.budget if opts.budget is not None else sizes.budget
    if budget < 1:
        raise UsageError(f"--budget must be >= 1 step, got {budget}")
    out = Path(opts.out_dir)
    device = opts.device or ("cuda" if torch.cuda.is_available() else "cpu")
    data = _dataset(opts, sizes, out, log)
    text_path, image_path = _encoders(opts, sizes, data, out, device, log)
    key = {
        "sweep_sizes": opts.size, "sizes": asdict(sizes), "budget": budget, "seed": opts.seed,
        "data": str(data), "text_encoder": str(text_path),
    }  # fmt: skip
    rows = []
    for setting in settings:
        result_file = out / "results" / f"{setting.name}.json"
        record = _read_json(result_file)
        if record is None or record.get("key") != key:
            record = _run_setting(setting, sizes, budget, opts, data, text_path, image_path, out,
                                  device, key, log)  # fmt: skip
            write_json(record, result_file)
        else:
            log(f"{setting.name}: done before (results/{setting.name}.json)")
        rows.append(record)
    md, js, plot = write_report(name, rows, out, log)
    return SweepResult(rows, md, js, plot)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _dataset(opts: SweepOptions, sizes: Sizes, out: Path, log: Callable[[str], None]) -> Path:
    """The dataset folder: the given one, else SynthBirds made once in ``out/data``."""
    if opts.data_dir is not None:
        return Path(opts.data_dir)
    data = out / "data"
    if not (data / ATTRIBUTES_FILE).is_file():
        log(f"making SynthBirds in {data} ({sizes.n_train} train, {sizes.n_test} test images)")
        make_synth_birds(
            data, sizes.n_train, sizes.n_test, seed=opts.seed, image_size=sizes.image_size,
            overwrite=True,
        )  # fmt: skip
    return data


def _encoders(
    opts: SweepOptions, sizes: Sizes, data: Path, out: Path, device: str,
    log: Callable[[str], None],
) -> tuple[Path, Path]:  # fmt: skip
    """(text, image) encoder files: the given ones, else DAMSM pretrained once in out/damsm
    (small image encoder; the epoch that retrieved best on the test split);
    ``damsm/experiment.json`` marks a finished pretraining."""
    if opts.text_encoder is not None:
        text = Path(opts.text_encoder)
        return text, Path(opts.image_encoder) if opts.image_encoder else image_encoder_path(text)
    folder = out / "damsm"
    done = _read_json(folder / STATE_FILE)
    if done is not None and Path(done["text_encoder"]).is_file():
        return Path(done["text_encoder"]), Path(done["image_encoder"])
    log(f"pretraining DAMSM in {folder} ({sizes.damsm_steps} steps)")
    cfg = config_from_dict(
        {
            "WORKERS": 0,
            "TREE": {"BRANCH_NUM": 1, "BASE_SIZE": sizes.small_size},
            "TEXT": {"EMBEDDING_DIM": sizes.embedding_dim},
            "TRAIN": {
                "BATCH_SIZE": sizes.damsm_batch, "ENCODER_LR": sizes.damsm_lr,
                "MAX_EPOCH": 1_000_000, "SNAPSHOT_INTERVAL": 1_000_000,
            },
        },
        preset("damsm_birds"),
    )  # fmt: skip
    text, image = pretrain_damsm(
        cfg,
        PretrainOptions(
            out_dir=folder, data_dir=data, layout=opts.layout, image_encoder="small",
            small_ndf=sizes.small_ndf, small_size=sizes.small_size, device=device,
            seed=opts.seed, max_steps=sizes.damsm_steps, progress=opts.progress,
            log_every=10, overwrite=True,
        ),
    )  # fmt: skip
    best = folder / BEST_FILE  # the epoch that retrieved best on the test split, if scored
    if best.is_file():
        text, image = folder / BEST_TEXT, folder / BEST_IMAGE
        log(f"DAMSM encoders: the best epoch on the test split ({best})")
    write_json({"text_encoder": str(text), "image_encoder": str(image)}, folder / STATE_FILE)
    return text, image


def _run_setting(
    setting: Setting, sizes: Sizes, budget: int, opts: SweepOptions, data: Path, text: Path,
    image: Path, out: Path, device: str, key: dict[str, Any], log: Callable[[str], None],
) -> dict[str, Any]:  # fmt: skip
    """Train (or continue) one setting to ``budget`` steps, evaluate it, return its record."""
    text_encoder, image_encoder, _ = load_encoders(text, image)
    cfg = setting_config(setting, sizes, text_encoder.nhidden * text_encoder.num_directions)
    files = RunFiles(out / "runs" / setting.name)
    state = _read_json(files.root / STATE_FILE) or {}
    load_before = os.getloadavg()[0]
    if state.get("steps") != budget or not files.netG.is_file():
        log(f"{setting.name}: training {budget} steps in {files.root}")
        started, done = time.perf_counter(), False
        try:
            train_gan(
                cfg,
                GanTrainOptions(
                    out_dir=files.root, data_dir=data, layout=opts.layout, text_encoder=text,
                    image_encoder=image, device=device, seed=opts.seed, max_steps=budget,
                    checkpoint_every=sizes.checkpoint_every, sample_every=budget, log_every=10,
                    ema_decay=sizes.ema_decay, progress=opts.progress, resume=True,
                ),
            )  # fmt: skip
            done = True
        finally:  # an interrupted session's time counts too (its steps since the last
            # checkpoint are trained again)
            sessions = [*state.get("sessions", []), round(time.perf_counter() - started, 1)]
            state = {"steps": budget if done else state.get("steps"), "sessions": sessions}
            write_json(state, files.root / STATE_FILE)
    log(f"{setting.name}: evaluating")
    started = time.perf_counter()
    scores = evaluate_setting(files, cfg, sizes, opts, data, text_encoder, image_encoder, out,
                              device)  # fmt: skip
    return {
        "key": key,
        "setting": setting.name,
        "label": setting.label,
        "preset": setting.preset,
        "lambda": cfg.TRAIN.SMOOTH.LAMBDA,
        "steps": budget,
        "batch": sizes.batch,
        "train_seconds": sum(state.get("sessions", [])),
        "train_sessions": len(state.get("sessions", [])),
        "eval_seconds": round(time.perf_counter() - started, 1),
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "talk_is": setting.talk_is,
        "talk_r_precision": setting.talk_r_precision,
        **scores,
    }


def evaluate_setting(
    files: RunFiles, cfg: Config, sizes: Sizes, opts: SweepOptions, data: Path,
    text_encoder: torch.nn.Module, image_encoder: torch.nn.Module, out: Path, device: str,
) -> dict[str, Any]:  # fmt: skip
    """R-precision (the run's DAMSM encoders, DM-GAN's protocol on the test split), SynthBirds
    attribute accuracy when the data has attributes, IS / FID with Inception weights."""
    models = load_generation_models(files.netG, files.text_encoder, load_vocab(files.vocab), device)
    test = load_dataset(data, cfg, "test", opts.layout, augment=False)
    rp = evaluate_r_precision(
        batch_generate_fn(models, opts.seed), image_encoder.to(device).eval(),
        text_encoder.to(device).eval(), test.captions, test.class_ids, test.captions_per_image,
        sizes.eval_images, sizes.candidates, sizes.folds, sizes.eval_batch, opts.seed,
    )  # fmt: skip
    scores: dict[str, Any] = {
        "r_precision": rp.mean, "r_precision_std": rp.std, "r_precision_images": len(rp.hits),
        "r_precision_candidates": sizes.candidates,
    }  # fmt: skip
    if (data / ATTRIBUTES_FILE).is_file():
        result = evaluate_synth_birds(
            data, batch_generate_fn(models, opts.seed), out / "attribute_classifier.pt",
            "test", sizes.attribute_per_image, sizes.eval_batch,
            steps=sizes.classifier_steps, device=device,
        )  # fmt: skip
        scores.update(
            attribute_accuracy=100 * result.score.accuracy,
            attribute_per_part={k: 100 * v for k, v in result.score.per_part.items()},
            classifier_held_out=100 * (result.classifier.held_out_accuracy or 0.0),
        )
    if opts.inception_weights is not None:
        inception = load_inception(opts.inception_weights, device)
        chosen = caption_choice(
            sizes.eval_images, len(test), test.captions_per_image, opts.seed
        ).tolist()
        fakes = _generated(batch_generate_fn(models, opts.seed), test.captions, chosen,
                           sizes.eval_batch)  # fmt: skip
        step = sizes.eval_batch
        reals = (
            torch.stack([test[i].images[-1] for i in range(s, min(s + step, len(test)))])
            for s in range(0, len(test), step)
        )
        metrics = inception_metrics(inception, fakes, reals)
        scores.update(
            inception_score=metrics.inception_score.mean,
            inception_score_std=metrics.inception_score.std,
            fid=metrics.fid,
        )
    return scores


def _generated(
    generate_fn: GenerateFn, captions: Sequence[Sequence[int]], chosen: list[int], batch: int
) -> Iterator[Tensor]:
    for start in range(0, len(chosen), batch):
        yield generate_fn(*pad_captions([captions[i] for i in chosen[start : start + batch]]))
