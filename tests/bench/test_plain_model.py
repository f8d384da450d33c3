"""The baselines' plain-PyTorch model runs the ops on the reference backend and computes what the
original code computes (oracles written from the original: ``tests/fixtures/original_forward.py``
and ``ops.original``'s loop)."""

import copy

import pytest
import torch
from fixtures.original_forward import g_net_forward
from torch.utils._python_dispatch import TorchDispatchMode

from attngan_fast import ops
from attngan_fast.bench.e2e import COMPILED_REFERENCE, plain_pytorch, tiny_config
from attngan_fast.ops import original, registry
from attngan_fast.runtime.networks import build_generator


def test_plain_pytorch_selects_the_reference_backend_and_restores_the_choice():
    automatic = {op: ops.resolve_backend(op) for op in registry.op_names()}
    assert "reference" not in automatic.values()
    with plain_pytorch():
        for op in registry.op_names():
            assert ops.resolve_backend(op) == "reference", op
    with plain_pytorch(compile_backend="eager"):
        assert ops.resolve_backend("damsm_word_similarity") == COMPILED_REFERENCE
        assert ops.resolve_backend("word_attention") == "reference"
    assert COMPILED_REFERENCE not in registry.backend_names("damsm_word_similarity")
    assert {op: ops.resolve_backend(op) for op in registry.op_names()} == automatic


def test_generator_in_plain_pytorch_is_the_original_forward():
    """The baselines' model against an oracle written from the original code (training mode:
    BatchNorm on batch statistics), and the fused model against the same oracle."""
    cfg = tiny_config()
    g1 = build_generator(cfg)
    g2 = copy.deepcopy(g1)
    state = {k: v.clone() for k, v in g1.state_dict().items()}
    nef = cfg.TEXT.EMBEDDING_DIM
    z, sent = torch.randn(3, cfg.GAN.Z_DIM), torch.randn(3, nef)
    words = torch.randn(3, nef, 5)
    mask = torch.tensor([[False] * 5, [False] * 3 + [True] * 2, [False] + [True] * 4])
    torch.manual_seed(1)
    eps = torch.randn(3, cfg.GAN.CONDITION_DIM)  # what CA_NET draws after the same seed
    want, want_att = g_net_forward(state, z, eps, sent, words, mask, training=True)
    torch.manual_seed(1)
    fused, fused_att, _, _ = g1(z, sent, words, mask)
    torch.manual_seed(1)
    with plain_pytorch():
        plain, plain_att, _, _ = g2(z, sent, words, mask)
    for got in (plain + plain_att, fused + fused_att):
        for x, y in zip(got, want + want_att, strict=True):
            torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("compile_backend", [None, "eager"])
def test_plain_damsm_loss_is_the_original_loop(compile_backend):
    """The baselines' DAMSM loss (eager, and with the compiled similarity) against the original
    per-caption loop (``words_loss``, ``sent_loss`` as the original wrote them), same-class
    pairs masked; no custom op runs."""
    torch.manual_seed(0)
    b, d, t = 4, 8, 5
    args = (torch.randn(b, d, 3, 3), torch.randn(b, d), torch.randn(b, d, t), torch.randn(b, d))
    lens, classes = torch.tensor([5, 2, 1, 4]), torch.tensor([0, 1, 0, 2])
    local, code, words, sent = args
    labels = torch.arange(b)
    w0, w1, _, _ = original.words_loss(local, words, labels, lens, classes, b, 4.0, 5.0, 10.0)
    s0, s1 = original.sent_loss(code, sent, labels, classes, b, 10.0)
    with plain_pytorch(compile_backend), _OpNames() as names:
        got = ops.damsm_loss(*args, lens, classes, 4.0, 5.0, 10.0)
    assert not {n for n in names.names if n.startswith("attngan_fast::")}
    for x, y in zip(got[:4], (w0, w1, s0, s1), strict=True):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-5)


class _OpNames(TorchDispatchMode):
    """Records the name of every op dispatched while active."""

    def __init__(self):
        super().__init__()
        self.names = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.add(func._schema.name)
        return func(*args, **(kwargs or {}))


def test_plain_pytorch_reaches_every_call_site_of_the_fused_ops():
    """On the reference backend no custom op runs (every op of G is plain PyTorch)."""
    cfg = tiny_config()
    g = build_generator(cfg)
    z, sent, words = torch.randn(2, cfg.GAN.Z_DIM), torch.randn(2, 256), torch.randn(2, 256, 4)
    with ops.use_backend("torch"), _OpNames() as fused:  # every op of G a custom op
        g(z, sent, words, None, need_attn=False)
    with plain_pytorch(), _OpNames() as plain:
        g(z, sent, words, None, need_attn=False)
    custom = {n for n in fused.names if n.startswith("attngan_fast::")}
    assert {
        "attngan_fast::word_attention_torch",
        "attngan_fast::upsample_conv3x3_bn_glu_torch",
    } <= custom
    assert not {n for n in plain.names if n.startswith("attngan_fast::")}
