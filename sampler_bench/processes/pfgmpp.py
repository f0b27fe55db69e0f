"""PFGM++: the Poisson-flow kernel with D extra dimensions (Xu et al., arXiv 2302.04265; D = 1 is PFGM,
arXiv 2209.11178).

With r = sigma * sqrt(D) (the alignment with EDM, arXiv 2302.04265 §4), the perturbation kernel
p_r(x | y) ~ 1/(|x - y|^2 + r^2)^((N + D)/2) is a multivariate Student-t with D degrees of freedom,
location y and scale sigma^2 I (docs/processes.md, PFGM++), so:

* a draw is x = y + R u, u uniform on the unit sphere of R^N and (R/r)^2 = B/(1 - B) with
  B ~ Beta(N/2, D/2) (the Beta-prime radius of the reference code, docs/processes.md);
* every coordinate of (x - y)/sigma is Student-t with D degrees of freedom;
* the probability-flow ODE is dx/dsigma = (x - D(x, sigma))/sigma, the EDM ODE (docs/processes.md);
* the empirical-data denoiser weights y_i by (|x - y_i|^2 + r^2)^(-(N+D)/2) (docs/processes.md, "Exact denoisers");
* there is no exact reverse SDE for finite D, so ``kind = 'pfgmpp'`` and stochastic samplers are skipped;
* D -> infinity is the Gaussian kernel: ``PFGMPPProcess(D=math.inf)`` *is* the EDM process (kind 'gaussian').

Training follows the reference code (pfgmpp ``training/loss.py`` EDMLoss): EDM's log-normal sigma law,
EDM's weight and preconditioning, only the noise draw changes.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from ..rng import Generators, randn_like
from .analytic import PointSet, _sigma_column
from .base import Process, _sigma_vector, gaussian_noise, per_sample_gamma, standard_normal
from .gaussian import GAUSSIAN
from .kind import PROBABILITY_FLOW_ODE, ProcessKind

#: PFGM++ with finite D: the probability-flow ODE in sigma only (no reverse SDE); D = inf is :data:`GAUSSIAN`.
PFGMPP = ProcessKind("pfgmpp", frozenset({PROBABILITY_FLOW_ODE}), time_variable="sigma",
                     state="x, the data's own shape", reference_solver="reference")


def parse_D(D) -> float:
    """D as a float: a number >= 1, or math.inf (also given as the string 'inf' in TOML/JSON)."""
    if isinstance(D, str) and D.strip().lower() in ("inf", "infinity"):
        return math.inf
    if isinstance(D, bool) or not isinstance(D, (int, float)) or math.isnan(D) or D < 1:
        raise ValueError(f"PFGM++ needs D >= 1 (or 'inf' for the Gaussian limit), got D={D!r}")
    return float(D)


def beta_prime_radius(n: int, N: int, D: float, r, generator: Generators = None) -> torch.Tensor:
    """n radii R = r sqrt(B/(1 - B)), B ~ Beta(N/2, D/2), in float64 (one r per sample, or a scalar r).

    B is drawn as G_N/(G_N + G_D) with G_a ~ Gamma(a/2); then B/(1 - B) = G_N/G_D exactly, which
    avoids the cancellation in 1 - B (the reference code computes 1 - B in float32 and clips B).
    """
    r = _sigma_vector(r, n)
    if isinstance(generator, (list, tuple)):
        # Sample i uses only generator i: both of its gamma draws come from it, in a fixed order.
        ratio = torch.stack([per_sample_gamma(N / 2, 1, [g])[0] / per_sample_gamma(D / 2, 1, [g])[0] for g in generator])
    else:
        ratio = per_sample_gamma(N / 2, n, generator) / per_sample_gamma(D / 2, n, generator)
    return r * torch.sqrt(ratio)


def pfgmpp_noise(shape: Sequence[int], sigma, D: float, generator: Generators = None) -> torch.Tensor:
    """x - y for x ~ p_r(x | y), r = sigma sqrt(D): Beta-prime radius times a uniform direction (float64)."""
    shape = tuple(int(s) for s in shape)
    n, N = shape[0], math.prod(shape[1:])
    sig = _sigma_vector(sigma, n)
    R = beta_prime_radius(n, N, D, sig * math.sqrt(D), generator)
    g = randn_like(torch.empty((n, N), dtype=torch.float64), generator)
    direction = g / g.norm(dim=1, keepdim=True)
    return (R[:, None] * direction).reshape(shape)


class PFGMPPPointSet:
    """Exact E[y | x] of a finite point set under the PFGM++ kernel (docs/processes.md, "Exact denoisers").

    logits_i = log pi_i - ((N + D)/2) log1p(|x - y_i|^2 / (D sigma^2)); the squared distances use one
    matmul with cached norms (float64), as :class:`~sampler_bench.processes.analytic.PointSet` does.
    """

    def __init__(self, points: torch.Tensor, D: float, weights: torch.Tensor | None = None):
        self.D = parse_D(D)
        if math.isinf(self.D):
            raise ValueError("use PointSet (the Gaussian kernel) for D = inf")
        pts = torch.as_tensor(points, dtype=torch.float64)
        self.shape = tuple(pts.shape[1:])
        self.points = pts.reshape(pts.shape[0], -1)
        self.N = self.points.shape[1]
        n = self.points.shape[0]
        w = torch.full((n,), 1.0 / n, dtype=torch.float64) if weights is None else torch.as_tensor(weights, dtype=torch.float64)
        self.log_weights = torch.log(w / w.sum())
        self.sq_norms = (self.points**2).sum(1)

    def logits(self, flat: torch.Tensor, sigma_col: torch.Tensor) -> torch.Tensor:
        pts = self.points.to(flat.device)
        d2 = ((flat**2).sum(1, keepdim=True) - 2 * flat @ pts.T + self.sq_norms.to(flat.device)).clamp_min(0.0)
        return self.log_weights.to(flat.device) - 0.5 * (self.N + self.D) * torch.log1p(d2 / (self.D * sigma_col**2))

    def __call__(self, x: torch.Tensor, sigma) -> torch.Tensor:
        flat = x.reshape(x.shape[0], -1).to(torch.float64)
        w = torch.softmax(self.logits(flat, _sigma_column(sigma, flat)), dim=1)
        return (w @ self.points.to(flat.device)).to(x.dtype).reshape(x.shape)


class PFGMPPProcess(Process):
    """PFGM++ with D extra dimensions; D = inf is the Gaussian (EDM) process."""

    name = "pfgmpp"
    has_reverse_sde = False

    def __init__(self, D=128, sigma_min: float = 0.002, sigma_max: float = 80.0, P_mean: float = -1.2, P_std: float = 1.2):
        self.D = parse_D(D)
        super().__init__(sigma_min, sigma_max)
        if not P_std > 0:
            raise ValueError(f"process 'pfgmpp': P_std must be positive, got {P_std!r}")
        self.P_mean, self.P_std = float(P_mean), float(P_std)
        self.traits = GAUSSIAN if math.isinf(self.D) else PFGMPP
        self.kind, self.has_reverse_sde = self.traits.name, math.isinf(self.D)

    def sample_sigma(self, n: int, generator: Generators = None) -> torch.Tensor:
        # pfgmpp training/loss.py: sigma follows EDM's log-normal; r = sigma sqrt(D) only shapes the noise.
        return torch.exp(self.P_mean + self.P_std * standard_normal(n, generator))

    def loss_weight(self, sigma: torch.Tensor, sigma_data: float) -> torch.Tensor:
        return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2

    def noise(self, shape: Sequence[int], sigma, generator: Generators = None) -> torch.Tensor:
        if math.isinf(self.D):
            return gaussian_noise(shape, sigma, generator)
        return pfgmpp_noise(shape, sigma, self.D, generator)

    def point_set_denoiser(self, points: torch.Tensor):
        return PointSet(points) if math.isinf(self.D) else PFGMPPPointSet(points, self.D)

    def config(self) -> dict:
        D = "inf" if math.isinf(self.D) else (int(self.D) if self.D.is_integer() else self.D)
        return {"name": "pfgmpp", "D": D, "sigma_min": self.sigma_min, "sigma_max": self.sigma_max,
                "P_mean": self.P_mean, "P_std": self.P_std}
