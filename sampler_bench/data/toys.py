"""2-D toy distributions: a ring of Gaussians, two moons, a swiss roll, a checkerboard.

Each is drawn from a fixed seed (the split is fixed), in float32, at a scale of about unit std.
The ring is an exact Gaussian mixture (the built-in ``gmm2d``: eight components of std 0.15 on a
circle of radius 2), so a model trained on it can be compared with the exact denoiser.
"""

from __future__ import annotations

import math

import torch

from ..processes.analytic import GaussianMixture
from .base import Dataset


def ring_mixture(components: int = 8, radius: float = 2.0, std: float = 0.15) -> GaussianMixture:
    angles = torch.arange(components, dtype=torch.float64) * (2 * math.pi / components)
    means = radius * torch.stack([torch.cos(angles), torch.sin(angles)], 1)
    return GaussianMixture.isotropic(torch.ones(components), means, std)


def _moons(n: int, g: torch.Generator, noise: float) -> torch.Tensor:
    # The two interleaving half circles of scikit-learn's make_moons, centred and scaled.
    upper = torch.rand(n, generator=g, dtype=torch.float64) < 0.5
    t = math.pi * torch.rand(n, generator=g, dtype=torch.float64)
    x = torch.where(upper, torch.cos(t), 1 - torch.cos(t))
    y = torch.where(upper, torch.sin(t), 0.5 - torch.sin(t))
    pts = torch.stack([x - 0.5, y - 0.25], 1) * 1.5
    return pts + noise * torch.randn(n, 2, generator=g, dtype=torch.float64)


def _swissroll(n: int, g: torch.Generator, noise: float) -> torch.Tensor:
    t = 1.5 * math.pi * (1 + 2 * torch.rand(n, generator=g, dtype=torch.float64))
    pts = torch.stack([t * torch.cos(t), t * torch.sin(t)], 1) / 5.0
    return pts + noise * torch.randn(n, 2, generator=g, dtype=torch.float64)


def _checkerboard(n: int, g: torch.Generator, noise: float) -> torch.Tensor:
    # Uniform on the black squares of a 4x4 board covering [-2, 2]^2.
    x = 4 * torch.rand(n, generator=g, dtype=torch.float64) - 2
    y = 4 * torch.rand(n, generator=g, dtype=torch.float64) - 2
    flip = ((torch.floor(x) + torch.floor(y)) % 2) == 1
    y = torch.where(flip, torch.where(y >= 1, y - 1, y + 1), y)  # move onto the same-parity square in x's column
    return torch.stack([x, y], 1)


_SAMPLERS = {"moons": _moons, "swissroll": _swissroll, "checkerboard": _checkerboard}


def toy(name: str, n_train: int = 20000, n_test: int = 5000, seed: int = 0, noise: float = 0.05) -> Dataset:
    """A 2-D toy set: ``name`` in ring, moons, swissroll, checkerboard."""
    if n_train < 1 or n_test < 1:
        raise ValueError(f"toy dataset {name!r}: n_train and n_test must be >= 1")
    g = torch.Generator().manual_seed(int(seed))
    config = {"name": name, "n_train": n_train, "n_test": n_test, "seed": seed}
    distribution = None
    if name == "ring":
        distribution = ring_mixture()
        pts = distribution.sample(n_train + n_test, generator=g)
        desc = "8 Gaussians (std 0.15) on a ring of radius 2 (exact mixture)"
    else:
        pts = _SAMPLERS[name](n_train + n_test, g, noise)
        config["noise"] = noise
        desc = f"2-D {name}"
    pts = pts.to(torch.float32)
    return Dataset(name, pts[:n_train], pts[n_train:], config, distribution=distribution, description=desc)


TOYS = ("ring", "moons", "swissroll", "checkerboard")
