"""Exponential moving average of the weights, with EDM's half-life and ramp-up.

EDM (Karras et al., arXiv 2206.00364, ``training/training_loop.py``) sets the decay from a half-life
measured in training *samples*, shortened early in training by a ramp-up ratio::

    halflife = min(halflife_samples, seen_samples * rampup_ratio)
    beta     = 0.5 ** (batch / halflife)

so the average forgets its random initialisation quickly and the decay does not depend on the batch
size. The average is kept in float32 whatever the training precision.
"""

from __future__ import annotations

import torch
from torch import nn


class EMA:
    def __init__(self, net: nn.Module, halflife_samples: float = 50_000, rampup_ratio: float | None = 0.05):
        if not halflife_samples > 0:
            raise ValueError(f"the EMA half-life must be positive, got {halflife_samples!r}")
        if rampup_ratio is not None and not rampup_ratio > 0:
            raise ValueError(f"the EMA ramp-up ratio must be positive or none, got {rampup_ratio!r}")
        self.halflife_samples = float(halflife_samples)
        self.rampup_ratio = rampup_ratio
        self.shadow = {k: v.detach().to(torch.float32).clone() for k, v in net.state_dict().items()}

    def beta(self, seen_samples: int, batch: int) -> float:
        halflife = self.halflife_samples
        if self.rampup_ratio is not None:
            halflife = min(halflife, seen_samples * self.rampup_ratio)
        return 0.5 ** (batch / max(halflife, 1e-8))

    @torch.no_grad()
    def update(self, net: nn.Module, seen_samples: int, batch: int) -> float:
        """Blend ``net`` into the average after ``seen_samples`` samples (counting this batch)."""
        beta = self.beta(seen_samples, batch)
        for k, v in net.state_dict().items():
            s = self.shadow[k]
            if s.is_floating_point():
                s.lerp_(v.detach().to(s.dtype), 1.0 - beta)
            else:  # integer buffers (counters) are copied
                s.copy_(v)
        return beta

    def copy_to(self, net: nn.Module) -> None:
        net.load_state_dict({k: v.to(net.state_dict()[k].dtype) for k, v in self.shadow.items()})

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.clone() for k, v in self.shadow.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing = set(self.shadow) - set(state)
        if missing:
            raise ValueError(f"EMA state lacks {len(missing)} tensors (e.g. {sorted(missing)[0]})")
        self.shadow = {k: state[k].to(torch.float32).clone() for k in self.shadow}

    def to(self, device) -> "EMA":
        self.shadow = {k: v.to(device) for k, v in self.shadow.items()}
        return self

    def config(self) -> dict:
        return {"halflife_samples": self.halflife_samples, "rampup_ratio": self.rampup_ratio}
