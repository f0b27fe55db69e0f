"""Sliced Wasserstein distance between samples and reference draws (Bonneel et al. 2015,
"Sliced and Radon Wasserstein barycenters of measures", J. Math. Imaging Vis. 51, doi:10.1007/s10851-014-0506-3).

Estimator: ``SW_p = ( (1/L) sum_l W_p^p(theta_l # P_n, theta_l # Q_m) )^(1/p)`` over ``L = n_projections``
fixed directions ``theta_l`` drawn uniformly on the unit sphere of the feature space (normalised
float64 Gaussians from a generator seeded with ``derived_seed(seed, "swd-projections")``, so every
run, rank and device uses the same directions). Each 1-D ``W_p`` between the two *empirical*
measures is exact: the integral over t in (0, 1) of ``|F^-1(t) - G^-1(t)|^p`` of the two quantile
functions, piecewise constant between the merged breakpoints ``i/n`` and ``j/m`` (so the sample and
reference counts may differ). The Monte-Carlo error is in the choice of directions only.

State: the samples' projections (``"cat:proj"``, ``[n, L]``), capped at ``max_samples`` first rows --
like KID, an exception to "memory independent of the sample count", but L numbers per sample.
"""

from __future__ import annotations

import torch

from ..options import Option
from .base import FeatureMetric
from .kid_pr import MAX_SAMPLES
from .refstats import derived_seed
from .registry import register_metric


def projections(dim: int, n_projections: int, seed: int) -> torch.Tensor:
    """[dim, L] unit directions, uniform on the sphere, a function of (dim, L, seed) only."""
    g = torch.Generator().manual_seed(derived_seed(seed, "swd-projections"))
    theta = torch.randn(dim, n_projections, generator=g, dtype=torch.float64)
    return theta / theta.norm(dim=0, keepdim=True)


def wasserstein_1d(a: torch.Tensor, b: torch.Tensor, p: int = 2) -> torch.Tensor:
    """W_p^p between empirical measures, per column: ``a`` [n, L] and ``b`` [m, L] -> [L]."""
    n, m = a.shape[0], b.shape[0]
    a, b = a.sort(0).values, b.sort(0).values
    ta = torch.arange(1, n + 1, dtype=torch.float64, device=a.device) / n
    tb = torch.arange(1, m + 1, dtype=torch.float64, device=a.device) / m
    t = torch.cat([ta, tb]).sort().values
    prev = torch.cat([t.new_zeros(1), t[:-1]])
    width = t - prev  # zero-width pieces (shared breakpoints) contribute nothing
    mid = 0.5 * (t + prev)
    ia = (mid * n).floor().long().clamp(0, n - 1)  # quantile F^-1(t) = a[i] for t in (i/n, (i+1)/n]
    ib = (mid * m).floor().long().clamp(0, m - 1)
    return (width[:, None] * (a[ia] - b[ib]).abs() ** p).sum(0)


@register_metric(
    "swd",
    keys=("swd",),
    lower_is_better=True,
    description="sliced Wasserstein distance to reference draws (fixed seeded directions, exact 1-D W_p)",
    paper="Bonneel et al. 2015, doi:10.1007/s10851-014-0506-3",
    params={
        "max_samples": MAX_SAMPLES,
        "n_projections": Option(128, int, "number of random directions", low=1),
        "p": Option(2, int, "order of the Wasserstein distance", choices=(1, 2)),
    },
)
class SlicedWasserstein(FeatureMetric):
    reference_kind = "features"
    replicates = 16  # each replicate sorts the reweighted projections again (see kid_pr)

    def _setup(self) -> None:
        self.max_samples = self.params["max_samples"]
        ref = self.reference.tensors["features"].to(self.device, torch.float64)
        self.theta = projections(ref.shape[1], self.params["n_projections"], self.seed).to(self.device)
        self.ref_proj = ref @ self.theta
        self._state["cat:proj"] = self._zeros((0, self.theta.shape[1]))
        self._state["cat:index"] = self._zeros((0, 1))  # sample index of each row (bootstrap weights)

    def _update(self, x, reference) -> None:
        self._append_rows("cat:proj", self.features(x) @ self.theta)

    def _compute(self) -> dict[str, float]:
        p = self.params["p"]
        w = wasserstein_1d(self._state["cat:proj"], self.ref_proj, p)
        return {"swd": float(w.mean() ** (1.0 / p))}
