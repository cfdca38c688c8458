"""An exponential moving average of the trained parameters (all of the denoiser's, or only its LoRA adapters)."""

from __future__ import annotations

import torch

from itercomp.models.training import ema_decay


class ParameterEMA:
    """Shadow copies of named parameters; the decay warms up with the step count (itercomp.models.training)."""

    def __init__(self, params: dict[str, torch.nn.Parameter], max_decay: float):
        self.max_decay = max_decay
        self.shadow = {name: p.detach().clone() for name, p in params.items()}

    @torch.no_grad()
    def update(self, params: dict[str, torch.nn.Parameter], step: int) -> None:
        decay = ema_decay(step, self.max_decay)
        for name, p in params.items():
            self.shadow[name].lerp_(p.detach(), 1 - decay)

    @torch.no_grad()
    def copy_to(self, params: dict[str, torch.nn.Parameter]) -> None:
        for name, p in params.items():
            p.copy_(self.shadow[name])

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {name: t.detach().cpu().contiguous() for name, t in self.shadow.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing = sorted(set(self.shadow) - set(state))
        if missing:
            raise ValueError(f"EMA state lacks {missing[:3]}")
        for name, t in self.shadow.items():
            t.copy_(state[name])
