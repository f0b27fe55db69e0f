"""Noise sources for stochastic samplers, driven only by the caller's generator(s) (:mod:`sampler_bench.rng`).

Two noise sources, chosen by every stochastic solver's ``noise`` option (declared once, in
:func:`stochastic_options`):

* ``'gaussian'`` (default): a fresh standard normal draw per request, from the generator(s).
* ``'brownian'``: the normalised increment of one Brownian path per sample (torchsde's
  ``BrownianTree``, Li et al. 2020, arXiv 2001.01328), seeded from the generator(s). The same seed
  gives the same path whatever the step grid, so samples on a coarse and a fine grid are driven by
  the *same* noise (strong-error studies; k-diffusion's ``BrownianTreeNoiseSampler`` idea,
  docs/findings.md, "Pitfalls").
"""

from __future__ import annotations

from typing import Sequence

import math

import torch

from ..options import Option
from ..philox import PhiloxNoise
from ..rng import Generators, check_generator, generators_for, randn_like  # noqa: F401  re-exported

#: The values of the shared ``noise`` option.
NOISE_KINDS = ("gaussian", "brownian")

_NOISE_OPTION = Option(
    "gaussian", str,
    "'gaussian': fresh N(0, I) draws per step from the generator(s); 'brownian': increments of one "
    "Brownian path per sample (torchsde BrownianTree), consistent across step grids with the same sigma_max",
    choices=NOISE_KINDS,
)


def stochastic_options(**options: Option) -> dict[str, Option]:
    """The options of a stochastic solver: its own plus the shared ``noise`` source option."""
    if "noise" in options:
        raise RuntimeError("'noise' is the shared noise-source option; do not redeclare it")
    return {**options, "noise": _NOISE_OPTION}


class BrownianNoise:
    """Standard normal noise from Brownian increments in sigma, one path per sample.

    ``noise(a, b) = (W(b) - W(a)) / sqrt(|b - a|)`` for the path ``W`` on ``[0, sigma_max]``; a
    query ``(a, b)`` with ``a > b`` (sampling runs downward in sigma) returns the increment over
    ``[b, a]`` with the sign of ``b - a``, as k-diffusion does. Disjoint intervals give independent
    draws, overlapping ones correlated draws, and a finer grid's increments sum to the coarser
    grid's. The path lives on ``[0, sigma_max]`` rather than on ``[sigma_min, sigma_max]`` so that
    grids differing only in sigma_min share it and every query, including EDM's churn on the final
    interval onto 0, lies inside it. Levels are resolved to ``TOL`` (absolute). Each query costs a
    walk down the tree (~ms per path), so with one generator per sample this source is much slower
    than 'gaussian' for large batches.

    Seeds: one 63-bit entropy per path, drawn from the caller's generator (one path per generator
    when a list is given, so batch invariance holds; one path over the whole batch otherwise).
    The path is kept in float64 on the CPU and cast to the state's dtype and device.
    """

    TOL = 1e-10

    def __init__(self, x: torch.Tensor, sigma_max: float, generator: Generators = None):
        import torchsde  # deferred: importing torchsde costs a second and only this source needs it

        if not sigma_max > 0:
            raise ValueError(f"a Brownian noise source needs sigma_max > 0, got {sigma_max}")
        self.sigma_max = float(sigma_max)
        # The tree ends a hair above sigma_max: torchsde rounds its end to TOL digits, and a grid's
        # first level may sit an ulp above the rounded value (karras(...)[0] = 10.000000000000002).
        self._end = self.sigma_max * (1 + 1e-9)
        self.shape, self.dtype, self.device = x.shape, x.dtype, x.device
        per_sample = generator is not None and not isinstance(generator, torch.Generator)
        if isinstance(generator, PhiloxNoise):
            entropies = generator.entropies()  # one path per sample, from its own counter
        else:
            entropies = [_entropy(g) for g in (list(generator) if per_sample else [generator])]
        w0 = torch.zeros(self.shape[1:] if per_sample else self.shape, dtype=torch.float64)
        self.per_sample = per_sample
        self.trees = [
            torchsde.BrownianTree(0.0, w0, self._end, entropy=e, tol=self.TOL) for e in entropies
        ]

    def __call__(self, sigma: float, sigma_next: float) -> torch.Tensor:
        a, b = float(sigma), float(sigma_next)
        lo, hi = min(a, b), max(a, b)
        if lo < 0 or hi > self._end or hi - lo <= 0:
            raise ValueError(
                f"Brownian noise asked for the interval [{lo:.6g}, {hi:.6g}], which is empty or outside "
                f"the path's range [0, {self.sigma_max:.6g}]"
            )
        rows = [tree(lo, hi) for tree in self.trees]
        w = torch.stack(rows) if self.per_sample else rows[0]
        z = w * (math.copysign(1.0, b - a) / math.sqrt(hi - lo))
        return z.to(device=self.device, dtype=self.dtype)


def _entropy(generator: torch.Generator | None) -> int:
    """One 63-bit seed drawn from ``generator`` (the global RNG when None)."""
    device = generator.device if generator is not None else "cpu"
    return int(torch.randint(0, 2**63 - 1, (), generator=generator, device=device).item())


def noise_source(kind: str | None, x: torch.Tensor, sigmas: Sequence[float], generator: Generators = None):
    """The ``Context.noise_source`` for a solver's ``noise`` option: None (draw from the generator) or Brownian."""
    if kind is None or kind == "gaussian":
        return None
    if kind == "brownian":
        return BrownianNoise(x, max(float(s) for s in sigmas), generator)
    raise ValueError(f"unknown noise source {kind!r}; expected one of {', '.join(NOISE_KINDS)}")
