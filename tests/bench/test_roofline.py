"""Roofline arithmetic against hand counts, and the FLOP counter mapping of the custom ops."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from attngan_fast import ops
from attngan_fast.bench.roofline import (
    Ceilings,
    flop_counter_mapping,
    measure_ceilings,
    op_cost,
    roofline_metrics,
)
from attngan_fast.bench.shapes import OpShape

WA = OpShape("word_attention", "t", "tiny", "tiny", {"B": 2, "C": 3, "H": 2, "W": 2, "T": 5})


def test_word_attention_cost_by_hand():
    # B N T C = 2 * 4 * 5 * 3 = 120; two contractions forward, five backward (recompute)
    fwd = op_cost(WA, torch.float32, "fwd")
    assert fwd.flops == 4 * 120
    # read query (24) and source (30) and the mask (10 bytes), write context (24)
    assert fwd.bytes == 4 * (24 + 30 + 24) + 10
    bwd = op_cost(WA, torch.float32, "bwd")
    assert bwd.flops == 10 * 120
    assert bwd.bytes == 4 * (3 * 24 + 2 * 30) + 10
    both = op_cost(WA, torch.bfloat16, "fwd+bwd")
    assert both.flops == 14 * 120 and both.bytes == 2 * (78 + 132) + 20
    with pytest.raises(ValueError):
        op_cost(WA, torch.float32, "sideways")


def test_upsample_conv_counts_the_four_phases():
    s = OpShape(
        "upsample_conv3x3", "t", "tiny", "tiny", {"B": 2, "Cin": 3, "Cout": 4, "H": 5, "W": 5}
    )
    fwd = op_cost(s, torch.float32, "fwd")
    assert fwd.flops == 2 * 2 * 4 * 100 * 4 * 3  # 4 taps per output pixel, 2x2 phase kernels
    assert fwd.bytes == 4 * (2 * 3 * 25 + 4 * 3 * 9 + 2 * 4 * 100)
    assert op_cost(s, torch.float32, "bwd").flops == 2 * fwd.flops


def test_blocks_cost_the_sum_of_their_ops():
    conv = {"B": 2, "Cin": 3, "Cout": 4, "H": 5, "W": 5}
    bn = {"B": 2, "C": 4, "H": 10, "W": 10}
    for pass_ in ("fwd", "bwd", "fwd+bwd"):
        up = op_cost(OpShape("up_block", "t", "tiny", "tiny", conv), torch.bfloat16, pass_)
        parts = op_cost(OpShape("upsample_conv3x3", "t", "tiny", "tiny", conv), torch.bfloat16,
                        pass_) + op_cost(OpShape("batch_norm_glu", "t", "tiny", "tiny", bn),
                                         torch.bfloat16, pass_)  # fmt: skip
        assert up == parts
    res = op_cost(OpShape("res_block", "t", "tiny", "tiny", {"B": 2, "C": 3, "H": 4, "W": 4}),
                  torch.float32, "fwd")  # fmt: skip
    # conv3x3 3 -> 6 and 3 -> 3 on 16 pixels: 2 B HW Cin Cout 9
    conv_flops = 2 * 2 * 16 * 9 * (3 * 6 + 3 * 3)
    glu = op_cost(OpShape("batch_norm_glu", "t", "tiny", "tiny", {"B": 2, "C": 6, "H": 4, "W": 4}),
                  torch.float32, "fwd")  # fmt: skip
    add = op_cost(OpShape("batch_norm_add", "t", "tiny", "tiny", {"B": 2, "C": 3, "H": 4, "W": 4}),
                  torch.float32, "fwd")  # fmt: skip
    assert res.flops == conv_flops + glu.flops + add.flops
    conv_bytes = 4 * ((96 + 162 + 192) + (96 + 81 + 96))  # x, weight, y of each conv
    assert res.bytes == conv_bytes + glu.bytes + add.bytes


def test_roofline_metrics_pick_the_binding_ceiling():
    c = Ceilings("x", hbm_gbps=100.0, matmul_tflops={"bf16": 2.0, "tf32": 1.0, "fp32": 0.5})
    cost = op_cost(WA, torch.float32, "fwd")
    m = roofline_metrics(cost, ms=0.01, dtype=torch.float32, ceilings=c)
    assert m["gbps"] == pytest.approx(cost.bytes / 1e-5 / 1e9)
    assert m["tflops"] == pytest.approx(cost.flops / 1e-5 / 1e12)
    t_mem, t_math = cost.bytes / 100e9, cost.flops / 1e12  # fp32 uses the TF32 peak
    assert m["bound"] == ("memory" if t_mem >= t_math else "compute")
    assert m["roofline_frac"] == pytest.approx(max(t_mem, t_math) / 1e-5)
    assert c.peak_tflops(torch.bfloat16) == 2.0 and c.peak_tflops(torch.float64) == 0.5


def test_measured_ceilings_are_positive():
    c = measure_ceilings("cpu", small=True)
    assert c.hbm_gbps > 0 and all(v > 0 for v in c.matmul_tflops.values())
    assert set(c.matmul_tflops) == {"bf16", "tf32", "fp32"}


def test_flop_counter_sees_the_custom_ops_like_plain_pytorch():
    q = torch.randn(2, 4, 6, requires_grad=True)
    s = torch.randn(2, 4, 3, requires_grad=True)
    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    w = torch.randn(5, 3, 3, 3, requires_grad=True)
    counts = []
    for wa, up in (
        (ops.word_attention, ops.upsample_conv3x3),
        (ops.word_attention_reference, ops.upsample_conv3x3_reference),
    ):
        with FlopCounterMode(display=False, custom_mapping=flop_counter_mapping()) as fc:
            wa(q, s, None, need_attn=False)[0].sum().backward()
            up(x, w).sum().backward()
        counts.append(fc.get_total_flops())
    assert counts[0] == counts[1] > 0
