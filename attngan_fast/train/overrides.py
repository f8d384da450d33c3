"""Command-line configuration: a preset or an original-format yml file, then KEY=VALUE overrides.

    cfg = resolve_config(preset_name="birds", cfg_file=None, sets=["TRAIN.SMOOTH.LAMBDA=5"])

Values are parsed as YAML scalars (``5`` int, ``2e-4`` float, ``true`` bool, text otherwise).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from attngan_fast.config import Config, ConfigError, config_from_dict, load_config, preset


def parse_set(item: str) -> dict[str, Any]:
    """``"TRAIN.SMOOTH.LAMBDA=5"`` -> ``{"TRAIN": {"SMOOTH": {"LAMBDA": 5}}}``."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects KEY=VALUE (e.g. TRAIN.BATCH_SIZE=16), got {item!r}")
    value = yaml.safe_load(raw) if raw.strip() else ""
    if isinstance(value, str):
        try:
            value = float(raw)  # YAML 1.1 reads 2e-4 as a string
        except ValueError:
            pass
    out: dict[str, Any] = value
    for part in reversed(key.strip().split(".")):
        out = {part: out}
    return out


def _deep_merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    merged = dict(a)
    for k, v in b.items():
        merged[k] = (
            _deep_merge(merged[k], v)
            if isinstance(v, dict) and isinstance(merged.get(k), dict)
            else v
        )
    return merged


def resolve_config(
    preset_name: str, cfg_file: str | Path | None = None, sets: Sequence[str] = ()
) -> Config:
    """The preset (or ``cfg_file`` over the original defaults), then each ``--set`` in order."""
    cfg = load_config(cfg_file) if cfg_file else preset(preset_name)
    values: dict[str, Any] = {}
    for item in sets:
        values = _deep_merge(values, parse_set(item))
    return config_from_dict(values, cfg) if values else cfg


def override(cfg: Config, **values: Any) -> Config:
    """``cfg`` with the dotted-path values that are not None.

    ``override(cfg, **{"TRAIN.BATCH_SIZE": 8, "GAN.GF_DIM": None})`` sets the batch size only.
    """
    nested: dict[str, Any] = {}
    for key, value in values.items():
        if value is None:
            continue
        node: Any = value
        for part in reversed(key.split(".")):
            node = {part: node}
        nested = _deep_merge(nested, node)
    return config_from_dict(nested, cfg) if nested else cfg
