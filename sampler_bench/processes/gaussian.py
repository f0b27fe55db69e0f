"""The Gaussian kernel x = y + sigma * n: VE, EDM and VP diffusion in the unscaled state x-hat.

All three share the kernel, the probability-flow ODE dx/dsigma = (x - D)/sigma and a reverse SDE; they
differ only in the training law of sigma, the loss weight and the prior (docs/processes.md,
"Unified view" table; EDM ``training/loss.py`` VPLoss / VELoss / EDMLoss):

========  ===========================================  ==========================  =========================
variant   training sigma                               weight lambda(sigma)        prior at sigma_max
========  ===========================================  ==========================  =========================
``edm``   ln sigma ~ N(P_mean, P_std^2)                (s^2 + sd^2)/(s sd)^2        N(0, sigma_max^2 I)
``ve``    log-uniform in [sigma_min, sigma_max]        1/s^2                        N(0, sigma_max^2 I)
``vp``    t ~ U(eps_t, 1), sigma = sigma_VP(t)         1/s^2                        N(0, (1 + sigma_max^2) I)
========  ===========================================  ==========================  =========================

(Karras et al., "Elucidating the Design Space of Diffusion-Based Generative Models", arXiv 2206.00364,
Table 1; Song et al., "Score-Based Generative Modeling through SDEs", arXiv 2011.13456.) The VP prior
is N(0, I) in the scaled state x = x-hat / sqrt(1 + sigma^2), i.e. the variance above in x-hat.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from ..rng import Generators
from ..vp import VP_BETA_D, VP_BETA_MIN, vp_sigma
from .analytic import PointSet
from .base import Process, gaussian_noise, standard_normal
from .kind import GAUSSIAN_REVERSE_SDE, PROBABILITY_FLOW_ODE, ProcessKind

#: Gaussian kernels (VE, VP, EDM): the probability-flow ODE and the reverse SDE in sigma; the state is the data.
GAUSSIAN = ProcessKind(
    "gaussian", frozenset({PROBABILITY_FLOW_ODE, GAUSSIAN_REVERSE_SDE}), time_variable="sigma",
    state="x, the data's own shape", reference_solver="reference", gaussian_prior=True)

_DEFAULT_RANGE = {
    "edm": (0.002, 80.0),
    "ve": (0.02, 100.0),
    # EDM generate.py: sigma_VP(eps_s = 1e-3) .. sigma_VP(1)
    "vp": (float(vp_sigma(1e-3)), float(vp_sigma(1.0))),
}


class GaussianProcess(Process):
    """Gaussian diffusion in the EDM parameterisation (``variant`` = 'edm', 've' or 'vp')."""

    VARIANTS = ("edm", "ve", "vp")
    kind = "gaussian"
    traits = GAUSSIAN
    has_reverse_sde = True

    def __init__(self, variant: str = "edm", sigma_min: float | None = None, sigma_max: float | None = None,
                 P_mean: float = -1.2, P_std: float = 1.2, eps_t: float = 1e-5,
                 beta_d: float = VP_BETA_D, beta_min: float = VP_BETA_MIN):
        if variant not in self.VARIANTS:
            raise ValueError(f"unknown Gaussian process variant {variant!r}; allowed: {', '.join(self.VARIANTS)}")
        self.name = variant
        lo, hi = _DEFAULT_RANGE[variant]
        super().__init__(lo if sigma_min is None else sigma_min, hi if sigma_max is None else sigma_max)
        if not P_std > 0:
            raise ValueError(f"process {variant!r}: P_std must be positive, got {P_std!r}")
        if not 0 < eps_t < 1:
            raise ValueError(f"process {variant!r}: eps_t must lie in (0, 1), got {eps_t!r}")
        self.P_mean, self.P_std = float(P_mean), float(P_std)
        self.eps_t, self.beta_d, self.beta_min = float(eps_t), float(beta_d), float(beta_min)

    def sample_sigma(self, n: int, generator: Generators = None) -> torch.Tensor:
        if self.name == "edm":
            return torch.exp(self.P_mean + self.P_std * standard_normal(n, generator))
        u = torch.rand(n, generator=generator, dtype=torch.float64,
                       device=generator.device if isinstance(generator, torch.Generator) else "cpu").cpu()
        if self.name == "ve":
            lo, hi = math.log(self.sigma_min), math.log(self.sigma_max)
            return torch.exp(lo + u * (hi - lo))
        t = 1 + u * (self.eps_t - 1)  # EDM VPLoss: t ~ U(eps_t, 1)
        return vp_sigma(t, self.beta_d, self.beta_min)

    def loss_weight(self, sigma: torch.Tensor, sigma_data: float) -> torch.Tensor:
        if self.name == "edm":
            return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2
        return 1.0 / sigma**2

    def noise(self, shape: Sequence[int], sigma, generator: Generators = None) -> torch.Tensor:
        return gaussian_noise(shape, sigma, generator)

    def prior(self, n, shape, generator=None, *, sigma=None, dtype=torch.float64, device=None):
        s = self.sigma_max if sigma is None else float(sigma)
        if self.name == "vp":
            s = math.sqrt(1.0 + s * s)  # N(0, I) in the scaled VP state
        return super().prior(n, shape, generator, sigma=s, dtype=dtype, device=device)

    def point_set_denoiser(self, points: torch.Tensor) -> PointSet:
        """docs/processes.md (finite point set): softmax(-|x - y_i|^2 / (2 sigma^2)) weighted mean of the points."""
        return PointSet(points)

    def config(self) -> dict:
        cfg = {"name": self.name, "sigma_min": self.sigma_min, "sigma_max": self.sigma_max}
        if self.name == "edm":
            cfg.update(P_mean=self.P_mean, P_std=self.P_std)
        elif self.name == "vp":
            cfg.update(eps_t=self.eps_t, beta_d=self.beta_d, beta_min=self.beta_min)
        return cfg
