"""The AttnGAN training loop: data, the GAN step, checkpoints, resume, samples and metrics.

    cfg = load_config("bird_attn2.yml")
    train_gan(cfg, GanTrainOptions(out_dir="runs/birds", data_dir="data/birds",
                                   text_encoder="DAMSMencoders/bird/text_encoder200.pth"))

Checkpoints (``<out>/checkpoint.pt``, see ``run_dir``) are written atomically every
``checkpoint_every`` steps, at each epoch's end and at the end; ``resume=True`` continues from
one exactly (bit-for-bit on CPU with ``workers=0``: same parameters, optimiser moments, EMA,
RNG streams and position in the epoch). A non-finite loss stops the run with
``NonFiniteLossError`` naming the loss and step, before anything is saved, so the last
checkpoint on disk is the last good state.
"""

from __future__ import annotations

import math
import random
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as torch_dist

from attngan_fast.config import Config
from attngan_fast.train import checkpoint as ckpt
from attngan_fast.train.data import load_dataset, make_loader
from attngan_fast.train.distributed import (
    DistInfo,
    all_ranks_agree,
    barrier,
    cleanup,
    init_distributed,
)
from attngan_fast.train.encoders import image_encoder_path, load_encoders
from attngan_fast.train.gan_step import GanState, build_gan_state, gan_train_step
from attngan_fast.train.progress import ProgressLogger
from attngan_fast.train.run_dir import RunFiles, save_config, save_vocab, write_json
from attngan_fast.train.sampler import ResumableSampler
from attngan_fast.train.samples import SampleWriter

CHECKPOINT_FORMAT = "attngan-fast/gan-training"


class NonFiniteLossError(RuntimeError):
    """A loss became NaN or infinite; the message names it, the step and the kept checkpoint."""


@dataclass
class GanTrainOptions:
    """Options of a GAN training run beyond the original config (``Config``).

    data_dir / layout: the dataset (``auto`` detects CUB, COCO or folder layout).
    text_encoder / image_encoder: pretrained DAMSM files (default cfg.TRAIN.NET_E and the
    ``image_encoder`` file beside it). max_epochs defaults to cfg.TRAIN.MAX_EPOCH; max_steps
    stops earlier. Snapshots of netG (EMA weights) every cfg.TRAIN.SNAPSHOT_INTERVAL epochs.
    ema_decay 0.999 is the original; short runs look better with less averaging.
    """

    out_dir: str | Path = "runs/attngan"
    data_dir: str | Path | None = None
    layout: str = "auto"
    text_encoder: str | Path | None = None
    image_encoder: str | Path | None = None
    device: str | None = None
    precision: str = "fp32"
    seed: int = 100
    max_epochs: int | None = None
    max_steps: int | None = None
    checkpoint_every: int = 1000
    sample_every: int = 500
    log_every: int = 10
    sample_captions: list[str] = field(default_factory=list)
    samples_per_caption: int = 4
    workers: int = 0
    resume: bool = False
    sync_bn: bool = False
    channels_last: bool = False
    original_damsm_loop: bool = False
    legacy_mask: bool = False
    ema_decay: float = 0.999
    progress: bool = True


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002
    random.seed(seed)


def _gather(obj: Any, info: DistInfo) -> list[Any]:
    """``obj`` of every rank (a collective), or ``[obj]`` in a single process."""
    if not info.enabled:
        return [obj]
    out: list[Any] = [None] * info.world_size
    torch_dist.all_gather_object(out, obj)
    return out


def training_state(state: GanState, sampler: ResumableSampler, epoch: int) -> dict[str, Any]:
    """Everything a resumed run needs (RNG states of every rank: call on every rank)."""
    return {
        "format": CHECKPOINT_FORMAT,
        "version": 1,
        "cfg": state.cfg.to_dict(),
        "precision": state.precision,
        "epoch": epoch,
        "step": state.step,
        "netG": state.generator.state_dict(),
        "netG_ema": state.ema.state_dict_of(state.generator),
        "ema": state.ema.state_dict(),
        "netsD": [d.state_dict() for d in state.discriminators],
        "optimizerG": state.optimizer_g.state_dict(),
        "optimizersD": [o.state_dict() for o in state.optimizers_d],
        "scaler": state.scaler.state_dict() if state.scaler is not None else None,
        "sampler": sampler.state_dict(),
        "rng": _gather(ckpt.rng_state(), state.dist),
    }


def restore_training_state(
    state: GanState, sampler: ResumableSampler, saved: dict[str, Any]
) -> int:
    """Load ``saved`` (``training_state``) into ``state`` and ``sampler``; returns the epoch."""
    if saved.get("format") != CHECKPOINT_FORMAT:
        raise ValueError("not an attngan-fast GAN training checkpoint")
    state.generator.load_state_dict(saved["netG"])
    state.ema.load_state_dict(saved["ema"])
    for d, s in zip(state.discriminators, saved["netsD"], strict=True):
        d.load_state_dict(s)
    state.optimizer_g.load_state_dict(saved["optimizerG"])
    for o, s in zip(state.optimizers_d, saved["optimizersD"], strict=True):
        o.load_state_dict(s)
    if state.scaler is not None and saved["scaler"] is not None:
        state.scaler.load_state_dict(saved["scaler"])
    sampler.load_state_dict(saved["sampler"])
    state.step = int(saved["step"])
    rng = saved["rng"]
    if len(rng) == state.dist.world_size:
        ckpt.set_rng_state(rng[state.dist.rank])
    else:  # a different number of processes: the streams cannot continue, reseed
        seed_everything(int(saved["step"]) * 7919 + state.dist.rank)
    return int(saved["epoch"])


def save_checkpoint(
    state: GanState, sampler: ResumableSampler, epoch: int, files: RunFiles
) -> Path | None:
    """Atomically write ``checkpoint.pt`` and ``Model/netG.pth`` (rank 0; call on every rank)."""
    payload = training_state(state, sampler, epoch)
    path = None
    if state.dist.is_main:
        path = ckpt.save_atomic(payload, files.checkpoint)
        ckpt.save_atomic(payload["netG_ema"], files.netG)
    barrier(state.dist)
    return path


def save_snapshot(state: GanState, epoch: int, files: RunFiles) -> None:
    """The original's model files: ``netG_epoch_E.pth`` (EMA weights) and ``netD{i}.pth``."""
    if not state.dist.is_main:
        return
    ckpt.save_atomic(state.ema.state_dict_of(state.generator), files.netG_epoch(epoch))
    for i, d in enumerate(state.discriminators):
        ckpt.save_atomic(d.state_dict(), files.netD(i))


def check_finite(logs: dict[str, float], step: int, epoch: int, info: DistInfo, kept: str) -> None:
    """Raise NonFiniteLossError when a loss is NaN/inf on any rank (a collective)."""
    bad = {k: v for k, v in logs.items() if not math.isfinite(v)}
    if all_ranks_agree(not bad, info):
        return
    detail = ", ".join(f"{k} = {v}" for k, v in bad.items()) or "on another process"
    raise NonFiniteLossError(
        f"non-finite loss at step {step} (epoch {epoch}): {detail}. Training stopped; {kept}. "
        "Try a lower learning rate, --precision fp32 or bf16, or resume from the checkpoint."
    )


def default_sample_captions(dataset: Any, count: int = 4) -> list[str]:
    """The first caption of ``count`` images spread over the dataset."""
    n = len(dataset)
    picks = sorted({int(i * n / count) for i in range(count)})
    out = []
    for i in picks:
        ids, length = dataset.caption(i, 0)
        out.append(dataset.vocab.decode(ids[:length].tolist()))
    return out


def train_gan(cfg: Config, opts: GanTrainOptions) -> RunFiles:
    """Train AttnGAN as configured; returns the run's files. Works under torchrun (DDP)."""
    info = init_distributed(opts.device)
    try:
        return _train(cfg, opts, info)
    finally:
        cleanup(info)


def _train(cfg: Config, opts: GanTrainOptions, info: DistInfo) -> RunFiles:
    files = RunFiles(Path(opts.out_dir))
    seed_everything(opts.seed + info.rank)
    if opts.data_dir is None:
        raise ValueError("no dataset: pass --data DIR (or set DATA_DIR in the config)")
    dataset = load_dataset(opts.data_dir, cfg, "train", opts.layout)
    text_path = opts.text_encoder or cfg.TRAIN.NET_E
    if not text_path:
        raise ValueError(
            "no DAMSM text encoder: pass --text-encoder FILE (or TRAIN.NET_E in the config); "
            "train one with `attngan-fast pretrain-damsm`"
        )
    text_encoder, image_encoder, spec = load_encoders(text_path, opts.image_encoder)
    if spec.n_words != dataset.n_words:
        raise ValueError(
            f"the text encoder {text_path} knows {spec.n_words} words, the dataset's vocabulary "
            f"has {dataset.n_words}: they come from different datasets"
        )
    state = build_gan_state(
        cfg, dataset.n_words, info.device, opts.precision,
        text_encoder=text_encoder, image_encoder=image_encoder,
        channels_last=opts.channels_last, original_damsm_loop=opts.original_damsm_loop,
        legacy_mask=opts.legacy_mask, dist=info, sync_bn=opts.sync_bn,
    )  # fmt: skip
    state.ema.decay = opts.ema_decay
    sampler = ResumableSampler(
        len(dataset), seed=opts.seed, rank=info.rank, world_size=info.world_size
    )
    epoch = 0
    if opts.resume and files.checkpoint.is_file():
        epoch = restore_training_state(state, sampler, ckpt.load(files.checkpoint, info.device))
    elif opts.resume and info.is_main:
        print(f"no checkpoint at {files.checkpoint}: starting a new run", flush=True)
    if info.is_main:
        save_config(cfg, files.config)
        save_vocab(dataset.vocab, files.vocab)
        files.model_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(text_path, files.text_encoder)
        run_info = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(opts).items()}
        run_info.update(
            text_encoder=str(text_path),
            image_encoder=str(opts.image_encoder or image_encoder_path(text_path)),
            encoder_spec=asdict(spec), world_size=info.world_size, n_words=dataset.n_words,
        )  # fmt: skip
        write_json(run_info, files.run_json)

    batch_size = cfg.TRAIN.BATCH_SIZE
    max_epochs = opts.max_epochs if opts.max_epochs is not None else cfg.TRAIN.MAX_EPOCH
    steps_per_epoch = len(sampler) // batch_size
    max_steps = max_epochs * steps_per_epoch
    if opts.max_steps is not None:
        max_steps = min(max_steps, opts.max_steps)
    writer = None
    if info.is_main and opts.sample_every > 0:
        captions = opts.sample_captions or default_sample_captions(dataset)
        writer = SampleWriter(
            files.samples, dataset.vocab, captions, cfg.TEXT.WORDS_NUM, cfg.GAN.Z_DIM,
            opts.samples_per_caption, seed=opts.seed,
        )  # fmt: skip
    logger = ProgressLogger(
        files.metrics, max_steps, state.step, batch_size * info.world_size,
        enabled=info.is_main, show_bar=opts.progress,
    )  # fmt: skip
    kept = f"the last good checkpoint is {files.checkpoint}"
    try:
        while state.step < max_steps and epoch < max_epochs:
            sampler.set_epoch(epoch)
            loader = make_loader(dataset, sampler, batch_size, opts.workers)
            for batch in loader:
                logs = gan_train_step(state, batch)
                sampler.advance(batch_size)
                check_finite(logs, state.step, epoch, info, kept)
                step = state.step
                if step % opts.log_every == 0 or step == max_steps:
                    logger.log(step, epoch, logs)
                if writer is not None and step % opts.sample_every == 0:
                    writer.write(step, state.generator, state.ema, state.text_encoder)
                if step >= max_steps:
                    break
                if step % opts.checkpoint_every == 0:
                    save_checkpoint(state, sampler, epoch, files)
            else:
                epoch += 1
                sampler.set_epoch(epoch)
                if epoch % cfg.TRAIN.SNAPSHOT_INTERVAL == 0 or epoch == max_epochs:
                    save_snapshot(state, epoch, files)
                save_checkpoint(state, sampler, epoch, files)
                continue
            break
        save_checkpoint(state, sampler, epoch, files)
        save_snapshot(state, epoch, files)
        if writer is not None and state.step % max(1, opts.sample_every) != 0:
            writer.write(state.step, state.generator, state.ema, state.text_encoder)
    finally:
        logger.close()
    return files
