"""Weight initialisation of G and the Ds (``weights_init`` of the original's miscc/utils.py)."""

from __future__ import annotations

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


def weights_init(m: nn.Module) -> None:
    """For ``model.apply``: Conv and Linear weights orthogonal (gain 1), Linear bias 0,
    BatchNorm weight ~ N(1, 0.02) and bias 0. Conv biases keep PyTorch's default (as originally).
    """
    if isinstance(m, nn.Conv2d | nn.Linear):
        nn.init.orthogonal_(m.weight, 1.0)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, _BatchNorm):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


def init_weights(model: nn.Module) -> nn.Module:
    """Apply ``weights_init`` to every submodule of ``model``; returns ``model``."""
    return model.apply(weights_init)
