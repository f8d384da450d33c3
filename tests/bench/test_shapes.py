"""The benchmark shapes: one table, consistent with the configs, every op covered."""

from attngan_fast.bench.shapes import (
    CONFIGS,
    OPS,
    TINY_SHAPES,
    all_shapes,
    model_sizes,
    op_shapes,
)
from attngan_fast.config import preset


def test_every_op_has_birds_and_coco_shapes_and_a_tiny_one():
    for config in CONFIGS:
        ops_seen = {s.op for s in op_shapes(config)}
        assert ops_seen == set(OPS), config
    assert sorted(s.op for s in TINY_SHAPES) == sorted(OPS)


def test_core_tier_covers_every_op_and_both_configs_for_the_text_ops():
    core = all_shapes(("core",))
    assert {s.op for s in core} == set(OPS)
    for op in ("word_attention", "damsm_loss"):
        assert {s.config for s in core if s.op == op} == {"birds", "coco"}


def test_shapes_follow_the_configs():
    for config in CONFIGS:
        cfg, m = preset(config), model_sizes(config)
        ngf, batch = cfg.GAN.GF_DIM, cfg.TRAIN.BATCH_SIZE
        for s in op_shapes(config):
            d = s.dims
            assert s.config == config and s.tier in ("core", "extra")
            if s.op == "word_attention":
                assert d["C"] == ngf and d["H"] * d["W"] in (64**2, 128**2)
                assert d["T"] in (cfg.TEXT.WORDS_NUM, 25)
            elif s.op == "damsm_loss":
                assert (d["D"], d["H"] * d["W"]) == (256, 289)
                assert bool(d["classes"]) == (config == "birds")
            elif s.op in ("upsample_conv3x3", "up_block"):
                assert d["Cout"] in (2 * ngf, 4 * ngf, 8 * ngf, 16 * ngf) and d["B"] == batch
            elif s.op == "res_block":
                assert d["B"] == batch and d["C"] == 2 * ngf and d["H"] in (64, 128)
            else:
                assert d["B"] == batch and d["C"] % 2 == 0
        glu = {s.name: s.dims for s in op_shapes(config) if s.op == "batch_norm_glu"}
        assert glu["init_fc"]["C"] == 16 * ngf * 4 * 4 * 2
        assert glu["next2_up"] == {"B": batch, "C": 2 * ngf, "H": 256, "W": 256}
        assert glu["next2_res"]["C"] == 4 * ngf and m.ngf == ngf
        up = {s.name: s.dims for s in op_shapes(config) if s.op == "up_block"}
        conv = {s.name: s.dims for s in op_shapes(config) if s.op == "upsample_conv3x3"}
        assert up == conv  # the whole upBlock at each of its conv's shapes


def test_names_are_unique_and_the_large_word_attention_batch_fills_the_gpu():
    shapes = all_shapes(("tiny", "core", "extra"))
    keys = [(s.op, s.label) for s in shapes]
    assert len(keys) == len(set(keys))
    big = [s for s in shapes if s.op == "word_attention" and s.dims["B"] >= 64]
    assert big and all(s.dims["B"] * s.dims["H"] * s.dims["W"] >= 10**6 for s in big)


def test_tier_order_is_core_before_extra():
    tiers = [s.tier for s in all_shapes(("core", "extra"))]
    assert tiers == sorted(tiers, key=("core", "extra").index)
