"""The real AttnGAN shapes every benchmark uses, listed in this one place.

Each op is measured at the shapes it has inside AttnGAN training (the original configurations,
``code/cfg/*.yml`` of taoxugit/AttnGAN), derived from the ``birds`` and ``coco`` presets of
``attngan_fast.config`` (ngf = GF_DIM, R_NUM, WORDS_NUM, batch size) so the numbers cannot drift
from the configs:

* ``word_attention``: C = ngf (32 birds, 48 coco), N = 64x64 (stage 2) and 128x128 (stage 3),
  T = WORDS_NUM (18 birds, 12 coco; 25 at evaluation), B = training batch (20 / 14) and a large one.
* ``damsm_loss``: D = 256, R = 17x17 = 289, B = 48 (DAMSM pretraining, T 18 / 15) and the GAN
  training batch (20 / 14, T 18 / 12), plus a large batch.
* ``upsample_conv3x3``: every upBlock of G: INIT_STAGE_G 16ngf -> 8ngf @4x4, 8ngf -> 4ngf @8x8,
  4ngf -> 2ngf @16x16, 2ngf -> ngf @32x32, and NEXT_STAGE_G 2ngf -> ngf @64x64 and @128x128
  (conv3x3(in, 2*out), output at twice the input size).
* ``batch_norm_glu``: after every upBlock conv (2*out channels at the output size), INIT_STAGE_G's
  BatchNorm1d on B x 16ngf*4*4*2, and the ResBlocks' first BN (4ngf @64x64, @128x128).
* ``batch_norm_add``: the ResBlocks' last BN + residual (2ngf @64x64, @128x128).
* ``up_block``: every upBlock whole (upsample + conv3x3 + BN + GLU, one op:
  ``upsample_conv3x3_bn_glu``), at the ``upsample_conv3x3`` shapes.
* ``res_block``: NEXT_STAGE_G's ResBlock whole (conv3x3 -> BN + GLU -> conv3x3 -> BN + residual),
  2ngf @64x64 and @128x128.

``tier`` orders the work: ``core`` shapes run first and always in ``benchmarks/run_gpu.sh`` (birds:
word attention at both stages, DAMSM at B 20 and 48, G's first and two last upBlocks and the
stage-3 ResBlock; coco: word attention at stage 3 and DAMSM at B 14); ``extra`` ones (large batch,
evaluation length, the other G blocks, coco's G widths and stage 2) run when time is left;
``tiny`` shapes are the CPU smoke set (seconds on a CPU, also through the Triton interpreter).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from attngan_fast.config import preset

OPS = (
    "word_attention",
    "damsm_loss",
    "upsample_conv3x3",
    "batch_norm_glu",
    "batch_norm_add",
    "up_block",
    "res_block",
)
CONFIGS = ("birds", "coco")
TIERS = ("core", "extra", "tiny")

EVAL_WORDS = 25  # longest caption at evaluation (WORDS_NUM of the original's eval_bird.yml)
DAMSM_DIM = 256
DAMSM_SIDE = 17  # 17 x 17 = 289 regions (Inception Mixed_6e)
DAMSM_PRETRAIN_BATCH = 48
LARGE_OP_BATCH = 64  # word attention: B*N = 64 * 128^2 > 1e6 regions
LARGE_DAMSM_BATCH = 100
# End-to-end: the config's batch and a larger one (skipped first when time runs short).
E2E_LARGE_BATCH = {"birds": 48, "coco": 48}
VOCAB_SIZE = {"birds": 5450, "coco": 27297}  # the original's released captions.pickle files
CUB_TRAIN_IMAGES = 8855  # images per CUB epoch (the original's birds/train/filenames.pickle)
CUB_EPOCHS = 600


@dataclass(frozen=True)
class OpShape:
    """One benchmark shape of one op. ``dims`` holds the op's sizes (see ``OPS`` docs above).

    word_attention: B, C, H, W, T; damsm_loss: B, D, H, W, T (+ ``classes``: 1 = class ids
    given); upsample_conv3x3 and up_block: B, Cin, Cout (conv output channels), H, W (input
    size); batch_norm_glu / batch_norm_add: B, C and, for images, H, W (no H, W: a B x C
    BatchNorm1d input); res_block: B, C, H, W.
    """

    op: str
    name: str
    config: str
    tier: str
    dims: dict[str, int] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.config}/{self.name}"


@dataclass(frozen=True)
class ModelSizes:
    """The sizes of one preset that the shapes derive from."""

    config: str
    ngf: int
    r_num: int
    words: int
    batch: int
    has_classes: bool
    pretrain_words: int


def model_sizes(config: str) -> ModelSizes:
    """ngf, R_NUM, WORDS_NUM, batch size of the ``birds`` or ``coco`` preset (and its DAMSM one)."""
    cfg, damsm = preset(config), preset(f"damsm_{config}")
    return ModelSizes(
        config=config,
        ngf=cfg.GAN.GF_DIM,
        r_num=cfg.GAN.R_NUM,
        words=cfg.TEXT.WORDS_NUM,
        batch=cfg.TRAIN.BATCH_SIZE,
        has_classes=config == "birds",  # COCO has no class_info.pickle: each image its own class
        pretrain_words=damsm.TEXT.WORDS_NUM,
    )


def _word_attention(m: ModelSizes) -> list[OpShape]:
    out = [
        OpShape(
            "word_attention",
            f"{stage}_b{m.batch}",
            m.config,
            "core" if m.config == "birds" or stage == "stage3" else "extra",
            {"B": m.batch, "C": m.ngf, "H": side, "W": side, "T": m.words},
        )
        for stage, side in (("stage2", 64), ("stage3", 128))
    ]
    if m.config == "birds":
        big = {"B": LARGE_OP_BATCH, "C": m.ngf, "H": 128, "W": 128, "T": m.words}
        ev = {"B": m.batch, "C": m.ngf, "H": 128, "W": 128, "T": EVAL_WORDS}
        out += [
            OpShape("word_attention", f"stage3_b{LARGE_OP_BATCH}", m.config, "extra", big),
            OpShape("word_attention", f"stage3_b{m.batch}_t{EVAL_WORDS}", m.config, "extra", ev),
        ]
    return out


def _damsm(m: ModelSizes) -> list[OpShape]:
    base = {"D": DAMSM_DIM, "H": DAMSM_SIDE, "W": DAMSM_SIDE, "classes": int(m.has_classes)}
    pre = {**base, "B": DAMSM_PRETRAIN_BATCH, "T": m.pretrain_words}
    out = [
        OpShape(
            "damsm_loss", f"gan_b{m.batch}", m.config, "core", {**base, "B": m.batch, "T": m.words}
        ),
        OpShape(
            "damsm_loss",
            f"pretrain_b{DAMSM_PRETRAIN_BATCH}",
            m.config,
            "core" if m.config == "birds" else "extra",
            pre,
        ),
    ]
    if m.config == "birds":
        big = {**pre, "B": LARGE_DAMSM_BATCH}
        out.append(OpShape("damsm_loss", f"large_b{LARGE_DAMSM_BATCH}", m.config, "extra", big))
    return out


# G's upBlocks: (name, in channels, GLU out channels as multiples of ngf, input side, core on birds)
_G_BLOCKS = (
    ("init_up1", 16, 8, 4, True),
    ("init_up2", 8, 4, 8, False),
    ("init_up3", 4, 2, 16, False),
    ("init_up4", 2, 1, 32, False),
    ("next1_up", 2, 1, 64, True),
    ("next2_up", 2, 1, 128, True),
)


def _g_tier(m: ModelSizes, core: bool) -> str:
    """G's blocks: birds' main ones are ``core``; coco repeats them at width 48 as ``extra``."""
    return "core" if core and m.config == "birds" else "extra"


def _upsample_conv(m: ModelSizes, op: str = "upsample_conv3x3") -> list[OpShape]:
    return [
        OpShape(
            op,
            name,
            m.config,
            _g_tier(m, core),
            {"B": m.batch, "Cin": cin * m.ngf, "Cout": 2 * cout * m.ngf, "H": side, "W": side},
        )
        for name, cin, cout, side, core in _G_BLOCKS
    ]


def _batch_norm_glu(m: ModelSizes) -> list[OpShape]:
    ngf, b = m.ngf, m.batch
    fc = {"B": b, "C": 16 * ngf * 4 * 4 * 2}
    out = [OpShape("batch_norm_glu", "init_fc", m.config, _g_tier(m, True), fc)]
    out += [
        OpShape(
            "batch_norm_glu",
            name,
            m.config,
            _g_tier(m, core),
            {"B": b, "C": 2 * cout * ngf, "H": 2 * side, "W": 2 * side},
        )
        for name, _, cout, side, core in _G_BLOCKS
    ]
    out += [
        OpShape(
            "batch_norm_glu",
            f"{stage}_res",
            m.config,
            _g_tier(m, stage == "next2"),
            {"B": b, "C": 4 * ngf, "H": side, "W": side},
        )
        for stage, side in (("next1", 64), ("next2", 128))
    ]
    return out


def _batch_norm_add(m: ModelSizes, op: str = "batch_norm_add") -> list[OpShape]:
    """The ResBlocks' last BN + residual; with ``op="res_block"``, the ResBlocks whole (the
    same B, C = 2 ngf, H, W)."""
    return [
        OpShape(
            op,
            f"{stage}_res",
            m.config,
            _g_tier(m, stage == "next2"),
            {"B": m.batch, "C": 2 * m.ngf, "H": side, "W": side},
        )
        for stage, side in (("next1", 64), ("next2", 128))
    ]


def _up_block(m: ModelSizes) -> list[OpShape]:
    return _upsample_conv(m, "up_block")


def _res_block(m: ModelSizes) -> list[OpShape]:
    return _batch_norm_add(m, "res_block")


_BUILDERS = {
    "word_attention": _word_attention,
    "damsm_loss": _damsm,
    "upsample_conv3x3": _upsample_conv,
    "batch_norm_glu": _batch_norm_glu,
    "batch_norm_add": _batch_norm_add,
    "up_block": _up_block,
    "res_block": _res_block,
}

# Tiny CPU shapes: odd sizes, one per op (seconds on a CPU, even through the Triton interpreter).
TINY_SHAPES: tuple[OpShape, ...] = (
    OpShape("word_attention", "tiny", "tiny", "tiny", {"B": 3, "C": 8, "H": 5, "W": 7, "T": 6}),
    OpShape(
        "damsm_loss",
        "tiny",
        "tiny",
        "tiny",
        {"B": 4, "D": 16, "H": 3, "W": 3, "T": 5, "classes": 1},
    ),
    OpShape(
        "upsample_conv3x3", "tiny", "tiny", "tiny", {"B": 2, "Cin": 6, "Cout": 8, "H": 5, "W": 5}
    ),
    OpShape("batch_norm_glu", "tiny", "tiny", "tiny", {"B": 3, "C": 6, "H": 5, "W": 5}),
    OpShape("batch_norm_add", "tiny", "tiny", "tiny", {"B": 3, "C": 6, "H": 5, "W": 5}),
    OpShape("up_block", "tiny", "tiny", "tiny", {"B": 2, "Cin": 5, "Cout": 6, "H": 3, "W": 5}),
    OpShape("res_block", "tiny", "tiny", "tiny", {"B": 2, "C": 3, "H": 5, "W": 5}),
)


def op_shapes(config: str) -> list[OpShape]:
    """Every op's shapes for one config (``birds`` or ``coco``), in ``OPS`` order."""
    m = model_sizes(config)
    return [s for op in OPS for s in _BUILDERS[op](m)]


def all_shapes(tiers: tuple[str, ...] = ("core", "extra")) -> list[OpShape]:
    """The shapes of the chosen tiers in run order: tiny, then core, then extra; birds first."""
    found = [s for config in CONFIGS for s in op_shapes(config)] + list(TINY_SHAPES)
    order = [t for t in ("tiny", "core", "extra") if t in tiers]
    return [s for tier in order for s in found if s.tier == tier]
