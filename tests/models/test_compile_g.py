"""``torch.compile(fullgraph=True)`` of G's forward (tiny configuration).

On the CPU the graphs are captured whole (no graph break: fullgraph) and run through AOTAutograd
with fake tensors (backend ``aot_eager``), which checks the ops' registrations, the in-place
BatchNorm statistics and the backward; Inductor's C++ code generation is left out (a cold compile
takes minutes on two cores). On a GPU the Inductor backend is tested too.
"""

import copy

import pytest
import torch
import torch._inductor.config as inductor_config

from attngan_fast.models import G_NET, init_weights


def tiny_inputs(device="cpu"):
    t = 7
    mask = torch.zeros(2, t, dtype=torch.bool)
    mask[0, 4:] = True
    inputs = torch.randn(2, 100), torch.randn(2, 256), torch.randn(2, 256, t), mask
    return [x.to(device) for x in inputs]


def tiny_generator():
    return init_weights(G_NET(ngf=8, r_num=1, branch_num=2))


def test_compile_fullgraph_eval():
    g = tiny_generator().eval()
    inputs = tiny_inputs()
    torch.manual_seed(1)
    ref = g(*inputs)
    compiled = torch.compile(g, fullgraph=True, backend="aot_eager")
    torch.manual_seed(1)
    out = compiled(*inputs)
    torch.testing.assert_close(out, ref)
    _, att_maps, _, _ = compiled(*inputs, need_attn=False)
    assert att_maps == []


def test_compile_fullgraph_train_step_matches_eager():
    """Training mode: outputs, gradients and BN running statistics as in eager mode."""
    g = tiny_generator().train()
    g_eager = copy.deepcopy(g)
    compiled = torch.compile(g, fullgraph=True, backend="aot_eager")
    inputs = tiny_inputs()
    for net in (g_eager, compiled):
        torch.manual_seed(2)
        imgs, att_maps, mu, logvar = net(*inputs)
        (sum(i.square().mean() for i in imgs) + att_maps[0].mean() + logvar.mean()).backward()
    torch.testing.assert_close(dict(g.named_buffers()), dict(g_eager.named_buffers()))
    assert int(g.h_net2.upsample[2].num_batches_tracked) == 1
    for (name, p), p_ref in zip(g.named_parameters(), g_eager.parameters()):
        torch.testing.assert_close(p.grad, p_ref.grad, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.gpu
def test_compile_fullgraph_inductor_cuda(monkeypatch):
    monkeypatch.setattr(inductor_config, "fallback_random", True)  # eager RNG for CA_NET's noise
    g = tiny_generator().cuda().train()
    g_eager = copy.deepcopy(g)
    inputs = tiny_inputs("cuda")
    compiled = torch.compile(g, fullgraph=True, backend="inductor")
    outs = []
    for net in (g_eager, compiled):
        torch.manual_seed(3)
        outs.append(net(*inputs))
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(dict(g.named_buffers()), dict(g_eager.named_buffers()))
