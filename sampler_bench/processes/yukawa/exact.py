"""Exact Yukawa denoisers and rates: finite point sets and Gaussian mixtures (docs/processes.md, "Yukawa").

Both return the pair the Yukawa samplers need from one evaluation: D(x, z) = E[y | x, z] and the
birth/death rate kappa(x, z) = (m^2 / z) E[W | x, z].

* :class:`YukawaPointSet`: weights of the points are the NIG kernel itself,
  log pi_i - ((N+1)/2) log r_i + log K_{(N+1)/2}(m r_i), r_i^2 = |x - y_i|^2 + z^2, and the rate is the
  posterior mean of h_i = (m/z) r_i K_{(N-1)/2}(m r_i) / K_{(N+1)/2}(m r_i) (Bessel functions by upward
  recurrence, :mod:`.bessel`).
* :class:`YukawaMixture`: a Gaussian mixture sum_k pi_k N(mu_k, S_k) under the scale mixture
  x = y + sqrt(W) eps is a mixture over (k, W) of Gaussians N(mu_k, S_k + W I); the posterior over (k, W)
  is computed by 1-D quadrature in log W (trapezoid on a per-sample window that holds the posterior,
  located on a coarse grid first), then D = sum w [mu_k + S_k (S_k + W I)^{-1} (x - mu_k)] and
  kappa = (m^2/z) sum w W. No Bessel functions: the two routes check each other (tests/test_yukawa.py).
"""

from __future__ import annotations

import math

import torch

from ...rng import Generators
from ..analytic import GaussianMixture, _sigma_column
from .bessel import log_bessel_k


def check_mass(m) -> float:
    """The screening mass m as a float, or one ValueError saying what to pass."""
    if isinstance(m, bool) or not isinstance(m, (int, float)) or not math.isfinite(m) or m <= 0:
        raise ValueError(f"the Yukawa process needs a screening mass m > 0 (a finite number), got m={m!r}; "
                         "m -> 0 is PFGM: use process 'pfgmpp' with D = 1 for it")
    return float(m)


#: coarse and fine quadrature nodes in log W (per sample and component)
COARSE_NODES = 384
FINE_NODES = 256
#: the fine window holds the coarse nodes within this many nats of the peak (e^-45 ~ 3e-20 of it)
WINDOW_NATS = 45.0


def log_inverse_gaussian(W: torch.Tensor, z: torch.Tensor, m: float) -> torch.Tensor:
    """log density of InverseGaussian(mean z/m, shape z^2) at W: log z - 1/2 log(2 pi W^3) + m z - m^2 W/2 - z^2/(2W)."""
    return torch.log(z) - 0.5 * math.log(2 * math.pi) - 1.5 * torch.log(W) + m * z - 0.5 * m * m * W - 0.5 * z * z / W


class YukawaPointSet:
    """Exact D(x, z) and kappa(x, z) of the empirical law of ``points`` under the Yukawa kernel of mass m."""

    def __init__(self, points: torch.Tensor, m: float, weights: torch.Tensor | None = None):
        self.m = check_mass(m)
        pts = torch.as_tensor(points, dtype=torch.float64)
        self.shape = tuple(pts.shape[1:])
        self.points = pts.reshape(pts.shape[0], -1)
        self.N = self.points.shape[1]
        n = self.points.shape[0]
        w = torch.full((n,), 1.0 / n, dtype=torch.float64) if weights is None else torch.as_tensor(weights, dtype=torch.float64)
        self.log_weights = torch.log(w / w.sum())
        self.sq_norms = (self.points**2).sum(1)

    def _posterior(self, flat: torch.Tensor, z_col: torch.Tensor):
        pts = self.points.to(flat.device)
        d2 = ((flat**2).sum(1, keepdim=True) - 2 * flat @ pts.T + self.sq_norms.to(flat.device)).clamp_min(0.0)
        r = torch.sqrt(d2 + z_col**2)
        log_k, ratio = log_bessel_k(self.N + 1, self.m * r)
        logits = self.log_weights.to(flat.device) - 0.5 * (self.N + 1) * torch.log(r) + log_k
        return torch.softmax(logits, dim=1), r, ratio

    def denoise_with_rate(self, x: torch.Tensor, z) -> tuple[torch.Tensor, torch.Tensor]:
        """(E[y | x, z] shaped like x, kappa(x, z) of shape [B])."""
        flat = x.reshape(x.shape[0], -1).to(torch.float64)
        z_col = _sigma_column(z, flat)
        w, r, ratio = self._posterior(flat, z_col)
        D = (w @ self.points.to(flat.device)).to(x.dtype).reshape(x.shape)
        kappa = (self.m / z_col[:, 0]) * (w * r * ratio).sum(1)
        return D, kappa

    def __call__(self, x: torch.Tensor, z) -> torch.Tensor:
        return self.denoise_with_rate(x, z)[0]

    def sample(self, n: int, generator: Generators = None) -> torch.Tensor:
        from ...rng import randn_like

        u = torch.special.ndtr(randn_like(torch.empty((n, 1), dtype=torch.float64), generator))[:, 0]
        cdf = torch.cumsum(self.log_weights.exp(), 0)
        idx = torch.searchsorted(cdf, u.clamp(max=float(cdf[-1]) * (1 - 1e-16))).clamp(max=self.points.shape[0] - 1)
        return self.points[idx].reshape(n, *self.shape)


class YukawaMixture:
    """Exact D(x, z) and kappa(x, z) of a Gaussian mixture under the Yukawa kernel (1-D quadrature over W)."""

    def __init__(self, mixture: GaussianMixture, m: float):
        if not isinstance(mixture, GaussianMixture):
            raise ValueError("YukawaMixture takes a sampler_bench.processes.analytic.GaussianMixture")
        self.mixture = mixture
        self.m = check_mass(m)
        self.dim = mixture.dim

    def _window(self, z: torch.Tensor, nodes: int) -> torch.Tensor:
        """A coarse grid in log W [B, nodes] that holds the prior IG(z/m, z^2) and so every posterior."""
        m = self.m
        mean = z / m
        # below: exp(-z^2/(2W)) and (for m z large) the Gaussian-like lower tail are dead; above: exp(-m^2 W/2)
        lo = torch.minimum(z * z, mean) * math.exp(-9.0)
        hi = mean + 14.0 * torch.sqrt(z / m**3) + 400.0 / m**2
        t = torch.linspace(0.0, 1.0, nodes, dtype=torch.float64, device=z.device)
        return torch.log(lo)[:, None] + (torch.log(hi) - torch.log(lo))[:, None] * t[None, :]

    def _log_joint(self, coords: torch.Tensor, lam: torch.Tensor, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """log pi_k + log IG(W) + log W (Jacobian of log W) + log N(x; mu_k, S_k + W I), at W = e^t.

        ``coords`` [B, K, d]: x - mu_k in component k's eigenbasis; ``lam`` [K, d]; ``t`` [B, K, T].
        """
        W = torch.exp(t)  # [B, K, T]
        var = lam[None, :, None, :] + W[..., None]  # [B, K, T, d]
        loglik = -0.5 * (torch.log(2 * math.pi * var) + coords[:, :, None, :] ** 2 / var).sum(-1)
        log_prior = log_inverse_gaussian(W, z[:, None, None], self.m) + t
        return self.mixture.log_weights.to(t.device)[None, :, None] + log_prior + loglik

    def posterior(self, x: torch.Tensor, z) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(normalised weights [B, K, T], W nodes [B, K, T], coords [B, K, d]) of the posterior over (k, W)."""
        gm = self.mixture
        flat = x.reshape(x.shape[0], -1).to(torch.float64)
        zz = _sigma_column(z, flat)[:, 0]
        U = gm.eigvecs.to(flat.device)  # [K, d, d]
        lam = gm.eigvals.to(flat.device)  # [K, d]
        coords = torch.einsum("bkd,kde->bke", flat[:, None, :] - gm.means.to(flat.device)[None], U)
        B, K = flat.shape[0], gm.n_components
        coarse = self._window(zz, COARSE_NODES)[:, None, :].expand(B, K, COARSE_NODES)
        lj = self._log_joint(coords, lam, zz, coarse)
        # the fine window: the coarse nodes within WINDOW_NATS of each (sample, component)'s peak, one node wider
        keep = lj >= lj.amax(-1, keepdim=True) - WINDOW_NATS
        idx = torch.arange(COARSE_NODES, device=flat.device)
        first = torch.where(keep, idx, COARSE_NODES).amin(-1).sub(1).clamp_min(0)
        last = torch.where(keep, idx, -1).amax(-1).add(1).clamp_max(COARSE_NODES - 1)
        t_lo, t_hi = coarse.gather(-1, first[..., None]), coarse.gather(-1, last[..., None])
        u = torch.linspace(0.0, 1.0, FINE_NODES, dtype=torch.float64, device=flat.device)
        fine = t_lo + (t_hi - t_lo) * u
        # trapezoid weights: h/2 at the two ends, h inside (h differs per sample and component)
        trap = torch.full((FINE_NODES,), 1.0, dtype=torch.float64, device=flat.device)
        trap[0] = trap[-1] = 0.5
        logw = self._log_joint(coords, lam, zz, fine) + torch.log(trap) + torch.log((t_hi - t_lo) / (FINE_NODES - 1))
        w = torch.softmax(logw.reshape(B, -1), dim=1).reshape(B, K, FINE_NODES)
        return w, torch.exp(fine), coords

    def denoise_with_rate(self, x: torch.Tensor, z) -> tuple[torch.Tensor, torch.Tensor]:
        """(E[y | x, z] shaped like x, kappa(x, z) = (m^2/z) E[W | x, z] of shape [B])."""
        gm = self.mixture
        w, W, coords = self.posterior(x, z)
        lam = gm.eigvals.to(coords.device)
        # E[y | x, k, W] = mu_k + U_k diag(lam/(lam + W)) U_k^T (x - mu_k)
        shrink = (w[..., None] * lam[None, :, None, :] / (lam[None, :, None, :] + W[..., None])).sum(2)  # [B, K, d]
        mass = w.sum(2)  # [B, K]
        back = torch.einsum("bke,kde->bd", shrink * coords, gm.eigvecs.to(coords.device))
        D = mass @ gm.means.to(coords.device) + back
        zz = _sigma_column(z, coords[:, 0])[:, 0]
        kappa = self.m**2 / zz * (w * W).sum((1, 2))
        return D.to(x.dtype).reshape(x.shape), kappa

    def __call__(self, x: torch.Tensor, z) -> torch.Tensor:
        return self.denoise_with_rate(x, z)[0]

    def sample(self, n: int, generator: Generators = None) -> torch.Tensor:
        return self.mixture.sample(n, generator=generator)
