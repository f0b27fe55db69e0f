"""Exact denoisers E[x0 | x] under the Gaussian kernel x = x0 + sigma * n.

Formulas: docs/processes.md, "Exact denoisers" (Gaussian mixtures, finite point sets). Everything is
computed in float64 and in log-space (log-sum-exp over components / points), batched over samples
with one sigma per sample, so the same objects serve as test oracles and as built-in sweep models.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Sequence

import torch

from ..rng import randn_like


def _sigma_column(sigma, x: torch.Tensor) -> torch.Tensor:
    """Per-sample sigma as a float64 column [B, 1]."""
    s = torch.as_tensor(sigma, dtype=torch.float64, device=x.device)
    if s.ndim == 0:
        s = s.expand(x.shape[0])
    return s.reshape(-1, 1)


def _softmax_rows(logits: torch.Tensor) -> torch.Tensor:
    """Softmax over the last of [B, K] with small K: reduced along the contiguous axis of the
    transpose, several times faster on a CPU than along rows of K values (same numbers to round-off)."""
    return torch.softmax(logits.T, dim=0).T


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
    """Data sum_k pi_k N(mu_k, Sigma_k) with full covariances (docs/processes.md).

    Each covariance is eigendecomposed once, Sigma_k = U_k diag(lam_k) U_k^T, so the noisy
    covariance C_k = Sigma_k + sigma^2 I is diagonal in the same basis for every sigma.

    Speed without approximation: the eigenbases are stacked into one ``[d, K d]`` matrix, so the
    coordinates of ``x - mu_k`` in every component's basis come from one matrix product, and the
    posterior means go back through its transpose; the per-level constants (1/(lam + sigma^2),
    the shrinkage lam/(lam + sigma^2) and the log-normaliser log pi_k - 1/2 log det C_k) are
    computed once per noise level and reused, since a sampler calls the denoiser batch after batch
    on the same grid. Everything stays float64; the result equals the textbook formula to round-off.
    """

    #: how many noise levels' constants are kept (a sweep uses a few hundred distinct levels)
    LEVEL_CACHE_SIZE = 4096

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
        # y_k = U_k^T (x - mu_k) for all k at once: x @ basis - offsets, with basis = [U_1 | ... | U_K].
        self._basis = U.permute(1, 0, 2).reshape(d, K * d).contiguous()
        self._offsets = torch.einsum("kd,kde->ke", self.means, U).reshape(K * d)
        self._devices: dict = {}
        self._levels: OrderedDict = OrderedDict()

    @classmethod
    def isotropic(cls, weights, means, stds) -> "GaussianMixture":
        means = torch.as_tensor(means, dtype=torch.float64)
        K, d = means.shape
        stds = torch.as_tensor(stds, dtype=torch.float64).reshape(-1).expand(K)
        covs = stds[:, None, None] ** 2 * torch.eye(d, dtype=torch.float64)
        return cls(weights, means, covs)

    def _on(self, device):
        """The stacked basis, offsets, eigenvalues, means, log-weights and the block-sum matrix [K d, K]
        (ones where row j belongs to component k) on ``device`` (moved once)."""
        key = str(device)
        if key not in self._devices:
            K, d = self.n_components, self.dim
            block_sum = torch.zeros(K, d, K, dtype=torch.float64)
            block_sum[torch.arange(K), :, torch.arange(K)] = 1.0
            self._devices[key] = tuple(t.to(device) for t in (
                self._basis, self._offsets, self.eigvals.reshape(-1), self.means, self.log_weights,
                block_sum.reshape(K * d, K)))
        return self._devices[key]

    def _shared_level_terms(self, s2: torch.Tensor, device):
        """(1/var as the block matrix [K d, K], lam/var [1, K d], log pi_k - 1/2 log det C_k [1, K]) for
        one squared level ``s2`` [1, 1] shared by the batch (a sampler's step), var = lam + s2; cached per
        level, except a level that carries a gradient (ld3 learns the levels): it stays in its own graph.
        The block matrix sums y^2/var per component in one product."""
        cacheable = not s2.requires_grad
        key = (float(s2.detach().reshape(-1)[0]), str(device))
        if cacheable:
            hit = self._levels.get(key)
            if hit is not None:
                self._levels.move_to_end(key)
                return hit
        _, _, lam, _, logw, _ = self._on(device)
        K, d = self.n_components, self.dim
        var = lam[None] + s2  # [1, K d]
        lognorm = logw[None] - 0.5 * torch.log(var).reshape(-1, K, d).sum(-1)
        blocks = torch.zeros(K, d, K, dtype=var.dtype, device=device)
        blocks[torch.arange(K), :, torch.arange(K)] = (1.0 / var).reshape(K, d)
        terms = (blocks.reshape(K * d, K), lam[None] / var, lognorm)
        if not cacheable:
            return terms
        self._levels[key] = terms
        while len(self._levels) > self.LEVEL_CACHE_SIZE:
            self._levels.popitem(last=False)
        return terms

    def _component_terms(self, flat: torch.Tensor, s2: torch.Tensor):
        """Per-component log-responsibilities [B, K], eigenbasis coordinates [B, K d] and shrinkage.

        One level for the batch: the cached constants of :meth:`_shared_level_terms`. One level per
        sample (an adaptive solver's per-sample steps): the same formula on [B, K d] rows, with the log
        determinant and the Mahalanobis term summed per component together, by one product with the
        block-sum matrix (a reshape-and-sum over d is several times slower for small d); no loop over
        samples, still float64, equal to the shared-level path to round-off.
        """
        basis, offsets, lam, _, logw, block_sum = self._on(flat.device)
        y = torch.addmm(offsets, flat, basis, alpha=1.0, beta=-1.0)  # [B, K d]: U_k^T (x - mu_k)
        if s2.shape[0] == 1 or bool((s2 == s2[0]).all()):
            inv_var, shrink, lognorm = self._shared_level_terms(s2[:1, :1], flat.device)
            return torch.addmm(lognorm, y * y, inv_var, alpha=-0.5), y, shrink
        # In place where possible: each [B, K d] temporary above glibc's mmap threshold (128 KiB) is a
        # fresh mapping whose pages fault in, which costs more than the arithmetic.
        if s2.requires_grad:  # out of place, so that autograd keeps what it saved
            var = lam[None] + s2
            z = torch.log(var) + y * y / var
            return torch.addmm(logw, z, block_sum, alpha=-0.5), y, lam / var
        inv_var = lam[None] + s2  # [B, K d], the noisy variances ...
        z = torch.log(inv_var)
        inv_var.reciprocal_()  # ... now 1/var
        z.addcmul_(y * y, inv_var)  # log var_kj + y_kj^2 / var_kj
        logits = torch.addmm(logw, z, block_sum, alpha=-0.5)  # log pi_k - 1/2 sum_j (...)
        return logits, y, inv_var.mul_(lam)

    def responsibilities(self, x: torch.Tensor, sigma) -> torch.Tensor:
        """Posterior component probabilities p(k | x) at noise level sigma, [B, K]."""
        flat = x.reshape(x.shape[0], -1).to(torch.float64)
        logits, _, _ = self._component_terms(flat, _sigma_column(sigma, flat) ** 2)
        return _softmax_rows(logits)

    def __call__(self, x: torch.Tensor, sigma) -> torch.Tensor:
        flat = x.reshape(x.shape[0], -1).to(torch.float64)
        logits, y, shrink = self._component_terms(flat, _sigma_column(sigma, flat) ** 2)
        w = _softmax_rows(logits)  # [B, K]
        basis, _, _, means, _, _ = self._on(flat.device)
        # E[x0 | x] = sum_k w_k (mu_k + U_k diag(lam_k/var_k) y_k): the second term for all k is one
        # product with the stacked basis' transpose.
        B, K, d = flat.shape[0], self.n_components, self.dim
        if torch.is_grad_enabled() and (y.requires_grad or shrink.requires_grad):  # autograd saved y: out of place
            weighted = (y * shrink).view(B, K, d) * w[:, :, None]
        else:
            weighted = y.mul_(shrink).view(B, K, d).mul_(w[:, :, None])  # in place: y is ours and not needed again
        out = torch.addmm(w @ means, weighted.reshape(B, K * d), basis.T)
        return out.to(x.dtype).reshape(x.shape)

    def log_prob(self, x: torch.Tensor, sigma: float = 0.0) -> torch.Tensor:
        """log p_sigma(x) of the noised mixture (sigma = 0: the data density), [B]."""
        flat = x.reshape(x.shape[0], -1).to(torch.float64)
        logits, _, _ = self._component_terms(flat, _sigma_column(sigma, flat) ** 2)
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

    D(x, sigma) = sum_i softmax_i(log pi_i - |x - y_i|^2 / (2 sigma^2)) y_i (docs/processes.md), computed
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
