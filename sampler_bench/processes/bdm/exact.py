"""Exact BDM models: the eps and posterior mean of a Gaussian mixture of images under the blurring
kernel, as test oracles and as an analytic sweep model (docs/processes.md, "Blurring diffusion").

In DCT space the kernel is u_t = diag(a_t) u_0 + sigma_t eps, a linear-Gaussian kernel, so component k
of a mixture sum_k pi_k N(mu_k, S_k) (pixel space) stays Gaussian with mean a mu~_k and covariance
C_k = diag(a) S~_k diag(a) + sigma^2 I (mu~ = Q mu, S~ = Q S Q^T, Q the flattened 2-D DCT). Then
score~ = -sum_k w_k C_k^{-1} (u - a mu~_k), eps = -sigma_t score (R_t = sigma_t I) and
E[x_0 | z] = sum_k w_k (mu_k + Q^T S~_k diag(a) C_k^{-1} (u - a mu~_k)) (Bayes for Gaussians).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ...hashing import tensor_hash
from ...rng import Generators
from ..analytic import GaussianMixture
from .dct import dct_matrix
from .process import BDM, times


def flat_dct_matrix(shape: tuple[int, ...]) -> torch.Tensor:
    """Q with ``Q @ z.flatten()`` = the flattened 2-D DCT of an image ``z`` of ``shape`` [C, H, W] (float64)."""
    c, h, w = shape
    return torch.as_tensor(np.kron(np.eye(c), np.kron(dct_matrix(h), dct_matrix(w))))


class BDMGaussianMixture:
    """Data sum_k pi_k N(mu_k, S_k) on images of ``shape`` [C, H, W] under the BDM kernel: exact eps,
    score, posterior mean and log-density. Dense d x d algebra per component: meant for small images
    (d = C H W up to a few hundred)."""

    def __init__(self, mixture: GaussianMixture, shape, bdm: BDM | None = None):
        if not isinstance(mixture, GaussianMixture):
            raise ValueError("BDMGaussianMixture takes a sampler_bench.processes.analytic.GaussianMixture")
        shape = tuple(int(s) for s in shape)
        if len(shape) != 3 or math.prod(shape) != mixture.dim:
            raise ValueError(f"BDM images have shape [C, H, W] with C*H*W = the mixture's dimension {mixture.dim}; "
                             f"got shape {shape}")
        self.mixture = mixture
        self.shape = shape
        self.bdm = bdm or BDM()
        self.q = flat_dct_matrix(shape)
        self.means_f = mixture.means @ self.q.T  # [K, d]: mu~_k
        self.covs_f = self.q @ mixture.covs @ self.q.T  # [K, d, d]: S~_k

    def _terms(self, z: torch.Tensor, t):
        b = z.shape[0]
        tt = times(t, b)
        a = torch.as_tensor(self.bdm.a(tt, self.shape[1:]), device=z.device)  # [B, H, W]
        a = a[:, None].expand(b, *self.shape).reshape(b, -1)  # [B, d]
        sig2 = torch.as_tensor(self.bdm.sigma(tt), device=z.device) ** 2
        u = z.reshape(b, -1).to(torch.float64) @ self.q.T.to(z.device)
        means, covs = self.means_f.to(z.device), self.covs_f.to(z.device)
        resid = u[:, None] - a[:, None] * means[None]  # [B, K, d]
        cov = a[:, None, :, None] * covs[None] * a[:, None, None, :]
        cov = cov + sig2[:, None, None, None] * torch.eye(u.shape[1], dtype=torch.float64, device=z.device)
        chol = torch.linalg.cholesky(cov)
        sol = torch.cholesky_solve(resid[..., None], chol)[..., 0]  # C_k^{-1} (u - a mu~_k)
        logdet = 2.0 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
        logits = self.mixture.log_weights.to(z.device)[None] - 0.5 * logdet - 0.5 * (resid * sol).sum(-1)
        return logits, sol, a, tt

    def log_prob(self, z: torch.Tensor, t) -> torch.Tensor:
        """log p_t(z), [B] (the DCT is orthogonal: no Jacobian)."""
        logits, *_ = self._terms(z, t)
        return torch.logsumexp(logits, 1) - 0.5 * self.mixture.dim * math.log(2 * math.pi)

    def score(self, z: torch.Tensor, t) -> torch.Tensor:
        """grad_z log p_t(z), pixel space, shape of ``z`` (float64)."""
        logits, sol, _, _ = self._terms(z, t)
        w = torch.softmax(logits, 1)[..., None]
        s_f = -(w * sol).sum(1)
        return (s_f @ self.q.to(z.device)).reshape(z.shape)

    def eps(self, z: torch.Tensor, t) -> torch.Tensor:
        """The exact eps = -sigma_t score (what a BDM network is trained to output), dtype of ``z``."""
        sig = torch.as_tensor(self.bdm.sigma(times(t, z.shape[0])), device=z.device)
        return (-sig.reshape(-1, 1, 1, 1) * self.score(z, t)).to(z.dtype)

    def posterior_mean(self, z: torch.Tensor, t) -> torch.Tensor:
        """E[x_0 | z_t], pixel space, shape of ``z`` (float64)."""
        logits, sol, a, _ = self._terms(z, t)
        w = torch.softmax(logits, 1)
        covs = self.covs_f.to(z.device)
        post_f = self.means_f.to(z.device)[None] + torch.einsum("kde,bke->bkd", covs, a[:, None] * sol)
        return ((w[..., None] * post_f).sum(1) @ self.q.to(z.device)).reshape(z.shape)

    def sample(self, n: int, generator: Generators = None) -> torch.Tensor:
        return self.mixture.sample(n, generator=generator).reshape(n, *self.shape)


class BDMAnalyticModel:
    """A BDM model whose eps is exact: a Gaussian mixture of images under the blurring kernel.

    Satisfies the sweep's model contract for ``process == 'bdm'``: ``model(z, t)`` returns eps (shape of
    ``z``), ``prior(n)`` is N(0, sigma_{t_start}^2 I), ``sigma_min``/``sigma_max`` are t_eps/t_start, and
    ``distribution`` is the data's :class:`GaussianMixture` (flattened images), so the gmm_* metrics apply.
    """

    process = "bdm"

    def __init__(self, name: str, exact: BDMGaussianMixture, description: str = ""):
        if not isinstance(exact, BDMGaussianMixture):
            raise ValueError("BDMAnalyticModel takes a BDMGaussianMixture")
        self.name = name
        self.exact = exact
        self.distribution = exact.mixture
        self.process_def = self.bdm = exact.bdm
        self.shape = exact.shape
        self.sigma_min = self.bdm.sigma_min
        self.sigma_max = self.bdm.sigma_max
        self.description = description

    @classmethod
    def from_mixture(cls, name: str, mixture: GaussianMixture, shape, bdm: BDM | None = None, description: str = ""):
        return cls(name, BDMGaussianMixture(mixture, shape, bdm), description)

    def __call__(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.exact.eps(z, t)

    def prior(self, n: int, generator: Generators = None, dtype=torch.float64, device=None) -> torch.Tensor:
        return self.bdm.prior(n, self.shape, generator, dtype=dtype, device=device)

    def data_from_state(self, z: torch.Tensor) -> torch.Tensor:
        return z

    def sample_data(self, n: int, generator: Generators = None) -> torch.Tensor:
        return self.exact.sample(n, generator=generator)

    def fingerprint(self) -> str:
        gm = self.exact.mixture
        return tensor_hash(gm.weights, gm.means, gm.covs,
                           extra={"name": self.name, "shape": list(self.shape), "bdm": self.bdm.config()})
