"""Fréchet distance (FD; FID in Inception space, Heusel et al. 2017, arXiv:1706.08500).

FD between N(mu1, C1) and N(mu2, C2) is ``|mu1 - mu2|^2 + tr C1 + tr C2 - 2 tr (C2^1/2 C1 C2^1/2)^1/2``.
The trace term is computed from two symmetric eigendecompositions in float64 (``eigh`` of C2 for its
square root, then the eigenvalues of the symmetric PSD matrix C2^1/2 C1 C2^1/2, negatives from
round-off clamped to 0): always real, backward stable, and the same value as torch-fidelity's
``fid_statistics_to_metric`` (``sqrt(eigvals(C1 C2))``, the same spectrum) without importing it for
vector data; a test checks the two agree. With a singular covariance (fewer samples than features)
both are only accurate to ~sqrt(eps |C|) absolute: round-off of a zero eigenvalue is square-rooted.

The accumulator streams EDM2-style float64 sums of features and of feature outer products
(Karras et al. 2024, arXiv:2312.02696), shifted by the reference mean so that the covariance is not
the difference of two large numbers; ``cov = (S2 - n m m^T) / (n - 1)`` as in torch-fidelity / numpy.
"""

from __future__ import annotations

import torch

from .base import FeatureMetric
from .registry import register_metric


def sqrtm_psd(c: torch.Tensor) -> torch.Tensor:
    """Symmetric square root of a symmetric PSD matrix (eigenvalues below 0 from round-off -> 0)."""
    lam, v = torch.linalg.eigh(0.5 * (c + c.T))
    return (v * lam.clamp_min(0).sqrt()) @ v.T


def frechet_distances(mu1: torch.Tensor, cov1: torch.Tensor, mu2: torch.Tensor, cov2_sqrt: torch.Tensor,
                      cov2_trace: torch.Tensor | float) -> torch.Tensor:
    """FD of a stack of Gaussians ``N(mu1[...], cov1[...])`` to one ``N(mu2, cov2)`` given by the square
    root and trace of ``cov2``; leading dimensions of ``mu1`` / ``cov1`` are batch dimensions (e.g. the
    bootstrap replicates: one batched ``eigvalsh`` for all of them).
    """
    m = cov2_sqrt @ cov1 @ cov2_sqrt
    lam = torch.linalg.eigvalsh(0.5 * (m + m.transpose(-1, -2)))
    tr_covmean = lam.clamp_min(0).sqrt().sum(-1)
    diff = mu1 - mu2
    fd = (diff * diff).sum(-1) + torch.diagonal(cov1, dim1=-2, dim2=-1).sum(-1) + cov2_trace - 2 * tr_covmean
    return fd


def frechet_distance(mu1: torch.Tensor, cov1: torch.Tensor, mu2: torch.Tensor, cov2: torch.Tensor,
                     cov2_sqrt: torch.Tensor | None = None) -> float:
    """Fréchet (2-Wasserstein) distance squared between two Gaussians, float64.

    ``cov2_sqrt`` may pass a precomputed :func:`sqrtm_psd` of ``cov2`` (a fixed reference).
    """
    mu1, cov1, mu2, cov2 = (torch.as_tensor(t, dtype=torch.float64) for t in (mu1, cov1, mu2, cov2))
    if mu1.shape != mu2.shape or cov1.shape != cov2.shape or cov1.shape != (mu1.numel(), mu1.numel()):
        raise ValueError(f"frechet_distance: shapes disagree: mu {tuple(mu1.shape)} vs {tuple(mu2.shape)}, "
                         f"cov {tuple(cov1.shape)} vs {tuple(cov2.shape)}")
    root = sqrtm_psd(cov2) if cov2_sqrt is None else cov2_sqrt.to(cov1)
    return float(frechet_distances(mu1, cov1, mu2, root, torch.trace(cov2)))


@register_metric(
    "fd",
    keys=("fd",),
    lower_is_better=True,
    description="Fréchet distance between sample and reference feature Gaussians (FID with inception-v3-compat)",
    paper="Heusel et al. 2017, arXiv:1706.08500; streaming sums as EDM2, arXiv:2312.02696",
)
class FrechetDistance(FeatureMetric):
    """Streaming FD: float64 sums of (features - reference mean) and of their outer products."""

    name = "fd"
    reference_kind = "moments"
    # E[FD_n] = FD + O(1/n) (the sample covariance's spread enters the trace terms): bias-correct it
    bias_corrected_keys = ("fd",)

    @classmethod
    def min_samples(cls, params: dict) -> int:
        return 2  # an unbiased covariance divides by n - 1

    def _setup(self) -> None:
        self.ref_mean = self.reference.tensors["mean"].to(self.device, torch.float64)
        self.ref_cov = self.reference.tensors["cov"].to(self.device, torch.float64)
        dim = self.ref_mean.numel()
        # R replicate outer-product sums cost R * dim^2 float64: at most ~1 GiB (32 for Inception's 2048)
        self.replicates = int(min(self.replicates, max(8, 2**30 // (8 * dim * dim))))
        self._state["rep:count"] = self._zeros((self.replicates,))
        self._state["sum"] = self._zeros((dim,))
        self._state["rep:sum"] = self._zeros((self.replicates, dim))
        self._state["sum_outer"] = self._zeros((dim, dim))
        self._state["rep:sum_outer"] = self._zeros((self.replicates, dim, dim))

    def _update(self, x, reference) -> None:
        f = self.features(x) - self.ref_mean
        self._add("sum", f)
        self._add_outer("sum_outer", f)

    def moments(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample mean and (unbiased) covariance of the features seen so far."""
        n = self._state["count"]
        if n < 2:
            raise ValueError(f"metric 'fd' needs at least 2 samples for a covariance, got {int(n)}")
        mean_c, cov = _centred_moments(self._state)
        return mean_c + self.ref_mean, cov

    def _values(self, state) -> dict[str, torch.Tensor]:
        if state["count"].dim() == 0 and state["count"] < 2:  # the plain value (a replicate gives NaN)
            raise ValueError(f"metric 'fd' needs at least 2 samples for a covariance, got {int(state['count'])}")
        mean_c, cov = _centred_moments(state)
        derived = self.reference.derived  # shared by every cell's accumulator: one eigh per process
        if "cov_sqrt" not in derived:
            derived["cov_sqrt"] = sqrtm_psd(self.reference.tensors["cov"].to(torch.float64))
        root = derived["cov_sqrt"].to(self.device)
        # features were shifted by the reference mean: the mean difference is mean_c itself
        fd = frechet_distances(mean_c, cov, torch.zeros_like(self.ref_mean), root, torch.trace(self.ref_cov))
        return {"fd": fd}


def _centred_moments(state) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and unbiased covariance of the (reference-mean-shifted) features from the sums of a state
    whose tensors may carry leading batch dimensions (``cov = (S2 - n m m^T) / (n - 1)``)."""
    n = state["count"][..., None]
    mean_c = state["sum"] / n
    cov = (state["sum_outer"] - n[..., None] * mean_c[..., :, None] * mean_c[..., None, :]) / (n[..., None] - 1)
    return mean_c, 0.5 * (cov + cov.transpose(-1, -2))
