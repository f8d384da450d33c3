"""End-to-end: one AttnGAN training iteration, three ways, per config and batch size.

The iteration is the trainer's own ``gan_train_step`` (``attngan_fast.train.gan_step``): frozen
text encoder, G with 3 stages, the 3 Ds each with its Adam step, the image encoder on the 256 px
fakes, the DAMSM loss, G's Adam step and the EMA. Batches are random (``synthetic_batch``) and the
encoders randomly initialised (timing does not depend on the weights).

Variants (ratios are measured in the same run):

* ``a`` -- faithful eager fp32 baseline: the model in plain PyTorch (nearest upsample + conv,
  ``F.batch_norm`` + GLU, the reference word attention: the original's operations), the original
  per-caption DAMSM loop, NCHW, PyTorch's default numerics flags.
* ``b`` -- the library's fast path: fused ops on their automatic backends, bf16 autocast,
  channels-last, the fused DAMSM loss.
* ``c`` -- ``torch.compile`` of (a) in the precision and layout of (b): plain PyTorch model,
  bf16 autocast, channels-last; G, each D step, the Ds and the image encoder compiled, and the
  DAMSM loss compiled in its vectorised plain-PyTorch form (the original loop's data-dependent
  caption lengths would recompile per length and graph-break per caption, so (c) gets the
  stronger, loop-free baseline).

"Plain PyTorch" runs the library's ops on their ``reference`` backend (the ``*_reference``
functions, differentiated by autograd) for the duration of the variant (``plain_pytorch``: an
``ops.use_backend`` block), so the models' code is the same in all three variants.

Per row: ms per iteration (median, IQR), images/s, peak memory, model FLOPs per iteration (counted
once by ``FlopCounterMode`` on an eager iteration), model FLOPs utilisation against the measured
bf16 matrix peak, the implied wall time of 600 CUB epochs (birds) and, for (a) and (b), the
per-phase device time from ``torch.profiler``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from attngan_fast import ops
from attngan_fast.bench.phases import PhaseRanges, phase_times
from attngan_fast.bench.roofline import Ceilings, flop_counter_mapping
from attngan_fast.bench.shapes import (
    CUB_EPOCHS,
    CUB_TRAIN_IMAGES,
    E2E_LARGE_BATCH,
    VOCAB_SIZE,
)
from attngan_fast.bench.timing import measure
from attngan_fast.config import Config, config_from_dict, preset


@dataclass(frozen=True)
class Variant:
    """One way of running the iteration."""

    key: str
    label: str
    precision: str
    channels_last: bool
    plain: bool  # the model in plain PyTorch (reference functions) instead of the fused ops
    original_damsm_loop: bool
    compiled: bool
    profile: bool  # per-phase breakdown (eager variants only: the hooks stay outside graphs)


VARIANTS = {
    "a": Variant("a", "(a) eager, original", "fp32", False, True, True, False, True),
    "b": Variant("b", "(b) attngan-fast", "bf16", True, False, False, False, True),
    "c": Variant("c", "(c) torch.compile", "bf16", True, True, False, True, False),
}


# --- plain PyTorch in place of the fused ops --------------------------------------------------

COMPILED_REFERENCE = "compiled_reference"  # variant (c)'s DAMSM similarity, registered for it


@contextlib.contextmanager
def plain_pytorch(compile_backend: str | None = None) -> Iterator[None]:
    """Within the block every op runs on its ``reference`` backend (plain PyTorch).

    With ``compile_backend`` the DAMSM similarity runs ``torch.compile`` of its reference instead,
    registered for the block as backend ``compiled_reference`` (variant (c): the loss is computed
    outside the compiled networks, so it is compiled on its own).
    """
    if compile_backend is None:
        with ops.use_backend("reference"):
            yield
        return
    op = "damsm_word_similarity"
    reference = ops.registry.implementation(op, "reference").composite
    compiled = torch.compile(reference, backend=compile_backend, dynamic=False)
    with (
        ops.registry.registered(op, COMPILED_REFERENCE, composite=compiled),
        ops.use_backend("reference", **{op: COMPILED_REFERENCE}),
    ):
        yield


# --- building and compiling the state ---------------------------------------------------------


def tiny_config() -> Config:
    """The birds config shrunk for the CPU smoke test: 2 stages (64, 128 px), ngf = ndf = 4.

    Two stages keep every kind of work (word attention, ResBlocks, two Ds, the image encoder on
    the last fakes, DAMSM); the Ds need the real 64 / 128 px sizes.
    """
    values = {
        "TREE": {"BRANCH_NUM": 2},
        "GAN": {"GF_DIM": 4, "DF_DIM": 4, "R_NUM": 1},
        "TEXT": {"WORDS_NUM": 6},
    }
    return config_from_dict(values, preset("birds"))


def _build_state(cfg: Config, vocab: int, device: torch.device, v: Variant, tiny: bool):
    from attngan_fast.train.gan_step import build_gan_state

    kwargs: dict[str, Any] = {}
    if tiny:
        from attngan_fast.models import SmallImageEncoder

        kwargs["image_encoder"] = SmallImageEncoder(cfg.TEXT.EMBEDDING_DIM, ndf=4, image_size=64)
    return build_gan_state(
        cfg,
        vocab,
        device,
        v.precision,
        channels_last=v.channels_last,
        original_damsm_loop=v.original_damsm_loop,
        **kwargs,
    )


def compile_state(state, backend: str = "inductor") -> None:
    """Compile G, each D step, the Ds (as G's loss calls them) and the image encoder in place."""
    compile = lambda m: torch.compile(m, backend=backend, dynamic=False)  # noqa: E731
    state.netG = compile(state.netG)
    state.d_losses = [compile(d) for d in state.d_losses]
    for i, d in enumerate(state.discriminators):
        state.discriminators[i] = compile(d)
    state.image_encoder = compile(state.image_encoder)


# --- measuring one variant ----------------------------------------------------------------------


@dataclass
class E2EConfig:
    """Knobs of the end-to-end timings (``smoke``: the CPU mode)."""

    warmup: int = 3
    min_reps: int = 5
    max_reps: int = 20
    target_ms: float = 2000.0
    compile_backend: str = "inductor"
    n_batches: int = 2
    tiny: bool = False
    precision: str | None = None  # overrides every variant's precision (CPU smoke: fp32)
    channels_last: bool | None = None  # overrides every variant's layout (CPU smoke: NCHW)

    @classmethod
    def smoke(cls) -> E2EConfig:
        """One warm-up and one timed iteration of the tiny model, fp32 NCHW: bf16 and
        channels-last convolutions are slow on CPUs, and the smoke only checks the harness."""
        return cls(
            warmup=1,
            min_reps=1,
            max_reps=1,
            target_ms=0.0,
            compile_backend="aot_eager",
            n_batches=1,
            tiny=True,
            precision="fp32",
            channels_last=False,
        )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _clean(device: torch.device) -> None:
    torch._dynamo.reset()
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def count_flops(step: Callable[[], object]) -> int:
    """Model FLOPs of one call of ``step`` (aten ops plus the library's custom ops)."""
    with FlopCounterMode(display=False, custom_mapping=flop_counter_mapping()) as counter:
        step()
    return int(counter.get_total_flops())


def run_variant(
    cfg: Config,
    config_name: str,
    batch_size: int,
    v: Variant,
    device: torch.device,
    ec: E2EConfig,
    want_flops: bool = False,
) -> dict[str, Any]:
    """Build, warm up and time one variant; the row (without the cross-variant ratios)."""
    vocab = 50 if ec.tiny else VOCAB_SIZE[config_name]
    if ec.precision is not None:
        v = dataclasses.replace(v, precision=ec.precision)
    if ec.channels_last is not None:
        v = dataclasses.replace(v, channels_last=ec.channels_last)
    row: dict[str, Any] = {
        "config": config_name,
        "batch": batch_size,
        "variant": v.key,
        "label": f"{v.label} {v.precision}",
        "precision": v.precision,
        "channels_last": v.channels_last,
        "compiled": v.compiled,
        "damsm": "original loop" if v.original_damsm_loop else ("plain" if v.plain else "fused"),
        "model": "plain PyTorch" if v.plain else "attngan-fast ops",
    }
    compile_backend = ec.compile_backend if v.compiled else None
    plain = plain_pytorch(compile_backend) if v.plain else contextlib.nullcontext()
    try:
        with plain:
            row.update(_measure_variant(cfg, vocab, batch_size, v, device, ec, want_flops))
    finally:
        _clean(device)
    row["status"] = "ok"
    return row


def _measure_variant(cfg, vocab, batch_size, v, device, ec, want_flops) -> dict[str, Any]:
    from attngan_fast.train.gan_step import gan_train_step, synthetic_batch

    torch.manual_seed(0)
    state = _build_state(cfg, vocab, device, v, ec.tiny)
    if v.compiled:
        compile_state(state, ec.compile_backend)
    gen = torch.Generator().manual_seed(0)
    batches = [
        synthetic_batch(cfg, vocab, batch_size, device, generator=gen) for _ in range(ec.n_batches)
    ]
    step = lambda b=batches[0]: gan_train_step(state, b)  # noqa: E731
    out: dict[str, Any] = {}
    t0 = time.perf_counter()
    for k in range(max(1, ec.warmup)):
        step(batches[k % len(batches)])
    _sync(device)
    out["warmup_s"] = time.perf_counter() - t0
    t = measure(
        step,
        batches,
        device=device,
        warmup=0,
        min_reps=ec.min_reps,
        max_reps=ec.max_reps,
        target_ms=ec.target_ms,
    )
    out.update(t.to_dict())
    out["images_per_s"] = batch_size / (t.median_ms * 1e-3)
    out["peak_gib"] = _peak_gib(step, device)
    if want_flops:
        out["flops_per_iter"] = count_flops(step)
    if v.profile:
        out["phases_ms"] = profile_phases(state, step)
    return out


def _peak_gib(step: Callable[[], object], device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    _sync(device)
    torch.cuda.reset_peak_memory_stats(device)
    step()
    _sync(device)
    return torch.cuda.max_memory_allocated(device) / 2**30


def profile_phases(state, step: Callable[[], object]) -> dict[str, float]:
    """Device time (CPU time on a CPU) per phase of one iteration, from ``torch.profiler``."""
    ranges = PhaseRanges()
    ranges.module(state.text_encoder, "text_encoder")
    ranges.module(state.netG, "G")
    for d_loss, d in zip(state.d_losses, state.discriminators):
        ranges.module(d_loss, "D")
        for m in (d, getattr(d, "COND_DNET", None), getattr(d, "UNCOND_DNET", None)):
            if isinstance(m, nn.Module):
                ranges.module(m, "D")
    ranges.module(state.image_encoder, "image_encoder")
    ranges.function(ops, "damsm_loss", "DAMSM")
    ranges.function(ops.original, "words_loss", "DAMSM")
    ranges.function(ops.original, "sent_loss", "DAMSM")
    ranges.function(state.ema, "update", "EMA")
    optimizers = {id(o): "optim_D" for o in state.optimizers_d}
    optimizers[id(state.optimizer_g)] = "optim_G"
    for opt in [*state.optimizers_d, state.optimizer_g]:
        ranges.function(opt, "step", optimizers[id(opt)])
    with ranges:
        return phase_times(step, state.device)


# --- the whole section ------------------------------------------------------------------------


def e2e_plan(
    configs: Sequence[str], large_batch: bool, tiny: bool
) -> list[tuple[str, Config, int]]:
    """(config name, Config, batch size) in run order: each config's batch, then the large one."""
    if tiny:
        return [("tiny", tiny_config(), 2)]
    plan = [(c, preset(c), preset(c).TRAIN.BATCH_SIZE) for c in configs]
    if large_batch:
        plan += [(c, preset(c), E2E_LARGE_BATCH[c]) for c in configs]
    return plan


# seconds a variant needs at least before it is started (compile is slow)
MIN_LEFT_S = {"a": 20.0, "b": 20.0, "c": 60.0}


def run_e2e(
    configs: Sequence[str],
    device: torch.device | str,
    ceilings: Ceilings,
    ec: E2EConfig | None = None,
    variants: Sequence[str] = ("a", "b", "c"),
    large_batch: bool = True,
    deadline: float | None = None,
    log: Callable[[str], None] = print,
    checkpoint: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Rows for every (config, batch) x variant, in order, until ``deadline`` (monotonic s).

    A variant starts only with ``MIN_LEFT_S`` of the budget left; ``checkpoint`` gets the
    partial result after every (config, batch).
    """
    device = torch.device(device)
    ec = ec or E2EConfig()
    rows: list[dict] = []
    skipped: list[str] = []
    for name, cfg, batch in e2e_plan(configs, large_batch, ec.tiny):
        group = []
        for key in variants:
            v = VARIANTS[key]
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left < (0 if ec.tiny else MIN_LEFT_S[key]):
                skipped.append(f"{name} b{batch} {key}")
                continue
            t0 = time.perf_counter()
            try:
                count = not v.compiled and not any(r.get("flops_per_iter") for r in group)
                row = run_variant(cfg, name, batch, v, device, ec, want_flops=count)
            except Exception as exc:  # e.g. out of memory at the large batch: report, go on
                row = {"config": name, "batch": batch, "variant": key, "label": v.label}
                row["precision"] = ec.precision or v.precision
                row["status"] = f"error: {type(exc).__name__}: {str(exc)[:300]}"
                _clean(device)
            group.append(row)
            log(_progress(row, time.perf_counter() - t0))
        finish_group(group, ceilings, name)
        rows += group
        if checkpoint is not None:
            checkpoint({"rows": rows, "skipped": skipped})
    return {"rows": rows, "skipped": skipped}


def finish_group(group: list[dict], ceilings: Ceilings, config_name: str) -> None:
    """Cross-variant numbers of one (config, batch): speed-ups, memory ratio, MFU, epoch time."""
    ok = {r["variant"]: r for r in group if r.get("status") == "ok"}
    flops = next((r["flops_per_iter"] for r in group if r.get("flops_per_iter")), None)
    peak = ceilings.matmul_tflops.get("bf16")
    for r in ok.values():
        for base in ("a", "c"):
            ref = ok.get(base)
            r[f"speedup_vs_{base}"] = ref["median_ms"] / r["median_ms"] if ref else None
        ref_mem = ok.get("a", {}).get("peak_gib")
        r["memory_vs_a"] = r["peak_gib"] / ref_mem if ref_mem and r.get("peak_gib") else None
        r["model_flops_per_iter"] = flops
        seconds = r["median_ms"] * 1e-3
        r["mfu_bf16"] = flops / seconds / (peak * 1e12) if flops and peak else None
        if config_name == "birds":
            iters = math.floor(CUB_TRAIN_IMAGES / r["batch"])  # the loader drops the last batch
            r["cub_600_epochs_h"] = CUB_EPOCHS * iters * seconds / 3600


def _progress(row: dict, seconds: float) -> str:
    head = f"[e2e] {row['config']:6s} b{row['batch']:<3d} {row['label']:28s}"
    if row.get("status") != "ok":
        return f"{head} {row.get('status')} ({seconds:.0f}s)"
    return (
        f"{head} {row['median_ms']:9.1f} ms/iter  {row['images_per_s']:7.1f} img/s "
        f"(warm-up {row['warmup_s']:.1f}s, total {seconds:.0f}s)"
    )
