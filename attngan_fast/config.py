"""Configuration: the original AttnGAN options as nested dataclasses, presets and a yml loader.

The fields keep the original names and nesting (``cfg.TRAIN.SMOOTH.GAMMA1``, ``cfg.GAN.GF_DIM``,
``cfg.TREE.BRANCH_NUM``, ``cfg.TEXT.WORDS_NUM``), so the original ``cfg/*.yml`` files load as they
are. Defaults are those of the original ``miscc/config.py``; the presets ``birds``, ``coco``,
``damsm_birds`` and ``damsm_coco`` are those defaults overridden by the values of the original
``bird_attn2.yml``, ``coco_attn2.yml``, ``DAMSM/bird.yml`` and ``DAMSM/coco.yml`` (also shipped as
``attngan_fast/configs/*.yml``). The presets ``attngan2`` (= ``birds``), ``attngan1``,
``stackgan2`` and ``gan-int-cls`` are the talk's model family on the birds values
(``PRESET_HELP``). Keys beyond the original's: ``GAN.CONDITIONING`` and ``TRAIN.COEFF.*``.
``check_supported`` refuses values of the original's keys that this package does not act on.

    cfg = preset("birds")                  # or load_config("my.yml"), load_config("coco_attn2")
    cfg.TRAIN.SMOOTH.LAMBDA                # 5.0
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from attngan_fast.errors import UsageError

CONFIG_DIR = Path(__file__).parent / "configs"


@dataclass
class TreeConfig:
    """Generator stages: BRANCH_NUM images of BASE_SIZE * 2**i pixels (i < BRANCH_NUM)."""

    BRANCH_NUM: int = 3
    BASE_SIZE: int = 64


@dataclass
class SmoothConfig:
    """DAMSM smoothing factors GAMMA1-3 (gamma1-3 of Xu et al., CVPR 2018) and LAMBDA, the DAMSM
    weight in G's loss."""

    GAMMA1: float = 5.0
    GAMMA2: float = 5.0
    GAMMA3: float = 10.0
    LAMBDA: float = 1.0


@dataclass
class CoeffConfig:
    """Weights of G's loss terms besides the adversarial ones and DAMSM (not in the original
    AttnGAN config; StackGAN-v2 keeps such weights under ``TRAIN.COEFF``).

    KL: the conditioning augmentation's KL term (AttnGAN: 1; needs ``GAN.CONDITIONING: CA_NET``).
    COLOR_LOSS: StackGAN-v2's colour consistency between consecutive stages' images,
    COLOR_LOSS * (MSE of the pixel means + 5 MSE of the pixel covariances) (0: off).
    INTERPOLATION: GAN-INT's term: G draws from interpolated sentence embeddings (beta = 0.5)
    and is scored by the Ds' conditional heads on that text (0: off).
    """

    KL: float = 1.0
    COLOR_LOSS: float = 0.0
    INTERPOLATION: float = 0.0


@dataclass
class TrainConfig:
    BATCH_SIZE: int = 64
    MAX_EPOCH: int = 600
    SNAPSHOT_INTERVAL: int = 2000
    DISCRIMINATOR_LR: float = 2e-4
    GENERATOR_LR: float = 2e-4
    ENCODER_LR: float = 2e-4
    RNN_GRAD_CLIP: float = 0.25
    FLAG: bool = True
    NET_E: str = ""
    NET_G: str = ""
    B_NET_D: bool = True
    SMOOTH: SmoothConfig = field(default_factory=SmoothConfig)
    COEFF: CoeffConfig = field(default_factory=CoeffConfig)


CONDITIONINGS = ("CA_NET", "PROJECTION")


@dataclass
class GanConfig:
    """The networks. B_ATTENTION: the stages after the first attend to the words (False: they
    see only the previous stage's features). B_DCGAN: the original's G_DCGAN (one image, from
    the last stage) with one D of that size. CONDITIONING (not in the original): ``CA_NET``
    (AttnGAN, StackGAN: conditioning augmentation of the sentence; the Ds tile the sentence) or
    ``PROJECTION`` (GAN-INT-CLS: the sentence projected to CONDITION_DIM with a leaky ReLU, in G
    and in the Ds' conditional heads)."""

    DF_DIM: int = 64
    GF_DIM: int = 128
    Z_DIM: int = 100
    CONDITION_DIM: int = 100
    R_NUM: int = 2
    B_ATTENTION: bool = True
    B_DCGAN: bool = False
    CONDITIONING: str = "CA_NET"


@dataclass
class TextConfig:
    CAPTIONS_PER_IMAGE: int = 10
    EMBEDDING_DIM: int = 256
    WORDS_NUM: int = 18


@dataclass
class Config:
    """All options, with the original defaults (``miscc/config.py`` of the original code)."""

    DATASET_NAME: str = "birds"
    CONFIG_NAME: str = ""
    DATA_DIR: str = ""
    GPU_ID: int = 0
    CUDA: bool = True
    WORKERS: int = 6
    RNN_TYPE: str = "LSTM"
    B_VALIDATION: bool = False
    TREE: TreeConfig = field(default_factory=TreeConfig)
    TRAIN: TrainConfig = field(default_factory=TrainConfig)
    GAN: GanConfig = field(default_factory=GanConfig)
    TEXT: TextConfig = field(default_factory=TextConfig)

    def to_dict(self) -> dict[str, Any]:
        """Nested plain dict with the original key names (what a yml file holds)."""
        return dataclasses.asdict(self)


# Values of the original yml files, merged over the defaults by ``preset``.
PRESETS: dict[str, dict[str, Any]] = {
    "birds": {
        "CONFIG_NAME": "attn2",
        "DATASET_NAME": "birds",
        "DATA_DIR": "data/birds",
        "WORKERS": 4,
        "TREE": {"BRANCH_NUM": 3},
        "TRAIN": {
            "FLAG": True,
            "NET_G": "",
            "B_NET_D": True,
            "BATCH_SIZE": 20,
            "MAX_EPOCH": 600,
            "SNAPSHOT_INTERVAL": 50,
            "DISCRIMINATOR_LR": 0.0002,
            "GENERATOR_LR": 0.0002,
            "NET_E": "DAMSMencoders/bird/text_encoder200.pth",
            "SMOOTH": {"GAMMA1": 4.0, "GAMMA2": 5.0, "GAMMA3": 10.0, "LAMBDA": 5.0},
        },
        "GAN": {"DF_DIM": 64, "GF_DIM": 32, "Z_DIM": 100, "R_NUM": 2},
        "TEXT": {"EMBEDDING_DIM": 256, "CAPTIONS_PER_IMAGE": 10},
    },
    "coco": {
        "CONFIG_NAME": "glu-gan2",
        "DATASET_NAME": "coco",
        "DATA_DIR": "data/coco",
        "WORKERS": 4,
        "TREE": {"BRANCH_NUM": 3},
        "TRAIN": {
            "FLAG": True,
            "NET_G": "",
            "B_NET_D": True,
            "BATCH_SIZE": 14,
            "MAX_EPOCH": 120,
            "SNAPSHOT_INTERVAL": 5,
            "DISCRIMINATOR_LR": 0.0002,
            "GENERATOR_LR": 0.0002,
            "NET_E": "DAMSMencoders/coco/text_encoder100.pth",
            "SMOOTH": {"GAMMA1": 4.0, "GAMMA2": 5.0, "GAMMA3": 10.0, "LAMBDA": 50.0},
        },
        "GAN": {"DF_DIM": 96, "GF_DIM": 48, "Z_DIM": 100, "R_NUM": 3},
        "TEXT": {"EMBEDDING_DIM": 256, "CAPTIONS_PER_IMAGE": 5, "WORDS_NUM": 12},
    },
    "damsm_birds": {
        "CONFIG_NAME": "DAMSM",
        "DATASET_NAME": "birds",
        "DATA_DIR": "data/birds",
        "WORKERS": 4,
        "TREE": {"BRANCH_NUM": 1, "BASE_SIZE": 299},
        "TRAIN": {
            "FLAG": True,
            "NET_E": "",
            "BATCH_SIZE": 48,
            "MAX_EPOCH": 600,
            "SNAPSHOT_INTERVAL": 50,
            "ENCODER_LR": 0.002,
            "RNN_GRAD_CLIP": 0.25,
            "SMOOTH": {"GAMMA1": 4.0, "GAMMA2": 5.0, "GAMMA3": 10.0},
        },
        "TEXT": {"EMBEDDING_DIM": 256, "CAPTIONS_PER_IMAGE": 10},
    },
    "damsm_coco": {
        "CONFIG_NAME": "DAMSM",
        "DATASET_NAME": "coco",
        "DATA_DIR": "data/coco",
        "WORKERS": 1,
        "TREE": {"BRANCH_NUM": 1, "BASE_SIZE": 299},
        "TRAIN": {
            "FLAG": True,
            "NET_E": "",
            "BATCH_SIZE": 48,
            "MAX_EPOCH": 600,
            "SNAPSHOT_INTERVAL": 5,
            "ENCODER_LR": 0.002,
            "RNN_GRAD_CLIP": 0.25,
            "SMOOTH": {"GAMMA1": 4.0, "GAMMA2": 5.0, "GAMMA3": 10.0},
        },
        "TEXT": {"EMBEDDING_DIM": 256, "CAPTIONS_PER_IMAGE": 5, "WORDS_NUM": 15},
    },
}


def _over(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """``base`` with the nested ``changes`` merged in (a new dict)."""
    merged = copy.deepcopy(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _over(merged[key], value)
        else:
            merged[key] = value
    return merged


# The model family of the talk (Xu et al., CVPR 2018, and the systems it compares with), on the
# birds values: the same data, encoders, widths and learning rates, so that a comparison changes
# only what makes each system what it is.
PRESETS["attngan2"] = copy.deepcopy(PRESETS["birds"])
PRESETS["attngan1"] = _over(PRESETS["birds"], {"CONFIG_NAME": "attn1", "TREE": {"BRANCH_NUM": 2}})
PRESETS["stackgan2"] = _over(
    PRESETS["birds"],
    {
        "CONFIG_NAME": "stackgan2",
        "GAN": {"B_ATTENTION": False},
        "TRAIN": {"SMOOTH": {"LAMBDA": 0.0}, "COEFF": {"COLOR_LOSS": 1.0}},
    },
)
PRESETS["gan-int-cls"] = _over(
    PRESETS["birds"],
    {
        "CONFIG_NAME": "gan-int-cls",
        "TREE": {"BRANCH_NUM": 1},
        "GAN": {
            "GF_DIM": 64, "DF_DIM": 64, "CONDITION_DIM": 128, "B_ATTENTION": False,
            "B_DCGAN": True, "CONDITIONING": "PROJECTION",
        },
        "TRAIN": {
            "BATCH_SIZE": 64, "SMOOTH": {"LAMBDA": 0.0},
            "COEFF": {"KL": 0.0, "INTERPOLATION": 1.0},
        },
    },
)  # fmt: skip

# What each preset is, for --help and the README.
PRESET_HELP = {
    "birds": "AttnGAN on CUB birds (the original bird_attn2.yml); same as attngan2",
    "coco": "AttnGAN on COCO (the original coco_attn2.yml)",
    "damsm_birds": "DAMSM pretraining on CUB birds (the original DAMSM/bird.yml)",
    "damsm_coco": "DAMSM pretraining on COCO (the original DAMSM/coco.yml)",
    "attngan2": "AttnGAN2: 3 stages (64, 128, 256 px), 2 attention stages, DAMSM lambda 5",
    "attngan1": "AttnGAN1: 2 stages (64, 128 px), 1 attention stage, DAMSM lambda 5",
    "stackgan2": "StackGAN-v2: 3 stages, no word attention, no DAMSM (lambda 0), colour "
    "consistency",
    "gan-int-cls": "GAN-INT-CLS (Reed et al. 2016): one 64 px DCGAN-style stage, projected "
    "text, matching-aware D, interpolation term",
}

# The shipped yml file of each preset (in ``attngan_fast/configs/``).
PRESET_FILES = {
    "birds": "bird_attn2.yml",
    "coco": "coco_attn2.yml",
    "damsm_birds": "DAMSM_bird.yml",
    "damsm_coco": "DAMSM_coco.yml",
    "attngan2": "bird_attn2.yml",
    "attngan1": "bird_attn1.yml",
    "stackgan2": "bird_stackgan2.yml",
    "gan-int-cls": "bird_gan_int_cls.yml",
}


class ConfigError(UsageError):
    """A config file or dict names an unknown key, or gives a value of the wrong type or out of
    its range (``RANGES``)."""


# Allowed values of the numeric keys, (low, high) inclusive (None: no bound). They keep a run
# from dying deep inside (a zero width, an empty batch) or exhausting memory on a typo.
RANGES: dict[str, tuple[float | None, float | None]] = {
    "WORKERS": (0, 1024),
    "TREE.BRANCH_NUM": (1, 3),
    "TREE.BASE_SIZE": (8, 1024),
    "TRAIN.BATCH_SIZE": (1, 65536),
    "TRAIN.MAX_EPOCH": (1, None),
    "TRAIN.SNAPSHOT_INTERVAL": (1, None),
    "TRAIN.RNN_GRAD_CLIP": (0, None),
    "TRAIN.SMOOTH.LAMBDA": (0, None),
    "TRAIN.COEFF.KL": (0, None),
    "TRAIN.COEFF.COLOR_LOSS": (0, None),
    "TRAIN.COEFF.INTERPOLATION": (0, None),
    "GAN.DF_DIM": (1, 1024),
    "GAN.GF_DIM": (1, 1024),
    "GAN.Z_DIM": (1, 4096),
    "GAN.CONDITION_DIM": (1, 4096),
    "GAN.R_NUM": (0, 16),
    "TEXT.CAPTIONS_PER_IMAGE": (1, 1000),
    "TEXT.EMBEDDING_DIM": (2, 4096),
    "TEXT.WORDS_NUM": (1, 1000),
}
# Keys that must be > 0: learning rates and the DAMSM smoothing factors.
POSITIVE = (
    "TRAIN.DISCRIMINATOR_LR", "TRAIN.GENERATOR_LR", "TRAIN.ENCODER_LR",
    "TRAIN.SMOOTH.GAMMA1", "TRAIN.SMOOTH.GAMMA2", "TRAIN.SMOOTH.GAMMA3",
)  # fmt: skip


def _get(cfg: Any, key: str) -> Any:
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


def check_config(cfg: Config) -> Config:
    """Return ``cfg`` if every numeric key is in range, else raise ConfigError naming the key."""
    for key, (low, high) in RANGES.items():
        value = _get(cfg, key)
        if (low is not None and value < low) or (high is not None and value > high):
            span = f">= {low}" if high is None else f"in [{low}, {high}]"
            raise ConfigError(f"config key {key!r} must be {span}, got {value!r}")
    for key in POSITIVE:
        value = _get(cfg, key)
        if not (math.isfinite(value) and value > 0):
            raise ConfigError(f"config key {key!r} must be a number > 0, got {value!r}")
    if cfg.TEXT.EMBEDDING_DIM % 2:
        raise ConfigError(
            f"config key 'TEXT.EMBEDDING_DIM' must be even (the bidirectional LSTM gives half of "
            f"it per direction), got {cfg.TEXT.EMBEDDING_DIM}"
        )
    _check_model_family(cfg)
    return cfg


def _check_model_family(cfg: Config) -> None:
    """Raise ConfigError when the model and objective keys ask for something no model of the
    family does (a term that would have nothing to act on), naming the key."""
    gan, coeff = cfg.GAN, cfg.TRAIN.COEFF
    if gan.CONDITIONING not in CONDITIONINGS:
        raise ConfigError(
            f"config key 'GAN.CONDITIONING' must be one of {', '.join(CONDITIONINGS)}, "
            f"got {gan.CONDITIONING!r}"
        )
    if gan.CONDITIONING == "PROJECTION" and coeff.KL != 0:
        raise ConfigError(
            f"config key 'TRAIN.COEFF.KL' is {coeff.KL} but GAN.CONDITIONING PROJECTION has no "
            "mu / logvar for a KL term: set TRAIN.COEFF.KL=0 (or GAN.CONDITIONING=CA_NET)"
        )
    images = 1 if gan.B_DCGAN else cfg.TREE.BRANCH_NUM
    if coeff.COLOR_LOSS != 0 and images < 2:
        raise ConfigError(
            f"config key 'TRAIN.COEFF.COLOR_LOSS' is {coeff.COLOR_LOSS} but G draws one image "
            "(TREE.BRANCH_NUM 1 or GAN.B_DCGAN): colour consistency compares consecutive "
            "stages; set it to 0"
        )
    if coeff.INTERPOLATION != 0 and gan.B_ATTENTION and cfg.TREE.BRANCH_NUM > 1:
        raise ConfigError(
            f"config key 'TRAIN.COEFF.INTERPOLATION' is {coeff.INTERPOLATION} but G attends to "
            "words, which an interpolated sentence embedding does not have: set "
            "GAN.B_ATTENTION=False or TRAIN.COEFF.INTERPOLATION=0"
        )


# Keys of the original that steer something this package does another way, with the only value
# it behaves as and what to use instead. ``check_supported`` refuses any other value.
UNSUPPORTED: dict[str, tuple[Any, str]] = {
    "GPU_ID": (0, "choose the GPU with --device cuda:N (or CUDA_VISIBLE_DEVICES)"),
    "CUDA": (True, "choose the device with --device cpu"),
    "B_VALIDATION": (False, "evaluate with `attngan-fast eval`"),
    "TRAIN.FLAG": (True, "the original's sampling mode: use `attngan-fast generate` or `eval`"),
    "TRAIN.NET_G": ("", "continue a run with `attngan-fast train --resume`"),
    "TRAIN.B_NET_D": (
        True,
        "the original loads the Ds beside TRAIN.NET_G; `attngan-fast train --resume` continues "
        "a run with the Ds of its checkpoint",
    ),
}


def check_supported(cfg: Config) -> Config:
    """Return ``cfg`` if this package acts on every value it holds, else raise ConfigError
    naming the first key (see ``UNSUPPORTED``). Training commands call it before they start."""
    for key, (value, instead) in UNSUPPORTED.items():
        if _get(cfg, key) != value:
            raise ConfigError(
                f"config key {key!r} is {_get(cfg, key)!r}, which attngan-fast does not act on "
                f"(only {value!r}): {instead}"
            )
    return cfg


def _merge(obj: Any, values: dict[str, Any], path: str) -> None:
    """Set ``values`` (nested dict) on the dataclass ``obj`` in place, checking keys and types."""
    if not isinstance(values, dict):
        raise ConfigError(f"{path or 'the config'} must be a mapping, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(obj)}
    for key, value in values.items():
        name = f"{path}.{key}" if path else str(key)
        if key not in fields:
            raise ConfigError(
                f"unknown config key {name!r}; valid keys here: {', '.join(sorted(fields))}"
            )
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            _merge(current, value, name)
            continue
        setattr(obj, key, _coerce(value, type(current), name))


def _coerce(value: Any, kind: type, name: str) -> Any:
    """``value`` as ``kind`` (int accepted for float fields), else a ConfigError naming the key."""
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is str and value is None:  # ``NET_G:`` with nothing after it in a yml file
        return ""
    if type(value) is not kind:
        raise ConfigError(
            f"config key {name!r} must be {kind.__name__}, got {type(value).__name__} {value!r}"
        )
    return value


def config_from_dict(values: dict[str, Any], base: Config | None = None) -> Config:
    """A new Config: ``base`` (default: the original defaults) overridden by nested ``values``."""
    cfg = copy.deepcopy(base) if base is not None else Config()
    _merge(cfg, values, "")
    return check_config(cfg)


def preset(name: str) -> Config:
    """The configuration ``name`` of ``PRESETS`` (``PRESET_HELP`` says what each is)."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return config_from_dict(PRESETS[name])


def load_config(source: str | Path, base: Config | None = None) -> Config:
    """Load an original-style yml file over ``base`` (default: the original defaults).

    ``source`` is a path, or the name of a shipped file (``bird_attn2``, ``coco_attn2``,
    ``DAMSM_bird``, ``DAMSM_coco``, with or without ``.yml``). Unknown keys raise ConfigError.
    """
    path = Path(source)
    if not path.exists():
        shipped = CONFIG_DIR / (path.name if path.suffix in (".yml", ".yaml") else f"{path}.yml")
        if path.parent != Path(".") or not shipped.exists():
            raise FileNotFoundError(f"no config file {str(source)!r} nor a shipped one so named")
        path = shipped
    with open(path, encoding="utf-8") as f:
        values = yaml.safe_load(f) or {}
    try:
        return config_from_dict(values, base)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
