"""Exact denoisers E[x0 | x] under the Gaussian kernel x = x0 + sigma * n.

Formulas: reference/physics.md (f.1) Gaussian mixtures, (f.2) finite point sets. Everything is
computed in float64 and in log-space (log-sum-exp over components / points), batched over samples
with one sigma per sample, so the same objects serve as test oracles and as built-in sweep models.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from ..rng import randn_like


def _sigma_column(sigma, x: torch.Tensor) -> torch.Tensor:
    """Per-sample sigma as a float64 column [B, 1]."""
    s = torch.as_tensor(sigma, dtype=torch.float64, device=x.device)
    if s.ndim == 0:
        s = s.expand(x.shape[0])
    return s.reshape(-1, 1)


class IsotropicGaussian:
    """Data N(mean, std^2 I): D(x, sigma) = mean + std^2/(std^2 + sigma^2) (x - mean).

    Its probability-flow ODE has the closed-form solution
    x(sigma) = mean + (x(sigma0) - mean) * sqrt((std^2 + sigma^2)/(std^2 + sigma0^2)).
    """

    def __init__(self, mean: torch.Tensor | Sequence[float], std: float):
        self.mean = torch.as_tensor(mean, dtype=torch.float64).reshape(-1)
        if not std > 0:
            raise ValueError(f"std must be positive, got {std}")
        self.std = float(std)
        self.dim = self.mean.numel()

    def __call__(self, x: torch.Tensor, sigma) -> torch.Tensor:
        flat = x.reshape(x.shape[0], -1).to(torch.float64)
        s2 = _sigma_column(sigma, flat) ** 2
        mean = self.mean.to(flat.device)
        out = mean + self.std**2 / (self.std**2 + s2) * (flat - mean)
        return out.to(x.dtype).reshape(x.shape)

    def ode_solution(self, x: torch.Tensor, sigma_from: float, sigma_to: float) -> torch.Tensor:
        """Exact PF-ODE transport of ``x`` from ``sigma_from`` to ``sigma_to`` (either may be 0)."""
        ratio = math.sqrt((self.std**2 + sigma_to**2) / (self.std**2 + sigma_from**2))
        flat = x.reshape(x.shape[0], -1).to(torch.float64)
        mean = self.mean.to(flat.device)
        return (mean + (flat - mean) * ratio).to(x.dtype).reshape(x.shape)

    def sample(self, n: int, generator=None) -> torch.Tensor:
        z = randn_like(torch.empty(n, self.dim, dtype=torch.float64), generator)
        return self.mean + self.std * z


class GaussianMixture:
    """Data sum_k pi_k N(mu_k, Sigma_k) with full covariances (physics.md f.1).

    Each covariance is eigendecomposed once, Sigma_k = U_k diag(lam_k) U_k^T, so the noisy
    covariance C_k = Sigma_k + sigma^2 I is diagonal in the same basis for every sigma.
    """

    def __init__(self, weights, means, covs):
        self.weights = torch.as_tensor(weights, dtype=torch.float64).reshape(-1)
        self.means = torch.as_tensor(means, dtype=torch.float64)
        covs = torch.as_tensor(covs, dtype=torch.float64)
        K, d = self.means.shape
        if self.weights.numel() != K or covs.shape != (K, d, d):
            raise ValueError(f"weights [K], means [K, d] and covs [K, d, d] disagree: {self.weights.shape}, {self.means.shape}, {covs.shape}")
        if (self.weights <= 0).any():
            raise ValueError("mixture weights must be positive")
        self.weights = self.weights / self.weights.sum()
        self.covs = 0.5 * (covs + covs.transpose(1, 2))
        lam, U = torch.linalg.eigh(self.covs)
        if (lam < -1e-12).any():
            raise ValueError("mixture covariances must be positive semi-definite")
        self.eigvals = lam.clamp_min(0.0)  # [K, d]
        self.eigvecs = U  # [K, d, d], columns are eigenvectors
        self.log_weights = torch.log(self.weights)
        self.dim = d
        self.n_components = K

    @classmethod
    def isotropic(cls, weights, means, stds) -> "GaussianMixture":
        means = torch.as_tensor(means, dtype=torch.float64)
        K, d = means.shape
        stds = torch.as_tensor(stds, dtype=torch.float64).reshape(-1).expand(K)
        covs = stds[:, None, None] ** 2 * torch.eye(d, dtype=torch.float64)
        return cls(weights, means, covs)

    def _to(self, device):
        return (t.to(device) for t in (self.log_weights, self.means, self.eigvals, self.eigvecs))

    def _component_terms(self, flat: torch.Tensor, s2: torch.Tensor):
        """Per-component log-responsibility terms and eigenbasis coordinates, for [B, d] inputs."""
        logw, means, lam, U = self._to(flat.device)
        diff = flat[:, None, :] - means[None]  # [B, K, d]
        y = torch.einsum("bkd,kde->bke", diff, U)  # coordinates in each eigenbasis
        var = lam[None] + s2[:, :, None]  # [B, K, d]
        maha = (y**2 / var).sum(-1)
        logdet = torch.log(var).sum(-1)
        logits = logw[None] - 0.5 * logdet - 0.5 * maha
        return logits, y, var, lam, U, means

    def responsibilities(self, x: torch.Tensor, sigma) -> torch.Tensor:
        """Posterior component probabilities p(k | x) at noise level sigma, [B, K]."""
        flat = x.reshape(x.shape[0], -1).to(torch.float64)
        logits, *_ = self._component_terms(flat, _sigma_column(sigma, flat) ** 2)
        return torch.softmax(logits, dim=1)

    def __call__(self, x: torch.Tensor, sigma) -> torch.Tensor:
        flat = x.reshape(x.shape[0], -1).to(torch.float64)
        logits, y, var, lam, U, means = self._component_terms(flat, _sigma_column(sigma, flat) ** 2)
        w = torch.softmax(logits, dim=1)  # [B, K]
        shrunk = y * (lam[None] / var)  # posterior mean offset in each eigenbasis
        post = means[None] + torch.einsum("bke,kde->bkd", shrunk, U)
        out = (w[:, :, None] * post).sum(1)
        return out.to(x.dtype).reshape(x.shape)

    def log_prob(self, x: torch.Tensor, sigma: float = 0.0) -> torch.Tensor:
        """log p_sigma(x) of the noised mixture (sigma = 0: the data density), [B]."""
        flat = x.reshape(x.shape[0], -1).to(torch.float64)
        logits, *_ = self._component_terms(flat, _sigma_column(sigma, flat) ** 2)
        return torch.logsumexp(logits, dim=1) - 0.5 * self.dim * math.log(2 * math.pi)

    def score(self, x: torch.Tensor, sigma) -> torch.Tensor:
        """grad_x log p_sigma(x) = (D(x, sigma) - x)/sigma^2."""
        s = _sigma_column(sigma, x.reshape(x.shape[0], -1)).reshape(-1, *([1] * (x.ndim - 1)))
        return (self(x, sigma) - x.to(torch.float64)) / s**2

    def sample(self, n: int, generator=None, return_components: bool = False):
        """n draws (float64); per-sample generators make draw i depend on its own seed only."""
        if generator is None or isinstance(generator, torch.Generator):
            u = torch.rand(n, generator=generator, dtype=torch.float64)
            z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        else:
            u = torch.stack([torch.rand((), generator=g, dtype=torch.float64) for g in generator])
            z = torch.stack([torch.randn(self.dim, generator=g, dtype=torch.float64) for g in generator])
        cdf = torch.cumsum(self.weights, 0)
        k = torch.searchsorted(cdf, u.clamp(max=float(cdf[-1]) - 1e-15))
        scale = self.eigvecs[k] * self.eigvals[k].sqrt()[:, None, :]  # U diag(sqrt(lam))
        x = self.means[k] + torch.einsum("nde,ne->nd", scale, z)
        return (x, k) if return_components else x

    @property
    def mean(self) -> torch.Tensor:
        return (self.weights[:, None] * self.means).sum(0)

    @property
    def covariance(self) -> torch.Tensor:
        m = self.mean
        second = (self.weights[:, None, None] * (self.covs + self.means[:, :, None] * self.means[:, None, :])).sum(0)
        return second - m[:, None] * m[None, :]


class PointSet:
    """The empirical distribution of a finite point set: the optimal denoiser of its training data.

    D(x, sigma) = sum_i softmax_i(log pi_i - |x - y_i|^2 / (2 sigma^2)) y_i (physics.md f.2), computed
    as one matmul with cached squared norms; the probability-flow ODE ends on the points themselves.
    """

    def __init__(self, points: torch.Tensor, weights: torch.Tensor | None = None, chunk: int = 65536):
        pts = torch.as_tensor(points, dtype=torch.float64)
        self.shape = tuple(pts.shape[1:])
        self.points = pts.reshape(pts.shape[0], -1)
        n = self.points.shape[0]
        w = torch.full((n,), 1.0 / n, dtype=torch.float64) if weights is None else torch.as_tensor(weights, dtype=torch.float64)
        self.log_weights = torch.log(w / w.sum())
        self.sq_norms = (self.points**2).sum(1)
        self.chunk = chunk

    def logits(self, flat: torch.Tensor, sigma_col: torch.Tensor) -> torch.Tensor:
        pts = self.points.to(flat.device)
        # -|x - y|^2/(2 s^2) = (x.y - |y|^2/2)/s^2 + const(x): one matmul.
        return self.log_weights.to(flat.device) + (flat @ pts.T - 0.5 * self.sq_norms.to(flat.device)) / sigma_col**2

    def __call__(self, x: torch.Tensor, sigma) -> torch.Tensor:
        flat = x.reshape(x.shape[0], -1).to(torch.float64)
        sc = _sigma_column(sigma, flat)
        w = torch.softmax(self.logits(flat, sc), dim=1)
        out = w @ self.points.to(flat.device)
        return out.to(x.dtype).reshape(x.shape)
