"""The AttnGAN training loop: data, the GAN step, checkpoints, resume, samples and metrics.

    cfg = load_config("bird_attn2.yml")
    train_gan(cfg, GanTrainOptions(out_dir="runs/birds", data_dir="data/birds",
                                   text_encoder="DAMSMencoders/bird/text_encoder200.pth"))

Checkpoints (``<out>/checkpoint.pt``, see ``run_dir``) are written atomically every
``checkpoint_every`` steps, at each epoch's end and at the end; ``resume=True`` continues from
one exactly (bit-for-bit on CPU with ``workers=0``: same parameters, optimiser moments, EMA,
RNG streams and position in the epoch). A resumed run must build the same model (else
``UsageError``); a changed learning rate, EMA decay or other training setting is applied and
printed. ``metrics.jsonl`` is cut back to the checkpoint's step, so redone steps are not listed
twice. An output folder that already holds a run is refused unless ``resume`` or ``overwrite``
(which deletes only the run's own files, ``RunFiles.outputs``).

A non-finite loss stops the run with ``NonFiniteLossError`` naming the loss and step, before
anything is saved. Weights are checked finite before every save (a NaN gradient can poison G and
its EMA a step before any loss shows it: ``NonFiniteWeightsError``), so a checkpoint on disk is
always a good state; the messages name the last checkpoint only if there is one.
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as torch_dist

from attngan_fast.config import Config, check_supported
from attngan_fast.errors import (
    FileFormatError,
    NonFiniteLossError,
    NonFiniteWeightsError,
    UsageError,
)
from attngan_fast.runtime import checkpoint as ckpt
from attngan_fast.runtime.loaders import load_dataset, make_loader
from attngan_fast.runtime.networks import (
    encoder_spec_beside,
    image_encoder_path,
    load_encoders,
    load_text_encoder,
    training_objective,
)
from attngan_fast.runtime.run_dir import (
    RunFiles,
    claim_output_dir,
    remove_files,
    save_config,
    save_vocab,
    write_json,
)
from attngan_fast.runtime.sampler import ResumableSampler
from attngan_fast.runtime.seeding import rng_state, seed_everything, set_rng_state
from attngan_fast.train.checks import check_minimums, full_batches
from attngan_fast.train.distributed import (
    DistInfo,
    all_ranks_agree,
    barrier,
    cleanup,
    init_distributed,
)
from attngan_fast.train.gan_step import GanState, build_gan_state, compile_models, gan_train_step
from attngan_fast.train.precision import resolve_precision
from attngan_fast.train.progress import ProgressLogger, device_summary, truncate_metrics
from attngan_fast.train.samples import SampleWriter

CHECKPOINT_FORMAT = "attngan-fast/gan-training"


# Config keys that shape the networks: a resumed run must have the same values as its checkpoint.
MODEL_KEYS = (
    "TREE.BRANCH_NUM", "TREE.BASE_SIZE", "GAN.GF_DIM", "GAN.DF_DIM", "GAN.Z_DIM",
    "GAN.CONDITION_DIM", "GAN.R_NUM", "GAN.B_ATTENTION", "GAN.B_DCGAN", "GAN.CONDITIONING",
    "TEXT.EMBEDDING_DIM", "TRAIN.B_NET_D",
)  # fmt: skip
# Config keys a resumed run may change (printed when it does); the rest do not affect training.
TRAINING_KEYS = (
    "TRAIN.BATCH_SIZE", "TRAIN.MAX_EPOCH", "TRAIN.SNAPSHOT_INTERVAL", "TRAIN.GENERATOR_LR",
    "TRAIN.DISCRIMINATOR_LR", "TRAIN.SMOOTH.GAMMA1", "TRAIN.SMOOTH.GAMMA2",
    "TRAIN.SMOOTH.GAMMA3", "TRAIN.SMOOTH.LAMBDA", "TRAIN.COEFF.KL", "TRAIN.COEFF.COLOR_LOSS",
    "TRAIN.COEFF.INTERPOLATION", "TEXT.WORDS_NUM", "TEXT.CAPTIONS_PER_IMAGE",
)  # fmt: skip
# The command-line flag of a key, for messages.
FLAGS = {
    "TREE.BRANCH_NUM": "--branches", "GAN.GF_DIM": "--ngf", "GAN.DF_DIM": "--ndf",
    "TRAIN.BATCH_SIZE": "--batch-size", "TRAIN.GENERATOR_LR": "--lr",
    "TRAIN.DISCRIMINATOR_LR": "--lr", "TRAIN.MAX_EPOCH": "--epochs",
}  # fmt: skip


# --augment: (random crop, left-right mirror) of the training images
AUGMENTATIONS = {"full": (True, True), "crop": (True, False), "none": (False, False)}


@dataclass
class GanTrainOptions:
    """Options of a GAN training run beyond the original config (``Config``).

    data_dir / layout: the dataset (``auto`` detects CUB, COCO or folder layout).
    text_encoder / image_encoder: pretrained DAMSM files (default cfg.TRAIN.NET_E and the
    ``image_encoder`` file beside it; without a DAMSM term, LAMBDA 0, the image encoder is not
    loaded, only named in run.json for evaluation). max_epochs defaults to cfg.TRAIN.MAX_EPOCH;
    max_steps stops earlier. Snapshots of netG (EMA weights) every cfg.TRAIN.SNAPSHOT_INTERVAL
    epochs. ema_decay 0.999 is the original; short runs look better with less averaging.
    compile: torch.compile the networks (``gan_step.compile_models``); the first step's time,
    compilation included, is printed.
    augment: the training images' augmentation (``AUGMENTATIONS``): ``full``, the original's
    random crop and left-right mirror; ``crop``, the crop only (data whose birds all face one
    way); ``none``, the centre crop (data whose birds are all drawn alike, like the demo's simple
    SynthBirds).
    resume continues the run in out_dir; overwrite starts it again (its files are deleted first);
    without either, an out_dir holding a run is refused (OutputExistsError).
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
    channels_last: bool | None = None  # None: resolve_channels_last decides
    compile: bool = False
    original_damsm_loop: bool = False
    legacy_mask: bool = False
    ema_decay: float = 0.999
    augment: str = "full"
    progress: bool = True
    overwrite: bool = False


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
        "rng": _gather(rng_state(), state.dist),
    }


def restore_training_state(
    state: GanState, sampler: ResumableSampler, saved: dict[str, Any]
) -> int:
    """Load ``saved`` (``training_state``) into ``state`` and ``sampler``; returns the epoch.

    The optimisers and the EMA get the learning rates and decay of ``state`` back after loading
    (theirs are the current run's settings, not the checkpoint's)."""
    if saved.get("format") != CHECKPOINT_FORMAT:
        raise ValueError("not an attngan-fast GAN training checkpoint")
    lrs = [[g["lr"] for g in o.param_groups] for o in (state.optimizer_g, *state.optimizers_d)]
    decay = state.ema.decay
    state.generator.load_state_dict(saved["netG"])
    state.ema.load_state_dict(saved["ema"])
    for d, s in zip(state.discriminators, saved["netsD"], strict=True):
        d.load_state_dict(s)
    state.optimizer_g.load_state_dict(saved["optimizerG"])
    for o, s in zip(state.optimizers_d, saved["optimizersD"], strict=True):
        o.load_state_dict(s)
    for optimizer, group_lrs in zip((state.optimizer_g, *state.optimizers_d), lrs, strict=True):
        for group, lr in zip(optimizer.param_groups, group_lrs, strict=True):
            group["lr"] = lr
    state.ema.decay = decay
    if state.scaler is not None and saved["scaler"] is not None:
        state.scaler.load_state_dict(saved["scaler"])
    sampler.load_state_dict(saved["sampler"])
    state.step = int(saved["step"])
    rng = saved["rng"]
    if len(rng) == state.dist.world_size:
        set_rng_state(rng[state.dist.rank])
    else:  # a different number of processes: the streams cannot continue, reseed
        seed_everything(int(saved["step"]) * 7919 + state.dist.rank)
    return int(saved["epoch"])


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _named(key: str) -> str:
    return f"{key} ({FLAGS[key]})" if key in FLAGS else key


def resume_changes(saved: dict[str, Any], cfg: Config, ema_decay: float, path: Path) -> list[str]:
    """What a resumed run changes against its checkpoint ``saved`` (``training_state``), as
    printable ``"KEY: old -> new"`` lines.

    Raises:
        UsageError: the model differs (a key of MODEL_KEYS); the message lists every difference.
    """
    before, now = _flat(saved.get("cfg") or {}), _flat(cfg.to_dict())
    model = [k for k in MODEL_KEYS if k in before and before[k] != now[k]]
    if model:
        diff = "; ".join(f"{_named(k)} {before[k]!r} there, {now[k]!r} now" for k in model)
        raise UsageError(
            f"--resume: {path} holds another model ({diff}). Resume with the run's model "
            f"options (its config.yml, usable with --cfg), or train the new model in another "
            "--out (or --overwrite)"
        )
    changes = [
        f"{_named(k)}: {before[k]!r} -> {now[k]!r}"
        for k in TRAINING_KEYS
        if k in before and before[k] != now[k]
    ]
    old_decay = (saved.get("ema") or {}).get("decay")
    if old_decay is not None and float(old_decay) != ema_decay:
        changes.append(f"EMA decay (--ema-decay): {float(old_decay)!r} -> {ema_decay!r}")
    return changes


def save_checkpoint(
    state: GanState, sampler: ResumableSampler, epoch: int, files: RunFiles
) -> Path | None:
    """Atomically write ``checkpoint.pt`` and ``Model/netG.pth`` (rank 0; call on every rank).

    Raises NonFiniteWeightsError (on every rank, nothing written) if a weight is not finite."""
    check_weights_finite(state, files)
    payload = training_state(state, sampler, epoch)
    path = None
    if state.dist.is_main:
        path = ckpt.save_atomic(payload, files.checkpoint)
        ckpt.save_atomic(payload["netG_ema"], files.netG)
    barrier(state.dist)
    return path


def save_snapshot(state: GanState, epoch: int, files: RunFiles) -> None:
    """The original's model files: ``netG_epoch_E.pth`` (EMA weights) and ``netD{i}.pth``."""
    check_weights_finite(state, files)
    if not state.dist.is_main:
        return
    ckpt.save_atomic(state.ema.state_dict_of(state.generator), files.netG_epoch(epoch))
    for i, d in enumerate(state.discriminators):
        ckpt.save_atomic(d.state_dict(), files.netD(i))


def check_finite(
    logs: dict[str, float], step: int, epoch: int, info: DistInfo, kept: Callable[[], str]
) -> None:
    """Raise NonFiniteLossError when a loss is NaN/inf on any rank (a collective); ``kept()``
    says which checkpoint the run leaves (called only then)."""
    bad = {k: v for k, v in logs.items() if not math.isfinite(v)}
    if all_ranks_agree(not bad, info):
        return
    detail = ", ".join(f"{k} = {v}" for k, v in bad.items()) or "on another process"
    raise NonFiniteLossError(
        f"non-finite loss at step {step} (epoch {epoch}): {detail}. Training stopped; {kept()}. "
        "Try a lower learning rate, --precision fp32 or bf16, or resume from the checkpoint."
    )


def check_weights_finite(state: GanState, files: RunFiles) -> None:
    """Raise NonFiniteWeightsError if a weight of G, its EMA or a D is NaN or infinite.

    Every rank holds the same weights, so every rank reaches the same verdict (no collective)."""
    tensors = {f"G {k}": v for k, v in state.generator.state_dict().items()}
    tensors.update({f"G (EMA) {k}": v for k, v in zip(state.ema.names, state.ema.params)})
    for i, d in enumerate(state.discriminators):
        tensors.update({f"D{i} {k}": v for k, v in d.state_dict().items()})
    bad = ckpt.first_non_finite(tensors)
    if bad is None:
        return
    raise NonFiniteWeightsError(
        f"non-finite weights at step {state.step}: {bad} holds NaN or inf (a NaN gradient can do "
        f"this while the losses are still finite), so nothing was saved; {kept_checkpoint(files)}. "
        "Try a lower learning rate, --precision fp32 or bf16, or resume from the checkpoint."
    )


def kept_checkpoint(files: RunFiles) -> str:
    """Which checkpoint a stopped run leaves: the one on disk (its step), or that there is none."""
    try:
        step = int(ckpt.load(files.checkpoint)["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return f"no checkpoint was written in {files.root} (nothing to resume from)"
    return f"the last good checkpoint is {files.checkpoint} (step {step})"


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


def resolve_channels_last(requested: bool | None, device: torch.device, precision: str) -> bool:
    """The memory format of the image networks: ``--channels-last`` / ``--no-channels-last`` as
    given; by default channels-last where it was measured to pay, bf16 on a CPU (the birds
    iteration 1.7x faster than in NCHW on a 2-core Xeon with AMX: oneDNN's bf16 convolutions and
    the CPU extension's BatchNorm+GLU want it), NCHW elsewhere (fp32 on an AVX2 CPU: NCHW was
    1.24x faster at the birds config's sizes; on a GPU not measured yet)."""
    if requested is not None:
        return requested
    return device.type == "cpu" and precision == "bf16"


def check_options(opts: GanTrainOptions) -> None:
    """Raise UsageError naming the first option out of its range."""
    check_minimums(
        opts,
        (
            ("max_epochs", "--epochs", 1), ("max_steps", "--steps", 1),
            ("checkpoint_every", "--checkpoint-every", 1), ("log_every", "--log-every", 1),
            ("sample_every", "--sample-every", 0), ("workers", "--workers", 0),
            ("samples_per_caption", "samples_per_caption", 1),
        ),
    )  # fmt: skip
    if not 0.0 <= opts.ema_decay < 1.0:
        raise UsageError(f"--ema-decay must be in [0, 1), got {opts.ema_decay}")
    if opts.augment not in AUGMENTATIONS:
        choices = ", ".join(AUGMENTATIONS)
        raise UsageError(f"--augment must be one of {choices}, got {opts.augment!r}")


def _train(cfg: Config, opts: GanTrainOptions, info: DistInfo) -> RunFiles:
    check_options(opts)
    check_supported(cfg)
    precision, note = resolve_precision(opts.precision, info.device)
    if note and info.is_main:
        print(note, flush=True)
    channels_last = resolve_channels_last(opts.channels_last, info.device, precision)
    if opts.channels_last is None and channels_last and info.is_main:
        print("channels-last: on (bf16 on a CPU; --no-channels-last for NCHW)", flush=True)
    opts = replace(opts, precision=precision, channels_last=channels_last)
    files = RunFiles(Path(opts.out_dir))
    stale = claim_output_dir(
        files.root, files.outputs(), "a training run", overwrite=opts.overwrite,
        resume=opts.resume,
    )  # fmt: skip
    seed_everything(opts.seed + info.rank)
    if opts.data_dir is None:
        raise UsageError("no dataset: pass --data DIR (or set DATA_DIR in the config)")
    if cfg.TREE.BASE_SIZE != 64:
        raise UsageError(
            f"TREE.BASE_SIZE is {cfg.TREE.BASE_SIZE}: the generator's first stage draws 64 px "
            "images, so GAN training needs TREE.BASE_SIZE 64 (more pixels: --branches)"
        )
    augment, flip = AUGMENTATIONS[opts.augment]
    dataset = load_dataset(opts.data_dir, cfg, "train", opts.layout, augment=augment, flip=flip)
    text_path = opts.text_encoder or cfg.TRAIN.NET_E
    if not text_path:
        raise UsageError(
            "no DAMSM text encoder: pass --text-encoder FILE (or TRAIN.NET_E in the config); "
            "train one with `attngan-fast pretrain-damsm`"
        )
    if training_objective(cfg).needs_image_encoder:
        text_encoder, image_encoder, spec = load_encoders(text_path, opts.image_encoder)
    else:  # no DAMSM term: the image encoder is neither loaded nor run
        text_encoder, image_encoder = load_text_encoder(text_path), None
        spec = encoder_spec_beside(text_path)
    if text_encoder.ntoken != dataset.n_words:
        raise UsageError(
            f"the text encoder {text_path} knows {text_encoder.ntoken} words, the dataset's "
            f"vocabulary has {dataset.n_words}: they come from different datasets"
        )
    state = build_gan_state(
        cfg, dataset.n_words, info.device, opts.precision,
        text_encoder=text_encoder, image_encoder=image_encoder,
        channels_last=opts.channels_last, original_damsm_loop=opts.original_damsm_loop,
        legacy_mask=opts.legacy_mask, dist=info, sync_bn=opts.sync_bn,
    )  # fmt: skip
    state.ema.decay = opts.ema_decay
    if opts.compile:
        compile_models(state)
    sampler = ResumableSampler(
        len(dataset), seed=opts.seed, rank=info.rank, world_size=info.world_size
    )
    batch_size = cfg.TRAIN.BATCH_SIZE
    steps_per_epoch = full_batches(len(sampler), batch_size, info, opts.data_dir)
    epoch = 0
    if opts.resume and files.checkpoint.is_file():
        epoch = _resume(state, sampler, cfg, opts, files)
    elif opts.resume and info.is_main:
        print(f"no checkpoint at {files.checkpoint}: starting a new run", flush=True)
    max_epochs = opts.max_epochs if opts.max_epochs is not None else cfg.TRAIN.MAX_EPOCH
    max_steps = max_epochs * steps_per_epoch
    if opts.max_steps is not None:
        max_steps = min(max_steps, opts.max_steps)
    if state.step >= max_steps or epoch >= max_epochs:
        raise UsageError(
            f"--resume: the run in {files.root} is already at step {state.step} (epoch {epoch}), "
            f"the end set by --steps / --epochs (step {max_steps}, epoch {max_epochs}): raise "
            "them to train on"
        )  # a new run cannot get here: check_options wants max_steps and max_epochs >= 1
    if info.is_main:
        remove_files(stale)
        ckpt.remove_stale_temporaries(files.checkpoint)
        truncate_metrics(files.metrics, state.step)
        save_config(cfg, files.config)
        save_vocab(dataset.vocab, files.vocab)
        files.model_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(text_path, files.text_encoder)
        run_info = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(opts).items()}
        run_info.update(
            text_encoder=str(text_path),
            image_encoder=str(opts.image_encoder or image_encoder_path(text_path)),
            encoder_spec=asdict(spec) if spec is not None else None,
            world_size=info.world_size, n_words=dataset.n_words,
        )  # fmt: skip
        write_json(run_info, files.run_json)
    barrier(info)

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
        desc=f"train [{device_summary(state.device, state.precision)}]",
    )  # fmt: skip
    first_step = True
    try:
        while state.step < max_steps and epoch < max_epochs:
            sampler.set_epoch(epoch)
            loader = make_loader(dataset, sampler, batch_size, opts.workers)
            for batch in loader:
                t_step = time.perf_counter()
                logs = gan_train_step(state, batch)
                if opts.compile and first_step:
                    first_step = False
                    logger.write(
                        f"torch.compile: the first step took {time.perf_counter() - t_step:.1f} s "
                        "(compilation included)"
                    )
                sampler.advance(batch_size)
                check_finite(logs, state.step, epoch, info, lambda: kept_checkpoint(files))
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


def _resume(
    state: GanState, sampler: ResumableSampler, cfg: Config, opts: GanTrainOptions, files: RunFiles
) -> int:
    """Restore the checkpoint of ``files`` into ``state`` / ``sampler``; returns its epoch.
    Refuses another model; prints what this run changes (applied from now on)."""
    saved = ckpt.load(files.checkpoint, state.device)
    if not isinstance(saved, dict) or saved.get("format") != CHECKPOINT_FORMAT:
        raise FileFormatError(f"{files.checkpoint}: not an attngan-fast GAN training checkpoint")
    changes = resume_changes(saved, cfg, opts.ema_decay, files.checkpoint)
    try:
        epoch = restore_training_state(state, sampler, saved)
    except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as exc:
        reason = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        raise FileFormatError(
            f"{files.checkpoint}: cannot resume from it ({type(exc).__name__}: "
            f"{str(reason).splitlines()[0][:200]})"
        ) from None
    if state.dist.is_main:
        print(f"resuming {files.root} at step {state.step} (epoch {epoch})", flush=True)
        for change in changes:
            print(f"  changed on resume: {change}", flush=True)
    return epoch
