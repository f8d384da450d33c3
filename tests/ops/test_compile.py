"""torch.compile(fullgraph=True) of code using every op, forward and backward, on the CPU."""

import torch

from attngan_fast import ops


def _block(x, weight, bn_w, bn_b, query, source, mask, img_global, sent, lens):
    y = ops.upsample_conv3x3(x, weight)
    y = ops.batch_norm_glu(y, bn_w, bn_b, None, None, True, 0.1, 1e-5)
    y = y + ops.upsample_conv3x3_bn_glu(x, weight[:4], bn_w[:4], bn_b[:4], None, None, True, 0.1,
                                        1e-5).mean()  # fmt: skip
    y = ops.batch_norm_add(y, y * 0.5, None, None, None, None, True, 0.1, 1e-5)
    context, _ = ops.word_attention(query, source, mask, need_attn=False)
    loss = ops.damsm_loss(y, img_global, source, sent, lens, None, 4.0, 5.0, 10.0)
    return y.square().mean() + context.square().mean() + sum(loss[:4])


def test_fullgraph_compile_matches_eager():
    torch._dynamo.reset()
    args = [
        torch.randn(2, 3, 3, 3, requires_grad=True),
        torch.randn(8, 3, 3, 3, requires_grad=True),
        torch.rand(8, requires_grad=True),
        torch.randn(8, requires_grad=True),
        torch.randn(2, 4, 5, requires_grad=True),
        torch.randn(2, 4, 6, requires_grad=True),
        torch.tensor([[False] * 6, [False, False] + [True] * 4]),
        torch.randn(2, 4, requires_grad=True),
        torch.randn(2, 4, requires_grad=True),
        torch.tensor([6, 2]),
    ]
    compiled = torch.compile(_block, fullgraph=True)
    out = compiled(*args)
    ref = _block(*args)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    leaves = [a for a in args if a.requires_grad]
    for g, r in zip(torch.autograd.grad(out, leaves), torch.autograd.grad(ref, leaves)):
        torch.testing.assert_close(g, r, rtol=1e-3, atol=1e-5)
