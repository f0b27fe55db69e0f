"""Exact CLD models: the scores (and R_t-parameterised eps) of a Gaussian mixture or a finite point set
under the CLD perturbation kernel, as test oracles and as analytic sweep models (Dockhorn et al., arXiv
2112.07068; the eps parameterisation of Zhang et al., arXiv 2206.05564, eq. 17).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ...hashing import tensor_hash
from ...rng import Generators
from ..analytic import GaussianMixture
from .blocks import apply2, inv2, split_state, stack_state
from .process import CLD, _times, _uniform

# ---------------------------------------------------------------------------------------------
# Exact scores under the CLD kernel (test oracles and analytic sweep models)
# ---------------------------------------------------------------------------------------------


class _CLDExact:
    """Shared part of the exact CLD oracles: score -> eps, velocity score, shapes."""

    cld: CLD
    shape: tuple[int, ...]

    def _kernel(self, u: torch.Tensor, t):
        """Per-sample float64 (a1, a2) = Psi(t, 0)[:, 0] and Sigma_t, as torch tensors [B] / [B, 2, 2]."""
        tt = _times(t, u.shape[0])
        p = self.cld.psi(tt, 0.0)
        dev = u.device
        return (torch.as_tensor(p[:, 0, 0], device=dev), torch.as_tensor(p[:, 1, 0], device=dev),
                torch.as_tensor(self.cld.cov(tt), device=dev), tt)

    def score(self, u: torch.Tensor, t) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def velocity_score(self, u: torch.Tensor, t) -> torch.Tensor:
        """grad_v log p_t(u), the only score component CLD's reverse dynamics use, [B, *data_shape]."""
        return self.score(u, t)[:, 1]

    def eps(self, u: torch.Tensor, t, kind: str = "R") -> torch.Tensor:
        """The exact eps_K = -K_t^T grad_u log p_t(u) (K = R: what a CLD network is trained to output)."""
        s = self.score(u, t)
        k = torch.as_tensor(self.cld.K(_times(t, u.shape[0]), kind), device=u.device)
        return (-torch.einsum("bji,bj...->bi...", k, s)).to(u.dtype)

    def __call__(self, u: torch.Tensor, t) -> torch.Tensor:
        return self.eps(u, t)

    def _flat(self, u: torch.Tensor):
        x, v = split_state(u)
        return x.reshape(u.shape[0], -1).to(torch.float64), v.reshape(u.shape[0], -1).to(torch.float64)


class CLDGaussianMixture(_CLDExact):
    """Data sum_k pi_k N(mu_k, S_k) under the CLD kernel: exact score, posterior mean and eps (docs/processes.md).

    u = A x_0 + noise with A = (psi11, psi21) per coordinate and noise covariance Sigma_t per (x, v) pair,
    so component k has covariance A S_k A^T + Sigma_t (x) I. In the eigenbasis S_k = U diag(lam) U^T it
    splits into one 2x2 block C = lam a a^T + Sigma_t per eigen-direction: no 2d x 2d matrix is formed.
    """

    def __init__(self, mixture: GaussianMixture, cld: CLD | None = None):
        if not isinstance(mixture, GaussianMixture):
            raise ValueError("CLDGaussianMixture takes a sampler_bench.processes.analytic.GaussianMixture")
        self.mixture = mixture
        self.cld = cld or CLD()
        self.shape = (mixture.dim,)

    def _terms(self, u: torch.Tensor, t):
        x, v = self._flat(u)
        a1, a2, S, _ = self._kernel(u, t)
        gm = self.mixture
        logw, means, lam, U = (z.to(u.device) for z in (gm.log_weights, gm.means, gm.eigvals, gm.eigvecs))
        a1c, a2c = a1[:, None, None], a2[:, None, None]
        yx = torch.einsum("bkd,kde->bke", x[:, None] - a1[:, None, None] * means[None], U)
        yv = torch.einsum("bkd,kde->bke", v[:, None] - a2[:, None, None] * means[None], U)
        cxx = lam[None] * a1c**2 + S[:, 0, 0, None, None]
        cxv = lam[None] * a1c * a2c + S[:, 0, 1, None, None]
        cvv = lam[None] * a2c**2 + S[:, 1, 1, None, None]
        det = cxx * cvv - cxv**2
        zx = (cvv * yx - cxv * yv) / det  # C^{-1} y, per block
        zv = (cxx * yv - cxv * yx) / det
        maha = (yx * zx + yv * zv).sum(-1)
        logits = logw[None] - 0.5 * torch.log(det).sum(-1) - 0.5 * maha
        return logits, zx, zv, lam, U, means, a1c, a2c

    def log_prob(self, u: torch.Tensor, t) -> torch.Tensor:
        """log p_t(u), [B]."""
        logits, *_ = self._terms(u, t)
        return torch.logsumexp(logits, 1) - self.mixture.dim * math.log(2 * math.pi)

    def score(self, u: torch.Tensor, t) -> torch.Tensor:
        """grad_u log p_t(u) = -sum_k w_k C_k^{-1} (u - A mu_k), shape of ``u`` (float64)."""
        logits, zx, zv, lam, U, *_ = self._terms(u, t)
        w = torch.softmax(logits, 1)[:, :, None]
        sx = -torch.einsum("bke,kde->bd", w * zx, U)
        sv = -torch.einsum("bke,kde->bd", w * zv, U)
        return stack_state(sx.reshape(u.shape[0], *self.shape), sv.reshape(u.shape[0], *self.shape))

    def posterior_mean(self, u: torch.Tensor, t) -> torch.Tensor:
        """E[x_0 | u_t] = sum_k w_k (mu_k + S_k A^T C_k^{-1} (u - A mu_k)), [B, d] (float64)."""
        logits, zx, zv, lam, U, means, a1c, a2c = self._terms(u, t)
        w = torch.softmax(logits, 1)
        post = means[None] + torch.einsum("bke,kde->bkd", lam[None] * (a1c * zx + a2c * zv), U)
        return (w[:, :, None] * post).sum(1)

    def sample(self, n: int, generator: Generators = None) -> torch.Tensor:
        return self.mixture.sample(n, generator=generator)


class CLDPointSet(_CLDExact):
    """The empirical distribution of a finite point set under the CLD kernel (docs/processes.md, CLD case).

    With P = Sigma_t^{-1} = [[a, b], [b, c]]: logits_i = log pi_i - Q_i / 2 with
    Q_i = sum_d a e_x^2 + 2 b e_x e_v + c e_v^2, e = (x - psi11 y_i, v - psi21 y_i), evaluated as one
    matmul; then y_hat = sum_i softmax_i y_i and, by Tweedie, score = -P (u - (psi11, psi21) y_hat).
    """

    def __init__(self, points: torch.Tensor, cld: CLD | None = None, weights: torch.Tensor | None = None):
        pts = torch.as_tensor(points, dtype=torch.float64)
        if pts.ndim < 2 or pts.shape[0] < 1:
            raise ValueError(f"points must have shape [N, *data_shape] with N >= 1, got {tuple(pts.shape)}")
        self.shape = tuple(pts.shape[1:])
        self.points = pts.reshape(pts.shape[0], -1)
        n = self.points.shape[0]
        w = torch.full((n,), 1.0 / n, dtype=torch.float64) if weights is None else torch.as_tensor(weights, dtype=torch.float64)
        if w.shape != (n,) or (w <= 0).any():
            raise ValueError("point weights must be positive, one per point")
        self.log_weights = torch.log(w / w.sum())
        self.sq_norms = (self.points**2).sum(1)
        self.cld = cld or CLD()

    def _post(self, u: torch.Tensor, t):
        x, v = self._flat(u)
        a1, a2, S, _ = self._kernel(u, t)
        det = S[:, 0, 0] * S[:, 1, 1] - S[:, 0, 1] ** 2
        pxx, pxv, pvv = S[:, 1, 1] / det, -S[:, 0, 1] / det, S[:, 0, 0] / det
        pts = self.points.to(u.device)
        lin = (a1 * pxx + a2 * pxv)[:, None] * x + (a1 * pxv + a2 * pvv)[:, None] * v  # [B, d]
        quad = pxx * a1**2 + 2 * pxv * a1 * a2 + pvv * a2**2  # [B]
        logits = self.log_weights.to(u.device) + lin @ pts.T - 0.5 * quad[:, None] * self.sq_norms.to(u.device)
        w = torch.softmax(logits, 1)
        return w @ pts, x, v, a1, a2, pxx, pxv, pvv

    def posterior_mean(self, u: torch.Tensor, t) -> torch.Tensor:
        """E[x_0 | u_t] = sum_i softmax_i y_i, [B, d] (float64)."""
        return self._post(u, t)[0]

    def score(self, u: torch.Tensor, t) -> torch.Tensor:
        yhat, x, v, a1, a2, pxx, pxv, pvv = self._post(u, t)
        ex, ev = x - a1[:, None] * yhat, v - a2[:, None] * yhat
        sx = -(pxx[:, None] * ex + pxv[:, None] * ev)
        sv = -(pxv[:, None] * ex + pvv[:, None] * ev)
        return stack_state(sx.reshape(u.shape[0], *self.shape), sv.reshape(u.shape[0], *self.shape))

    def sample(self, n: int, generator: Generators = None) -> torch.Tensor:
        """n draws from the points (uniformly by weight)."""
        u = _uniform(n, generator)
        cdf = torch.cumsum(torch.exp(self.log_weights), 0)
        idx = torch.searchsorted(cdf, u.clamp(max=float(cdf[-1]) - 1e-15))
        return self.points[idx].reshape(n, *self.shape)


class CLDAnalyticModel:
    """A CLD model whose eps is exact: a Gaussian mixture or a point set under the CLD kernel.

    Satisfies the sweep's model contract for ``process == 'cld'``: ``model(u, t)`` returns the
    R_t-parameterised eps (shape of ``u``), ``prior(n)`` returns [n, 2, *shape] at t = T,
    ``sigma_min``/``sigma_max`` are t_eps/T, ``data_from_state(u)`` is the generated sample u[:, 0].
    ``exact`` is the CLD oracle that gives eps; ``distribution`` is the *data* law, as for every model
    (sampler_bench.models.base): the :class:`GaussianMixture` of a mixture model, so the gmm_* metrics
    and exact reference moments apply to u[:, 0], or the :class:`CLDPointSet` (its points) of a point set.
    """

    process = "cld"

    def __init__(self, name: str, distribution: _CLDExact, description: str = ""):
        if not isinstance(distribution, _CLDExact):
            raise ValueError("CLDAnalyticModel takes a CLDGaussianMixture or a CLDPointSet")
        self.name = name
        self.exact = distribution
        self.distribution = distribution.mixture if isinstance(distribution, CLDGaussianMixture) else distribution
        #: the process (what the CLD samplers read); ``cld`` is the same object under its older name
        self.process_def = self.cld = distribution.cld
        self.shape = tuple(distribution.shape)
        self.sigma_min = self.cld.t_eps
        self.sigma_max = self.cld.T
        self.description = description

    @classmethod
    def from_mixture(cls, name: str, mixture: GaussianMixture, cld: CLD | None = None, description: str = ""):
        return cls(name, CLDGaussianMixture(mixture, cld), description)

    @classmethod
    def from_points(cls, name: str, points: torch.Tensor, cld: CLD | None = None, description: str = ""):
        return cls(name, CLDPointSet(points, cld), description)

    def __call__(self, u: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.exact.eps(u, t)

    def prior(self, n: int, generator: Generators = None, dtype=torch.float64, device=None) -> torch.Tensor:
        return self.cld.prior(n, self.shape, generator, dtype=dtype, device=device)

    def data_from_state(self, u: torch.Tensor) -> torch.Tensor:
        split_state(u)  # checks the layout
        return self.process_def.traits.data_from_state(u)

    def sample_data(self, n: int, generator: Generators = None) -> torch.Tensor:
        return self.exact.sample(n, generator=generator)

    def fingerprint(self) -> str:
        d = self.exact
        parts = [getattr(d, "points", None)]
        if isinstance(d, CLDGaussianMixture):
            parts = [d.mixture.weights, d.mixture.means, d.mixture.covs]
        return tensor_hash(*[p for p in parts if p is not None],
                           extra={"name": self.name, "type": type(d).__name__, "cld": self.cld.config()})
