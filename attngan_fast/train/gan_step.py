"""One AttnGAN training iteration (``train()`` of the original's ``code/trainer.py``), reusable by
the trainer and the benchmark.

    state = build_gan_state(cfg, vocab_size, device, "bf16")
    batch = synthetic_batch(cfg, vocab_size, cfg.TRAIN.BATCH_SIZE, device)
    logs = gan_train_step(state, batch)      # {"errD0": ..., "errG_total": ..., ...}

The step: frozen text encoder (eval, no grad) -> z ~ N(0, I) -> G -> for each D its loss on the
detached fakes and its own Adam step -> G loss (adversarial terms of every stage, LAMBDA x DAMSM
on the last stage through the frozen image encoder, KL) -> G's Adam step -> EMA of G's parameters.
Under fp16 one GradScaler serves every optimiser and is updated once per iteration.

The same step trains every member of the model family: the config gives the networks
(``networks.generator_spec``) and the loss terms (``networks.training_objective``, a
``losses.Objective``). Each D sees the real images of its generator's image's size; with LAMBDA 0
no image encoder is built or run; with the interpolation term G also draws from interpolated
sentences (in the same forward pass as a second half-batch, judged by the Ds only in G's loss).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from attngan_fast import losses
from attngan_fast.config import Config
from attngan_fast.data.dataset import Batch
from attngan_fast.errors import UsageError
from attngan_fast.runtime.generation import embed_captions
from attngan_fast.runtime.networks import (
    EncoderSpec,
    build_discriminators,
    build_generator,
    build_image_encoder,
    build_text_encoder,
    freeze,
    training_objective,
)
from attngan_fast.train.distributed import DistInfo, wrap_ddp
from attngan_fast.train.ema import ParamEMA
from attngan_fast.train.precision import autocast, check_precision, make_scaler


class _DiscriminatorLoss(nn.Module):
    """``losses.discriminator_loss`` as one forward call (DDP sees every D parameter used)."""

    def __init__(self, netD: nn.Module) -> None:
        super().__init__()
        self.netD = netD

    def forward(self, real: Tensor, fake: Tensor, sent: Tensor) -> Tensor:
        return losses.discriminator_loss(self.netD, real, fake, sent)


@dataclass
class GanState:
    """Everything one GAN iteration reads and updates.

    ``netG`` / ``d_losses`` are what the step calls (DDP-wrapped in multi-process runs);
    ``generator`` / ``discriminators`` are the plain modules (what checkpoints hold).
    ``image_encoder`` is None when the objective has no DAMSM term.
    """

    cfg: Config
    device: torch.device
    precision: str
    objective: losses.Objective
    text_encoder: nn.Module
    image_encoder: nn.Module | None
    generator: nn.Module
    discriminators: nn.ModuleList
    netG: nn.Module
    d_losses: list[nn.Module]
    optimizer_g: torch.optim.Optimizer
    optimizers_d: list[torch.optim.Optimizer]
    scaler: torch.amp.GradScaler | None
    ema: ParamEMA
    channels_last: bool = False
    original_damsm_loop: bool = False
    dist: DistInfo = field(default_factory=DistInfo)
    step: int = 0


def build_gan_state(
    cfg: Config,
    vocab_size: int,
    device: torch.device | str,
    precision: str = "fp32",
    *,
    text_encoder: nn.Module | None = None,
    image_encoder: nn.Module | None = None,
    image_encoder_kind: str = "inception",
    channels_last: bool = False,
    original_damsm_loop: bool = False,
    legacy_mask: bool = False,
    dist: DistInfo | None = None,
    sync_bn: bool = False,
) -> GanState:
    """Models, optimisers, scaler and EMA for GAN training on ``device``.

    ``text_encoder`` / ``image_encoder``: pretrained DAMSM encoders (frozen here); when omitted,
    randomly initialised ones of ``image_encoder_kind`` (what a benchmark needs). Without a DAMSM
    term (TRAIN.SMOOTH.LAMBDA 0) no image encoder is built and ``image_encoder`` is dropped.
    G and the Ds get the original orthogonal init and Adam(lr, betas (0.5, 0.999)) each.
    ``channels_last`` puts the image networks and images in channels-last memory format.
    ``original_damsm_loop`` computes the DAMSM term with the original per-caption loop
    (``ops.original``), the faithful baseline.
    """
    device = torch.device(device)
    check_precision(precision, device)
    dist = dist or DistInfo(device=device)
    if sync_bn and dist.enabled and device.type != "cuda":
        raise UsageError("--sync-bn needs CUDA GPUs (SyncBatchNorm has no CPU implementation)")
    objective = training_objective(cfg)
    if not objective.needs_image_encoder:
        image_encoder = None  # lambda 0: the DAMSM term is off, no image encoder is ever run
    elif image_encoder is None:
        image_encoder = build_image_encoder(_encoder_spec(cfg, vocab_size, image_encoder_kind))
    if text_encoder is None:
        text_encoder = build_text_encoder(_encoder_spec(cfg, vocab_size, image_encoder_kind))
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    text_encoder = freeze(text_encoder.to(device))
    if image_encoder is not None:
        image_encoder = freeze(image_encoder.to(device, memory_format=memory_format))
    generator = build_generator(cfg, legacy_mask=legacy_mask).to(
        device, memory_format=memory_format
    )
    discriminators = build_discriminators(cfg).to(device, memory_format=memory_format)
    if sync_bn and dist.enabled:
        discriminators = nn.SyncBatchNorm.convert_sync_batchnorm(discriminators)
    # On the CPU, PyTorch's fused Adam (one pass over each parameter's state, same update) takes
    # a third of the time of its default per-tensor loop: ~100 M D parameters at birds size.
    adam = {"betas": (0.5, 0.999), "fused": True if device.type == "cpu" else None}
    optimizer_g = torch.optim.Adam(generator.parameters(), lr=cfg.TRAIN.GENERATOR_LR, **adam)
    optimizers_d = [
        torch.optim.Adam(d.parameters(), lr=cfg.TRAIN.DISCRIMINATOR_LR, **adam)
        for d in discriminators
    ]
    return GanState(
        cfg=cfg,
        device=device,
        precision=precision,
        objective=objective,
        text_encoder=text_encoder,
        image_encoder=image_encoder,
        generator=generator,
        discriminators=discriminators,
        netG=wrap_ddp(generator, dist),  # fused BN ops: SyncBatchNorm would not apply
        d_losses=[wrap_ddp(_DiscriminatorLoss(d), dist) for d in discriminators],
        optimizer_g=optimizer_g,
        optimizers_d=optimizers_d,
        scaler=make_scaler(precision, device),
        ema=ParamEMA(generator),
        channels_last=channels_last,
        original_damsm_loop=original_damsm_loop,
        dist=dist,
    )


def compile_models(state: GanState, backend: str = "inductor") -> None:
    """``torch.compile`` G, each D (with its heads and its loss), and the image encoder in place
    (``nn.Module.compile``: state-dict keys do not change, checkpoints stay loadable). On the CPU
    inductor generates C++/OpenMP kernels; the first iteration pays the compilation. The text
    encoder (packed LSTM) stays eager; without a DAMSM term there is no image encoder."""
    modules: list[nn.Module] = [state.netG, *state.d_losses]
    if state.image_encoder is not None:
        modules.append(state.image_encoder)
    for d in state.discriminators:
        modules += [m for m in (d, d.COND_DNET, getattr(d, "UNCOND_DNET", None)) if m is not None]
    for module in modules:
        module.compile(backend=backend, dynamic=False)


def _encoder_spec(cfg: Config, vocab_size: int, kind: str) -> EncoderSpec:
    """A randomly initialised pair's spec (what a benchmark needs), the small encoder sized for
    G's last image."""
    size = cfg.TREE.BASE_SIZE * 2 ** (cfg.TREE.BRANCH_NUM - 1)
    return EncoderSpec.from_config(cfg, vocab_size, image_encoder=kind, small_size=size)


def synthetic_batch(
    cfg: Config,
    vocab_size: int,
    batch_size: int,
    device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
) -> Batch:
    """A random batch shaped like the data loader's: images in [-1, 1] per branch, captions of
    1..WORDS_NUM random non-zero word indices (0-padded), one class per sample. Everything is on
    ``device`` but ``cap_lens``, which stays on the CPU as the loader's does (the text encoder
    packs the captions by it without a device synchronisation)."""
    words_num = cfg.TEXT.WORDS_NUM
    sizes = [cfg.TREE.BASE_SIZE * 2**i for i in range(cfg.TREE.BRANCH_NUM)]
    images = [torch.rand(batch_size, 3, s, s, generator=generator) * 2 - 1 for s in sizes]
    cap_lens = torch.randint(1, words_num + 1, (batch_size,), generator=generator)
    cap_lens[0] = words_num  # the longest caption fills the padded width, as in real batches
    words = torch.randint(1, max(2, vocab_size), (batch_size, words_num), generator=generator)
    captions = words * (torch.arange(words_num)[None, :] < cap_lens[:, None])
    device = torch.device(device)
    return Batch(
        images=[img.to(device) for img in images],
        captions=captions.to(device),
        cap_lens=cap_lens,
        class_ids=torch.arange(batch_size, device=device),
        keys=[f"synthetic_{i}" for i in range(batch_size)],
        order=torch.arange(batch_size),
    )


def _backward_and_step(state: GanState, loss: Tensor, optimizer: torch.optim.Optimizer) -> None:
    if state.scaler is None:
        loss.backward()
        optimizer.step()
    else:
        state.scaler.scale(loss).backward()
        state.scaler.step(optimizer)


def gan_train_step(state: GanState, batch: Batch) -> dict[str, float]:
    """One iteration on ``batch`` (a ``data.Batch``, on any device); returns the losses as floats.

    Keys: ``errD{i}`` per D, ``g_loss{i}`` per stage, ``w_loss``, ``s_loss`` (LAMBDA-weighted
    DAMSM terms, when LAMBDA > 0), ``kl_loss``, ``colour_loss``, ``int_loss`` (where the
    objective has them), ``errG_total``. One host synchronisation (reading the losses) when
    ``batch.cap_lens`` is on the CPU, as the loader gives it: the text encoder packs the
    captions by that copy, and the DAMSM loss checks the device copy on the device.
    """
    device, objective = state.device, state.objective
    memory_format = torch.channels_last if state.channels_last else torch.contiguous_format
    stages = state.generator.spec.image_stages  # which real image size each D sees
    real_imgs = [batch.images[s].to(device, memory_format=memory_format) for s in stages]
    captions = batch.captions.to(device)
    cap_lens = batch.cap_lens.to(device)
    class_ids = batch.class_ids.to(device) if batch.class_ids is not None else None
    words_embs, sent_emb, mask = embed_captions(state.text_encoder, captions, batch.cap_lens)
    noise = torch.randn(captions.shape[0], state.cfg.GAN.Z_DIM, device=device)

    interpolated = None
    with autocast(state.precision, device):
        if objective.interpolation:  # one forward pass over both halves (DDP-safe)
            sent_int = losses.interpolate_sentences(sent_emb)
            z_both = torch.cat((noise, torch.randn_like(noise)))
            fakes, _, mu, logvar = state.netG(
                z_both, torch.cat((sent_emb, sent_int)), None, None, need_attn=False
            )
            batch_size = noise.shape[0]
            fake_imgs = [f[:batch_size] for f in fakes]
            interpolated = ([f[batch_size:] for f in fakes], sent_int)
            if mu is not None:
                mu, logvar = mu[:batch_size], logvar[:batch_size]
        else:
            fake_imgs, _, mu, logvar = state.netG(
                noise, sent_emb, words_embs, mask, need_attn=False
            )

    logs: dict[str, Tensor] = {}
    for i, (d_loss, optimizer) in enumerate(zip(state.d_losses, state.optimizers_d)):
        optimizer.zero_grad(set_to_none=True)
        with autocast(state.precision, device):
            err_d = d_loss(real_imgs[i], fake_imgs[i].detach(), sent_emb)
        _backward_and_step(state, err_d, optimizer)
        logs[f"errD{i}"] = err_d.detach()

    state.optimizer_g.zero_grad(set_to_none=True)
    state.discriminators.requires_grad_(False)  # G's backward needs no D weight gradients
    try:
        with autocast(state.precision, device):
            err_g, g_logs = losses.generator_objective(
                objective, state.discriminators, state.image_encoder, fake_imgs, words_embs,
                sent_emb, cap_lens, class_ids, mu, logvar, interpolated=interpolated,
                original_loop=state.original_damsm_loop,
            )  # fmt: skip
        _backward_and_step(state, err_g, state.optimizer_g)
    finally:
        state.discriminators.requires_grad_(True)
    if state.scaler is not None:
        state.scaler.update()
    state.ema.update(state.generator)
    state.step += 1

    logs.update(g_logs)
    logs["errG_total"] = err_g.detach()
    values = torch.stack([v.float() for v in logs.values()]).tolist()
    return dict(zip(logs, values))
