"""DAMSM pretraining: the text encoder and the image encoder's projections on the DAMSM loss.

As the original ``code/pretrain_DAMSM.py``: loss = w_loss0 + w_loss1 + s_loss0 + s_loss1 (the
DAMSM word and sentence losses of Xu et al., CVPR 2018) on the largest image of each sample,
Adam(lr, betas (0.5, 0.999)) over the text encoder's and the image encoder's trainable
parameters, re-created at every epoch (as the original does: its moments restart each epoch) with
lr = ENCODER_LR, multiplied by 0.98 after each epoch while lr > ENCODER_LR / 10; gradient norm
of the RNN's parameters only clipped at RNN_GRAD_CLIP. Files ``text_encoder{E}.pth`` /
``image_encoder{E}.pth`` (plain state dicts, the original format) after epoch index E when
E % SNAPSHOT_INTERVAL == 0 and after the last epoch, with ``encoders.json`` and ``vocab.json``
beside them.

After every epoch the encoders are evaluated on the test split (text-image retrieval: R@1 both
ways and R-precision, ``damsm_eval``); the scores go to ``metrics.jsonl`` and the best epoch's
encoders are kept as ``text_encoder_best.pth`` / ``image_encoder_best.pth`` with
``best_encoders.json`` naming the epoch (not in the original, which leaves users to guess).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import Tensor, nn

from attngan_fast.config import Config, check_supported
from attngan_fast.data.dataset import CaptionedImageDataset, prepare_batch
from attngan_fast.errors import (
    FileFormatError,
    NonFiniteLossError,
    NonFiniteWeightsError,
    UsageError,
)
from attngan_fast.losses import damsm_terms
from attngan_fast.models import load_inception_weights
from attngan_fast.runtime import checkpoint as ckpt
from attngan_fast.runtime.checkpoint import load_torch_file
from attngan_fast.runtime.loaders import load_dataset, make_loader
from attngan_fast.runtime.networks import (
    EncoderSpec,
    build_image_encoder,
    build_text_encoder,
    save_encoders,
)
from attngan_fast.runtime.run_dir import claim_output_dir, damsm_outputs, remove_files, save_vocab
from attngan_fast.runtime.sampler import ResumableSampler
from attngan_fast.runtime.seeding import seed_everything
from attngan_fast.train.checks import check_minimums, full_batches
from attngan_fast.train.damsm_eval import retrieval_scores, save_best
from attngan_fast.train.distributed import (
    DistInfo,
    all_ranks_agree,
    cleanup,
    init_distributed,
    unwrap,
    wrap_ddp,
)
from attngan_fast.train.precision import autocast, make_scaler, resolve_precision
from attngan_fast.train.progress import ProgressLogger, device_summary


@dataclass
class PretrainOptions:
    """Options of DAMSM pretraining beyond the config (``Config``: TRAIN.ENCODER_LR, BATCH_SIZE,
    MAX_EPOCH, SNAPSHOT_INTERVAL, RNN_GRAD_CLIP, SMOOTH.GAMMA1-3, TEXT.*).

    image_encoder ``inception`` needs ``inception_weights`` (a torchvision ``inception_v3``
    ImageNet state dict file) to be meaningful; ``small`` trains ``SmallImageEncoder`` from
    scratch on ``small_size`` px images (regions small_size / 8 a side). An ``out_dir`` that
    already holds encoders is refused unless ``overwrite`` (which deletes only those files).
    ``test_eval``: retrieval on the test split after every epoch and the best encoders kept
    (skipped, with a message, when the dataset has no test split).
    """

    out_dir: str | Path = "runs/damsm"
    data_dir: str | Path | None = None
    layout: str = "auto"
    image_encoder: str = "inception"
    inception_weights: str | Path | None = None
    small_ndf: int = 64
    small_size: int = 64
    device: str | None = None
    precision: str = "fp32"
    seed: int = 100
    max_epochs: int | None = None
    max_steps: int | None = None
    workers: int = 0
    log_every: int = 10
    original_damsm_loop: bool = False
    progress: bool = True
    overwrite: bool = False
    test_eval: bool = True


def damsm_total_loss(
    region: Tensor,
    code: Tensor,
    words: Tensor,
    sent: Tensor,
    cap_lens: Tensor,
    class_ids: Tensor | None,
    cfg: Config,
    use_original: bool = False,
) -> tuple[Tensor, dict[str, Tensor]]:
    """w_loss0 + w_loss1 + s_loss0 + s_loss1 and the four terms (``losses.damsm_terms``)."""
    smooth = cfg.TRAIN.SMOOTH
    w0, w1, s0, s1 = damsm_terms(
        region, code, words, sent, cap_lens, class_ids,
        smooth.GAMMA1, smooth.GAMMA2, smooth.GAMMA3, original_loop=use_original,
    )  # fmt: skip
    terms = {"w_loss0": w0, "w_loss1": w1, "s_loss0": s0, "s_loss1": s1}
    return w0 + w1 + s0 + s1, terms


def pretrain_damsm(cfg: Config, opts: PretrainOptions) -> tuple[Path, Path]:
    """Pretrain the DAMSM encoders; returns the last (text_encoder, image_encoder) files."""
    info = init_distributed(opts.device)
    try:
        return _pretrain(cfg, opts, info)
    finally:
        cleanup(info)


def _pretrain(cfg: Config, opts: PretrainOptions, info: DistInfo) -> tuple[Path, Path]:
    device = info.device
    precision, note = resolve_precision(opts.precision, device)
    if note and info.is_main:
        print(note, flush=True)
    opts = replace(opts, precision=precision)
    check_minimums(
        opts,
        (("max_epochs", "--epochs", 1), ("max_steps", "--steps", 1),
         ("log_every", "--log-every", 1), ("workers", "--workers", 0)),
    )  # fmt: skip
    check_supported(cfg)
    out = Path(opts.out_dir)
    stale = claim_output_dir(out, damsm_outputs(out), "DAMSM encoders", overwrite=opts.overwrite)
    seed_everything(opts.seed + info.rank)
    if opts.data_dir is None:
        raise UsageError("no dataset: pass --data DIR (or set DATA_DIR in the config)")
    data_cfg = cfg
    if opts.image_encoder == "small":  # one branch at the encoder's own size
        data_cfg = _with_images(cfg, opts.small_size)
    dataset = load_dataset(opts.data_dir, data_cfg, "train", opts.layout)
    test_set = _test_split(opts, data_cfg) if opts.test_eval else None
    spec = EncoderSpec.from_config(
        cfg, dataset.n_words, image_encoder=opts.image_encoder, small_ndf=opts.small_ndf,
        small_size=opts.small_size,
    )  # fmt: skip
    text_encoder = build_text_encoder(spec).to(device)
    image_encoder = build_image_encoder(spec)
    if opts.image_encoder == "inception":
        if opts.inception_weights is None:
            raise UsageError(
                "the inception image encoder needs ImageNet Inception-v3 weights: pass "
                "--inception-weights FILE (torchvision inception_v3 state dict), or use "
                "--image-encoder small"
            )
        weights = Path(opts.inception_weights)
        state = load_torch_file(weights, what="a torchvision inception_v3 state dict")
        try:
            load_inception_weights(image_encoder, state)
        except (KeyError, RuntimeError, TypeError, AttributeError) as exc:
            reason = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
            raise FileFormatError(
                f"{weights}: not a torchvision inception_v3 state dict ({reason})"
            ) from None
    image_encoder = image_encoder.to(device)
    params = list(text_encoder.parameters()) + [
        p for p in image_encoder.parameters() if p.requires_grad
    ]
    text_ddp, image_ddp = wrap_ddp(text_encoder, info), wrap_ddp(image_encoder, info)
    scaler = make_scaler(opts.precision, device)
    sampler = ResumableSampler(
        len(dataset), seed=opts.seed, rank=info.rank, world_size=info.world_size
    )
    batch_size = cfg.TRAIN.BATCH_SIZE
    max_epochs = opts.max_epochs if opts.max_epochs is not None else cfg.TRAIN.MAX_EPOCH
    steps_per_epoch = full_batches(len(sampler), batch_size, info, opts.data_dir)
    total = max_epochs * steps_per_epoch
    if opts.max_steps is not None:
        total = min(total, opts.max_steps)
        max_epochs = min(max_epochs, math.ceil(total / steps_per_epoch))
    if info.is_main:
        remove_files(stale)
        save_vocab(dataset.vocab, out / "vocab.json")
    logger = ProgressLogger(
        out / "metrics.jsonl", total, 0, batch_size * info.world_size,
        enabled=info.is_main, show_bar=opts.progress,
        desc=f"damsm [{device_summary(device, opts.precision)}]",
    )  # fmt: skip
    lr, step = cfg.TRAIN.ENCODER_LR, 0
    paths: tuple[Path, Path] | None = None
    best: float | None = None
    if test_set is None and opts.test_eval and info.is_main:
        logger.write(f"no test split in {opts.data_dir}: the encoders are not evaluated")
    try:
        for epoch in range(max_epochs):
            optimizer = torch.optim.Adam(params, lr=lr, betas=(0.5, 0.999))
            text_ddp.train()
            image_ddp.train()
            sampler.set_epoch(epoch)
            for batch in make_loader(dataset, sampler, batch_size, opts.workers):
                batch = prepare_batch(batch)  # sorted as the original does, still on the CPU
                cap_lens_cpu = batch.cap_lens  # the text encoder packs by it: no device sync
                batch = prepare_batch(batch, device, sort=False)
                optimizer.zero_grad(set_to_none=True)
                with autocast(opts.precision, device):
                    region, code = image_ddp(batch.images[-1])
                    words, sent = text_ddp(batch.captions, cap_lens_cpu)
                    loss, terms = damsm_total_loss(
                        region, code, words, sent, batch.cap_lens, batch.class_ids, cfg,
                        opts.original_damsm_loop,
                    )  # fmt: skip
                _step(loss, optimizer, scaler, text_encoder, cfg.TRAIN.RNN_GRAD_CLIP)
                sampler.advance(batch_size)
                step += 1
                values = dict(zip(["loss", *terms], torch.stack([loss, *terms.values()]).tolist()))
                if not all_ranks_agree(all(map(math.isfinite, values.values())), info):
                    raise NonFiniteLossError(
                        f"non-finite DAMSM loss at step {step} (epoch {epoch}): {values}; "
                        f"{_kept_encoders(paths, out)}"
                    )
                if step % opts.log_every == 0 or step == total:
                    logger.log(step, epoch, {**values, "lr": lr})
                if step >= total:
                    break
            last = step >= total or epoch == max_epochs - 1
            if test_set is not None:
                best = _evaluate_epoch(
                    test_set, text_encoder, image_encoder, epoch, step, best, out, logger, info,
                    _kept_encoders(paths, out), opts.seed,
                )  # fmt: skip
            if epoch % cfg.TRAIN.SNAPSHOT_INTERVAL == 0 or last:
                # every rank: the weights are the same, so is the verdict
                _check_encoders_finite(
                    text_encoder, image_encoder, step, _kept_encoders(paths, out)
                )
                if info.is_main:
                    paths = save_encoders(out, epoch, unwrap(text_ddp), unwrap(image_ddp), spec)
                    logger.write(f"saved {paths[0]} and {paths[1]}")
            if lr > cfg.TRAIN.ENCODER_LR / 10.0:
                lr *= 0.98
            if last:
                break
    finally:
        logger.close()
    return paths if paths is not None else (out / "text_encoder.pth", out / "image_encoder.pth")


def _test_split(opts: PretrainOptions, data_cfg: Config) -> CaptionedImageDataset | None:
    """The test split (no augmentation), None when the dataset has none."""
    try:
        test_set = load_dataset(opts.data_dir, data_cfg, "test", opts.layout, augment=False)
    except FileNotFoundError:
        return None
    return test_set if len(test_set) > 1 else None


def _evaluate_epoch(
    test_set: CaptionedImageDataset, text: nn.Module, image: nn.Module, epoch: int, step: int,
    best: float | None, out: Path, logger: ProgressLogger, info: DistInfo, kept: str, seed: int,
) -> float | None:  # fmt: skip
    """Retrieval on the test split after ``epoch``: logged, and the encoders kept as the best
    when they beat ``best``; returns the best criterion so far."""
    scores = retrieval_scores(text, image, test_set, seed=seed)
    logger.log(step, epoch, {
        "test_r1_text_to_image": scores.r1_text_to_image,
        "test_r1_image_to_text": scores.r1_image_to_text,
        **({"test_r_precision": scores.r_precision} if scores.r_precision is not None else {}),
    })  # fmt: skip
    improved = best is None or scores.criterion > best
    if improved:
        _check_encoders_finite(text, image, step, kept)
        if info.is_main:
            save_best(out, text, image, epoch, step, scores)
    note = " (best so far: text_encoder_best.pth)" if improved else ""
    logger.write(f"epoch {epoch} test retrieval: {scores.summary()}{note}")
    return scores.criterion if improved else best


def _kept_encoders(paths: tuple[Path, Path] | None, out: Path) -> str:
    """What a stopped pretraining leaves: the last encoder files it wrote, or none."""
    if paths is None:
        return f"no encoder file was written in {out} yet"
    return f"the last good encoders are {paths[0]} and {paths[1]}"


def _check_encoders_finite(text: nn.Module, image: nn.Module, step: int, kept: str) -> None:
    """Raise NonFiniteWeightsError (nothing saved) if an encoder weight is NaN or infinite."""
    tensors = {f"text encoder {k}": v for k, v in text.state_dict().items()}
    tensors.update({f"image encoder {k}": v for k, v in image.state_dict().items()})
    bad = ckpt.first_non_finite(tensors)
    if bad is not None:
        raise NonFiniteWeightsError(
            f"non-finite weights at step {step}: {bad} holds NaN or inf, so it was not saved; "
            f"{kept}. Try a lower --lr or --precision fp32"
        )


def _step(
    loss: Tensor,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    text_encoder: nn.Module,
    clip: float,
) -> None:
    """Backward, clip the RNN's gradient norm at ``clip``, Adam step (through the fp16 scaler)."""
    if scaler is None:
        loss.backward()
        torch.nn.utils.clip_grad_norm_(text_encoder.parameters(), clip)
        optimizer.step()
        return
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(text_encoder.parameters(), clip)
    scaler.step(optimizer)
    scaler.update()


def _with_images(cfg: Config, size: int) -> Config:
    from attngan_fast.config import config_from_dict

    return config_from_dict({"TREE": {"BRANCH_NUM": 1, "BASE_SIZE": size}}, cfg)
