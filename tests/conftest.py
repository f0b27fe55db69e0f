"""Shared pytest fixtures: small float64 analytic models with exact denoisers.

Keep this file small and generic; anything specific to one test module belongs in that module.
"""

from __future__ import annotations

import os

import pytest
import torch

from sampler_bench.processes.analytic import GaussianMixture, IsotropicGaussian

# Reports in tests draw their figures in the test's own process: a pool of spawned drawing processes per
# report would cost a second each, two pytest workers already use the cores, and tests/test_report_drawing.py
# proves that the pool draws the same bytes.
os.environ.setdefault("SAMPLER_BENCH_REPORT_WORKERS", "1")


def _random_mixture(dim: int, components: int, seed: int, eigenvalues) -> GaussianMixture:
    g = torch.Generator().manual_seed(seed)
    means = 1.5 * torch.randn(components, dim, generator=g, dtype=torch.float64)
    covs = []
    for _ in range(components):
        q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))
        covs.append(q @ torch.diag(torch.as_tensor(eigenvalues, dtype=torch.float64)) @ q.T)
    weights = torch.arange(components, 0, -1, dtype=torch.float64)
    return GaussianMixture(weights, means, torch.stack(covs))


@pytest.fixture(scope="session")
def gmm3d() -> GaussianMixture:
    """3-D mixture of 3 full-covariance Gaussians (variances 0.3, 0.6, 1 in rotated axes; weights 3:2:1)."""
    return _random_mixture(3, 3, seed=1234, eigenvalues=[0.3, 0.6, 1.0])


@pytest.fixture(scope="session")
def gaussian3d() -> IsotropicGaussian:
    """N(mean, 0.5^2 I) in 3-D: its probability-flow ODE has a closed-form solution."""
    return IsotropicGaussian([0.5, -1.0, 0.25], 0.5)


@pytest.fixture
def generator() -> torch.Generator:
    """A freshly seeded CPU generator (seed 0)."""
    return torch.Generator().manual_seed(0)
