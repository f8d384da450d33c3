"""One GAN iteration: runs in fp32 and bf16 autocast, updates what it should, keeps D trainable."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from train_helpers import tiny_gan_cfg

from attngan_fast import ops
from attngan_fast.train.gan_step import (
    build_gan_state,
    compile_models,
    gan_train_step,
    synthetic_batch,
)

VOCAB = 30


def _state(precision="fp32", **kw):
    return build_gan_state(
        tiny_gan_cfg(), VOCAB, "cpu", precision, image_encoder_kind="small", **kw
    )


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_step_runs_and_updates(precision):
    torch.manual_seed(0)
    state = _state(precision)
    batch = synthetic_batch(state.cfg, VOCAB, 4)
    g_before = [p.detach().clone() for p in state.generator.parameters()]
    d_before = [p.detach().clone() for p in state.discriminators.parameters()]
    enc_before = [p.detach().clone() for p in state.text_encoder.parameters()]
    ema_before = [p.clone() for p in state.ema.params]
    logs = gan_train_step(state, batch)
    expected = {"errD0", "errD1", "g_loss0", "g_loss1", "w_loss", "s_loss", "kl_loss", "errG_total"}
    assert set(logs) == expected and all(math.isfinite(v) for v in logs.values())
    assert state.step == 1
    assert all(not torch.equal(a, b) for a, b in zip(g_before, state.generator.parameters()))
    changed_d = [not torch.equal(a, b) for a, b in zip(d_before, state.discriminators.parameters())]
    assert all(changed_d)
    assert all(torch.equal(a, b) for a, b in zip(enc_before, state.text_encoder.parameters()))
    assert all(p.requires_grad for p in state.discriminators.parameters())
    assert all(not p.requires_grad for p in state.image_encoder.parameters())
    for before, avg, p in zip(ema_before, state.ema.params, state.generator.parameters()):
        torch.testing.assert_close(avg, 0.999 * before + 0.001 * p.detach(), rtol=0, atol=1e-6)


class _DtypesSeen(TorchDispatchMode):
    """Records, per op name, the dtypes of the floating tensors each call takes and returns."""

    def __init__(self):
        super().__init__()
        self.calls: dict[str, list[tuple[tuple, tuple]]] = {}
        self.weights: dict[str, list[int | None]] = {}  # per call, its 2nd argument's data_ptr

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))

        def dtypes(values):
            flat = [t for v in values for t in (v if isinstance(v, (list, tuple)) else [v])]
            return tuple(
                t.dtype for t in flat if isinstance(t, torch.Tensor) and t.is_floating_point()
            )

        outs = out if isinstance(out, (list, tuple)) else [out]
        self.calls.setdefault(func._schema.name, []).append((dtypes(args), dtypes(outs)))
        weight = args[1] if len(args) > 1 and isinstance(args[1], torch.Tensor) else None
        self.weights.setdefault(func._schema.name, []).append(
            None if weight is None else weight.data_ptr()
        )
        return out


def _custom_op(op: str) -> str | None:
    """The name of the custom op that runs ``op`` on CPU tensors (the backend chosen there), None
    where that backend runs it as a composite of PyTorch operations (no custom op)."""
    backend = ops.resolve_backend(op, "cpu")
    if ops.registry.implementation(op, backend).composite is not None:
        return None
    return f"attngan_fast::{op}_{backend}"


@pytest.mark.parametrize("backend", ["torch", "auto"])  # auto: the cpu backend where it has the op
def test_bf16_step_runs_under_autocast_with_fp32_statistics(backend):
    """bf16: convolutions and G's fused ops take bfloat16, while BatchNorm's parameters, running
    and batch statistics, the attention's log-sum-exp, the softmaxes and the DAMSM similarity are
    float32; parameters, optimiser moments and EMA stay float32. (Without autocast nothing would
    be bfloat16: the fp32 step sees no bfloat16 tensor at all.) On the CPU the Ds' logit heads
    (4 x 4 maps, where oneDNN's bf16 kernels are slower) are the convolutions that run in fp32."""
    bf16, fp32 = torch.bfloat16, torch.float32
    seen, states, weights = {}, {}, {}
    for precision in ("bf16", "fp32"):
        torch.manual_seed(0)
        state = states[precision] = _state(precision)
        batch = synthetic_batch(state.cfg, VOCAB, 4, generator=torch.Generator().manual_seed(1))
        with ops.use_backend(backend), _DtypesSeen() as record:
            gan_train_step(state, batch)
        seen[precision], weights[precision] = record.calls, record.weights
    every_dtype = {d for calls in seen["fp32"].values() for i, o in calls for d in i + o}
    assert bf16 not in every_dtype
    calls = seen["bf16"]
    heads = [head for d in states["bf16"].discriminators for head in (d.COND_DNET, d.UNCOND_DNET)]
    # The heads' convolutions and BatchNorm take their parameters themselves in fp32 (a bf16
    # convolution takes a cast copy of its weight), so a call is a head's by its weight.
    head_params = {p.data_ptr() for head in heads if head is not None for p in head.parameters()}

    def split(op: str) -> tuple[list, list]:
        """``op``'s calls (dtypes in, dtypes out): those of the Ds' heads, the others."""
        assert calls[op] and len(calls[op]) == len(weights["bf16"][op])
        pairs = list(zip(calls[op], weights["bf16"][op]))
        in_heads = [c for c, w in pairs if w in head_params]
        return in_heads, [c for c, w in pairs if w not in head_params]

    head_convs, convs = split("aten::convolution")
    assert head_convs and convs
    assert all(i == (fp32,) * len(i) for i, _ in head_convs)
    assert all(i == (bf16,) * len(i) for i, _ in convs)
    with ops.use_backend(backend):
        up_block, bn_act, attention, damsm = map(
            _custom_op,
            (
                "upsample_conv3x3_bn_glu",
                "batch_norm_act",
                "word_attention",
                "damsm_word_similarity",
            ),
        )
    # the cpu backend's upBlock is a composite: its conv is among the convolutions above, its
    # BatchNorm + GLU among the batch_norm_act calls below
    assert (up_block is None) == (backend == "auto")
    for x_in, x_out in calls[up_block] if up_block else ():  # G's upBlocks
        # x, conv weight | BN weight, bias, running mean, var -> y | batch mean, invstd (+ conv)
        assert x_in[:2] == (bf16, bf16) and x_in[2:] == (fp32,) * 4
        assert x_out[0] == bf16 and x_out[-2:] == (fp32, fp32)
    for x_in, x_out in calls[bn_act]:  # fc's, the ResBlocks' (and the cpu upBlocks') BN
        assert x_in[0] == bf16 and x_in[-4:] == (fp32,) * 4 and x_out[-2:] == (fp32, fp32)
    # the cpu backend's word attention is a composite too: its bf16 scores are softmaxed in fp32
    # (the softmaxes below)
    assert (attention is None) == (backend == "auto")
    for x_in, x_out in calls[attention] if attention else ():
        assert x_in == (bf16, bf16) and x_out[-1] == fp32  # log-sum-exp of the softmax: fp32
    head_bns, bns = split("aten::native_batch_norm")  # the Ds' BatchNorm2d
    for x_in, x_out in bns:
        assert x_in[0] == bf16 and x_in[1:] == (fp32,) * 4 and x_out[1:] == (fp32, fp32)
    assert head_bns and all(
        x_in == (fp32,) * 5 and x_out == (fp32,) * 3 for x_in, x_out in head_bns
    )
    softmaxes = [
        c for name in ("aten::_softmax", "aten::_log_softmax") for c in calls.get(name, [])
    ]
    assert softmaxes and all(x_in == (fp32,) and x_out == (fp32,) for x_in, x_out in softmaxes)
    assert (damsm is None) == (backend == "auto")  # the cpu backend's is a float32 composite
    assert all(c == ((fp32, fp32), (fp32,)) for c in (calls[damsm] if damsm else ()))
    state = states["bf16"]
    tensors = [*state.generator.state_dict().values(), *state.discriminators.state_dict().values()]
    tensors += list(state.ema.params)
    tensors += [v for s in state.optimizer_g.state.values() for v in s.values() if v.dim()]
    assert all(t.dtype == fp32 for t in tensors if t.is_floating_point())


def _step_logs(seed: int, **variant) -> dict[str, float]:
    """One step of a fresh state built with ``variant``: same init, batch and noise per seed."""
    torch.manual_seed(seed)
    state = _state(**variant)
    gen = torch.Generator().manual_seed(seed + 1)
    batch = synthetic_batch(state.cfg, VOCAB, 4, generator=gen)
    torch.manual_seed(seed + 2)
    return gan_train_step(state, batch)


def test_original_damsm_loop_matches_fused():
    """Same init, same batch, same noise: the faithful loop and the fused op agree."""
    logs = [_step_logs(1, original_damsm_loop=original) for original in (False, True)]
    for key in ("w_loss", "s_loss", "errD0", "errD1", "g_loss1"):
        assert logs[0][key] == pytest.approx(logs[1][key], rel=1e-4, abs=1e-5), key


def test_channels_last_matches_contiguous():
    logs = [_step_logs(4, channels_last=channels_last) for channels_last in (False, True)]
    for key, value in logs[0].items():
        assert value == pytest.approx(logs[1][key], rel=1e-3, abs=1e-4), key


def test_compiled_models_match_eager_and_keep_their_keys():
    """compile_models (dynamo traced; the eager backend keeps the test fast): the same losses, the
    same state-dict keys (checkpoints stay loadable)."""
    logs, keys = [], []
    for compiled in (False, True):
        torch.manual_seed(7)
        state = _state()
        if compiled:
            compile_models(state, backend="eager")
        batch = synthetic_batch(state.cfg, VOCAB, 4, generator=torch.Generator().manual_seed(8))
        torch.manual_seed(9)
        logs.append(gan_train_step(state, batch))
        keys.append((list(state.generator.state_dict()), list(state.discriminators.state_dict())))
    assert keys[0] == keys[1]
    for key, value in logs[0].items():
        assert value == pytest.approx(logs[1][key], rel=1e-4, abs=1e-5), key


def test_cpu_adam_is_fused():
    state = _state()
    assert state.optimizer_g.defaults["fused"] and state.optimizers_d[0].defaults["fused"]


def test_synthetic_batch_shapes():
    cfg = tiny_gan_cfg()
    b = synthetic_batch(cfg, VOCAB, 5)
    assert [tuple(x.shape) for x in b.images] == [(5, 3, 64, 64), (5, 3, 128, 128)]
    assert b.captions.shape == (5, cfg.TEXT.WORDS_NUM) and int(b.cap_lens.max()) == 12
    assert all(int((row != 0).sum()) == n for row, n in zip(b.captions, b.cap_lens))


def test_fp16_needs_cuda():
    with pytest.raises(ValueError, match="CUDA"):
        _state("fp16")


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_step_on_gpu(precision):
    torch.manual_seed(0)
    state = build_gan_state(
        tiny_gan_cfg(), VOCAB, "cuda", precision, image_encoder_kind="small", channels_last=True
    )
    batch = synthetic_batch(state.cfg, VOCAB, 4, "cuda")
    for _ in range(3):
        logs = gan_train_step(state, batch)
    assert all(math.isfinite(v) for v in logs.values())
    if precision == "fp16":
        assert state.scaler is not None and state.scaler.get_scale() > 0
