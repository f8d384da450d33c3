"""The whole generator on the fast backends equals G on the reference backend.

G_NET is run in training mode with ``ATTNGAN_FAST_BACKEND`` set to ``triton`` and to ``torch``
(float32), and with ``torch`` in float64 (the exact result); images, the gradient of every
parameter and the BatchNorm running statistics must follow the parity rule of ``tests/parity.py``.

On CPU the Triton kernels run through the interpreter, where the first stage alone (INIT_STAGE_G:
BatchNorm1d + GLU and four fused upBlocks, then the 64 px image) takes about a minute; the whole
three-stage birds G (word attention, ResBlocks) runs on a GPU.
"""

import copy

import pytest
import torch
from parity import assert_rel_parity

from attngan_fast.models import G_NET, init_weights
from attngan_fast.ops import registry


def _inputs(batch, words, device):
    mask = torch.zeros(batch, words, dtype=torch.bool, device=device)
    mask[0, words // 2 :] = True  # one short caption, the others full
    mask[-1, 1:] = True  # and one with a single word
    return [
        torch.randn(batch, 100, device=device),
        torch.randn(batch, 256, device=device),
        torch.randn(batch, 256, words, device=device),
        mask,
    ]


def _step(g, inputs, backend, monkeypatch, dtype):
    """One training forward + backward: (images..., parameter grads..., running stats...)."""
    monkeypatch.setenv(registry.ENV_VAR, backend)
    g = copy.deepcopy(g).to(dtype).train()
    inputs = [t.to(dtype) if t.is_floating_point() else t for t in inputs]
    torch.manual_seed(1)  # the same noise in CA_NET
    images, _, _, _ = g(*inputs)
    # a fixed, non-constant weighting of every pixel: all gradients are non-trivial
    loss = sum(
        (im * torch.linspace(-1, 1, im.numel(), device=im.device, dtype=dtype).view_as(im)).sum()
        for im in images
    )
    params = [p for p in g.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, params)
    stats = [b for name, b in g.named_buffers() if "running" in name]
    return [*images, *grads, *stats]


def _check_g(g, inputs, monkeypatch):
    got = _step(g, inputs, "triton", monkeypatch, torch.float32)
    ref = _step(g, inputs, "torch", monkeypatch, torch.float32)
    exact = _step(g, inputs, "torch", monkeypatch, torch.float64)
    assert len(got) == len(exact)
    # many ops deep, BatchNorm sums that cancel (grads of biases): the block chain's slack
    for i, (a, r, e) in enumerate(zip(got, ref, exact)):
        assert_rel_parity(f"output {i}", a, r, e, torch.float32, slack_eps=64)


@pytest.mark.slow
def test_first_stage_of_g_triton_equals_torch(monkeypatch):
    g = init_weights(G_NET(ngf=4, r_num=1, branch_num=1))
    _check_g(g, _inputs(2, 5, "cpu" if not torch.cuda.is_available() else "cuda"), monkeypatch)


@pytest.mark.gpu
def test_whole_birds_g_triton_equals_torch(monkeypatch):
    # float32 means float32 here: no TF32 in cuDNN's convs nor in the Triton conv kernels
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    g = init_weights(G_NET(ngf=32, r_num=2, branch_num=3)).cuda()
    _check_g(g, _inputs(4, 18, "cuda"), monkeypatch)
