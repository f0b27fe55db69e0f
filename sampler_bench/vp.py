"""Variance-preserving (VP) time <-> EDM noise level conversions (Karras et al. 2022, Table 1, "VP").

The VP SDE of Song et al. (2021) with a linear beta(t) = beta_min + beta_d t has, in EDM's unscaled
parameterisation, sigma(t) = sqrt(exp(beta_d t^2 / 2 + beta_min t) - 1). Schedules, the Gaussian
process's VP variant, DEIS's time variable and VP network preconditioning all use this one map.
"""

from __future__ import annotations

import torch

#: EDM's VP schedule constants (Karras et al. 2022, ``generate.py``): beta_d, beta_min, eps_s.
VP_BETA_D = 19.9
VP_BETA_MIN = 0.1
VP_EPS_S = 1e-3


def vp_sigma(t, beta_d: float = VP_BETA_D, beta_min: float = VP_BETA_MIN):
    """EDM sigma of the VP SDE at time t: sqrt(exp(beta_d t^2/2 + beta_min t) - 1)."""
    t = torch.as_tensor(t, dtype=torch.float64)
    return torch.sqrt(torch.expm1(0.5 * beta_d * t**2 + beta_min * t))


def vp_time(sigma, beta_d: float = VP_BETA_D, beta_min: float = VP_BETA_MIN):
    """Inverse of :func:`vp_sigma`: t(sigma) = (sqrt(beta_min^2 + 2 beta_d log(1+sigma^2)) - beta_min)/beta_d."""
    sigma = torch.as_tensor(sigma, dtype=torch.float64)
    return (torch.sqrt(beta_min**2 + 2 * beta_d * torch.log1p(sigma**2)) - beta_min) / beta_d
