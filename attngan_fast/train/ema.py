"""The exponential moving average of G's parameters that AttnGAN saves as netG.

After every G step: avg = decay * avg + (1 - decay) * p, decay 0.999 (the original's
``avg_p.mul_(0.999).add_(0.001, p.data)``, same operation order). Buffers (BatchNorm running
statistics) are not averaged: the saved netG carries G's current buffers, as in the original.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class ParamEMA:
    """Float32 copies of a module's parameters, updated with ``update(module)``."""

    def __init__(self, module: nn.Module, decay: float = 0.999) -> None:
        self.decay = decay
        self.names = [name for name, _ in module.named_parameters()]
        self.params = [p.detach().clone() for p in module.parameters()]

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        """avg = decay * avg + (1 - decay) * p for every parameter of ``module``."""
        current = [p.detach() for p in module.parameters()]
        torch._foreach_mul_(self.params, self.decay)
        torch._foreach_add_(self.params, current, alpha=1.0 - self.decay)

    def state_dict_of(self, module: nn.Module) -> dict[str, Tensor]:
        """``module.state_dict()`` with the averaged parameters in place of the current ones."""
        state = {k: v.detach().clone() for k, v in module.state_dict().items()}
        for name, avg in zip(self.names, self.params):
            state[name] = avg.clone()
        return state

    def state_dict(self) -> dict[str, object]:
        return {"decay": self.decay, "names": list(self.names), "params": list(self.params)}

    def load_state_dict(self, state: dict[str, object]) -> None:
        names = list(state["names"])  # type: ignore[arg-type]
        if names != self.names:
            raise ValueError("EMA state does not match the generator's parameters")
        self.decay = float(state["decay"])  # type: ignore[arg-type]
        for dst, src in zip(self.params, state["params"]):  # type: ignore[arg-type]
            dst.copy_(src)
