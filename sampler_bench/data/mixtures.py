"""N-D Gaussian mixtures with full covariances, drawn from a fixed seed; their law is exact.

The mixture itself is :class:`sampler_bench.processes.analytic.GaussianMixture`, so a network trained
on these samples can be checked against the exact denoiser (``dataset.distribution``).
"""

from __future__ import annotations

import torch

from ..processes.analytic import GaussianMixture
from .base import Dataset


def random_mixture(dim: int, components: int, seed: int = 0, spread: float = 1.5,
                   min_variance: float = 0.01, max_variance: float = 1.0) -> GaussianMixture:
    """Means ~ N(0, spread^2 I); covariances with random eigenbases and log-spaced eigenvalues."""
    if dim < 1 or components < 1:
        raise ValueError(f"a Gaussian mixture needs dim >= 1 and components >= 1, got {dim}, {components}")
    if not 0 < min_variance <= max_variance:
        raise ValueError("need 0 < min_variance <= max_variance")
    g = torch.Generator().manual_seed(int(seed))
    means = spread * torch.randn(components, dim, generator=g, dtype=torch.float64)
    lam = torch.logspace(torch.log10(torch.tensor(min_variance)).item(), torch.log10(torch.tensor(max_variance)).item(),
                         dim, dtype=torch.float64)
    covs = []
    for _ in range(components):
        q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))
        covs.append(q @ torch.diag(lam) @ q.T)
    weights = torch.rand(components, generator=g, dtype=torch.float64) + 0.5
    return GaussianMixture(weights, means, torch.stack(covs))


def gaussian_mixture(dim: int = 16, components: int = 4, n_train: int = 20000, n_test: int = 5000, seed: int = 0,
                     spread: float = 1.5, min_variance: float = 0.01, max_variance: float = 1.0) -> Dataset:
    """Samples of :func:`random_mixture` (float32), split into train and test by position."""
    gmm = random_mixture(dim, components, seed, spread, min_variance, max_variance)
    g = torch.Generator().manual_seed(int(seed) + 1)
    pts = gmm.sample(n_train + n_test, generator=g).to(torch.float32)
    config = {"name": "gmm", "dim": dim, "components": components, "n_train": n_train, "n_test": n_test, "seed": seed,
              "spread": spread, "min_variance": min_variance, "max_variance": max_variance}
    return Dataset("gmm", pts[:n_train], pts[n_train:], config, distribution=gmm,
                   description=f"{dim}-D mixture of {components} full-covariance Gaussians")
