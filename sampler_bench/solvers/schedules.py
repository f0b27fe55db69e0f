"""Noise-level schedules (float64, strictly decreasing).

Convention for every builder: ``n`` is the number of solver *steps*. With ``append_zero=True``
(the default) the grid holds ``n`` positive levels from ``sigma_max`` to ``sigma_min`` followed by
0 (k-diffusion's ``get_sigmas_*(n)``), so the last step is the sampler's denoise to 0; with
``append_zero=False`` it holds ``n + 1`` positive levels and the sampler stops at ``sigma_min``.
Formulas: docs/solvers.md, "Schedules" (EDM ``generate.py``, k-diffusion ``sampling.py``, DPM-Solver
``get_time_steps``).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from ..options import closest
from .grids import _check, _finish, _ramp  # noqa: F401  (shared with field_schedules)
from ..vp import VP_BETA_D, VP_BETA_MIN, VP_EPS_S, vp_sigma, vp_time  # noqa: F401  re-exported (the map lives below solvers)


def karras(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0, append_zero: bool = True) -> torch.Tensor:
    """EDM's polynomial schedule (Karras et al. 2022, eq. 5), interpolating sigma^(1/rho)."""
    _check(n, sigma_min, sigma_max)
    if not isinstance(rho, (int, float)) or isinstance(rho, bool) or not (rho > 0) or not math.isfinite(rho):
        raise ValueError(f"rho must be a positive number, got {rho!r}")
    ramp = _ramp(n, append_zero)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return _finish((hi + ramp * (lo - hi)) ** rho, append_zero)


def log_snr_uniform(n: int, sigma_min: float, sigma_max: float, append_zero: bool = True) -> torch.Tensor:
    """Uniform in half log-SNR lambda = -log sigma, i.e. geometric sigmas (DPM-Solver 'logSNR').

    The step-size schedule uniform in lambda of Lu et al. (arXiv 2206.00927, §3.3); reference
    LuChengTHU/dpm-solver@52bc3fb ``dpm_solver_pytorch.py`` ``get_time_steps`` (skip_type='logSNR'),
    k-diffusion's ``get_sigmas_exponential``.
    """
    _check(n, sigma_min, sigma_max)
    ramp = _ramp(n, append_zero)
    return _finish(torch.exp(math.log(sigma_max) + ramp * (math.log(sigma_min) - math.log(sigma_max))), append_zero)


def polyexponential(n: int, sigma_min: float, sigma_max: float, rho: float = 1.0, append_zero: bool = True) -> torch.Tensor:
    """k-diffusion's polyexponential schedule: log sigma interpolated along ramp^rho.

    Code only (no paper): crowsonkb/k-diffusion@4601bf0 ``k_diffusion/sampling.py``
    ``get_sigmas_polyexponential``; rho = 1 is ``log_snr_uniform``.
    """
    _check(n, sigma_min, sigma_max)
    if not isinstance(rho, (int, float)) or isinstance(rho, bool) or not (rho > 0) or not math.isfinite(rho):
        raise ValueError(f"rho must be a positive number, got {rho!r}")
    # k-diffusion's ramp linspace(1, 0, count): a single positive level is sigma_max, as in karras.
    ramp = torch.linspace(1, 0, n if append_zero else n + 1, dtype=torch.float64) ** rho
    return _finish(torch.exp(ramp * (math.log(sigma_max) - math.log(sigma_min)) + math.log(sigma_min)), append_zero)


def _vp_power_t(n, sigma_min, sigma_max, power, beta_d, beta_min, append_zero):
    _check(n, sigma_min, sigma_max)
    # beta_min may be negative: schedules fitted through (sigma_min, sigma_max) at t = (eps_s, 1), as EDM's
    # 'vp' ablation and diff-sampler's 'time_uniform' fit them, give beta_min = -0.0048 for [0.002, 80].
    # For any beta_d > 0 the inverse t(sigma) is the positive root, t > -2 beta_min / beta_d, where the
    # exponent beta_d t^2/2 + beta_min t is positive and increasing, so sigma(t) is a valid increasing
    # map on every level a grid uses (beta(t) = beta_min + beta_d t < 0 only below them).
    for name, v in (("beta_d", beta_d), ("beta_min", beta_min)):
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        if not ok or (name == "beta_d" and v <= 0):
            raise ValueError(f"{name} must be a finite number{' > 0' if name == 'beta_d' else ''}, got {v!r}")
    t_hi, t_lo = float(vp_time(sigma_max, beta_d, beta_min)), float(vp_time(sigma_min, beta_d, beta_min))
    ramp = _ramp(n, append_zero)
    t = (t_hi ** (1 / power) + ramp * (t_lo ** (1 / power) - t_hi ** (1 / power))) ** power
    return _finish(vp_sigma(t, beta_d, beta_min), append_zero)


def vp_time_uniform(
    n: int, sigma_min: float, sigma_max: float, beta_d: float = VP_BETA_D, beta_min: float = VP_BETA_MIN,
    append_zero: bool = True,
) -> torch.Tensor:
    """Uniform in VP time t between t(sigma_max) and t(sigma_min) (DPM-Solver 'time_uniform').

    Lu et al. (arXiv 2206.00927) on the VP SDE's time (Song et al., arXiv 2011.13456); reference
    LuChengTHU/dpm-solver@52bc3fb ``dpm_solver_pytorch.py`` ``get_time_steps`` (skip_type='time_uniform').
    """
    return _vp_power_t(n, sigma_min, sigma_max, 1.0, beta_d, beta_min, append_zero)


def vp_time_quadratic(
    n: int, sigma_min: float, sigma_max: float, beta_d: float = VP_BETA_D, beta_min: float = VP_BETA_MIN,
    append_zero: bool = True,
) -> torch.Tensor:
    """Uniform in sqrt(t) (DPM-Solver 'time_quadratic', DEIS ``ts_order=2``; diff-sampler's 'time_uniform'
    with rho = 2 is this grid with beta_d, beta_min fitted through (sigma_min, sigma_max) at t = (1e-3, 1),
    see :func:`vp_fit`).

    Lu et al. (arXiv 2206.00927), "used in DDIM for low-resolution data"; reference
    LuChengTHU/dpm-solver@52bc3fb ``dpm_solver_pytorch.py`` ``get_time_steps`` (skip_type='time_quadratic').
    """
    return _vp_power_t(n, sigma_min, sigma_max, 2.0, beta_d, beta_min, append_zero)


def vp_fit(sigma_min: float, sigma_max: float, eps_s: float = VP_EPS_S) -> tuple[float, float]:
    """(beta_d, beta_min) of the VP schedule with sigma(eps_s) = sigma_min and sigma(1) = sigma_max.

    EDM ``generate.py`` refits its 'vp' discretisation this way, and diff-sampler's 'time_uniform'
    schedule (its DEIS rows) likewise: beta_d = 2 (log(1 + smin^2)/eps_s - log(1 + smax^2))/(eps_s - 1),
    beta_min = log(1 + smax^2) - beta_d/2; for [0.002, 80] that is (17.538, -0.0048).
    """
    beta_d = 2 * (math.log1p(sigma_min**2) / eps_s - math.log1p(sigma_max**2)) / (eps_s - 1)
    return beta_d, math.log1p(sigma_max**2) - 0.5 * beta_d


def edm_vp(n: int, sigma_min: float = None, sigma_max: float = None, eps_s: float = VP_EPS_S, append_zero: bool = True) -> torch.Tensor:
    """EDM ablation 'vp' discretisation: t uniform from 1 to eps_s, sigma = sigma_VP(t).

    As in EDM's ``ablation_sampler``, beta_d and beta_min are refitted so that
    sigma(eps_s) = sigma_min and sigma(1) = sigma_max (defaults: the VP range of the paper).
    Karras et al. (arXiv 2206.00364) Table 1, the VP column's time steps t_i = 1 + i/(N-1) (eps_s - 1).
    """
    sigma_min = float(vp_sigma(eps_s)) if sigma_min is None else sigma_min
    sigma_max = float(vp_sigma(1.0)) if sigma_max is None else sigma_max
    _check(n, sigma_min, sigma_max)
    if not (0 < eps_s < 1):
        raise ValueError(f"eps_s must lie in (0, 1), got {eps_s!r}")
    # Refit (EDM generate.py): beta_d = 2 (log(smin^2+1)/eps - log(smax^2+1)) / (eps - 1), beta_min = log(smax^2+1) - beta_d/2.
    beta_d, beta_min = vp_fit(sigma_min, sigma_max, eps_s)
    ramp = _ramp(n, append_zero)
    t = 1 + ramp * (eps_s - 1)
    return _finish(vp_sigma(t, beta_d, beta_min), append_zero)


def edm_ve(n: int, sigma_min: float = 0.02, sigma_max: float = 100.0, append_zero: bool = True) -> torch.Tensor:
    """EDM ablation 've' discretisation: sigma_i^2 = sigma_max^2 (sigma_min^2/sigma_max^2)^(i/(N-1)).

    Karras et al. (arXiv 2206.00364) Table 1, the VE column's time steps (EDM ``generate.py``
    ``ablation_sampler``)."""
    _check(n, sigma_min, sigma_max)
    ramp = _ramp(n, append_zero)
    return _finish(torch.sqrt(sigma_max**2 * (sigma_min**2 / sigma_max**2) ** ramp), append_zero)


def iddpm_levels(M: int = 1000, C1: float = 0.001, C2: float = 0.008) -> torch.Tensor:
    """The M+1 noise levels u_0 > ... > u_M = 0 of an iDDPM cosine model (EDM ``iDDPMPrecond``)."""
    def alpha_bar(j):
        return math.sin(0.5 * math.pi * j / M / (C2 + 1)) ** 2

    u = [0.0] * (M + 1)
    for j in range(M, 0, -1):
        u[j - 1] = math.sqrt((u[j] ** 2 + 1) / max(alpha_bar(j - 1) / alpha_bar(j), C1) - 1)
    return torch.tensor(u, dtype=torch.float64)


def edm_iddpm(
    n: int, sigma_min: float = 0.002, sigma_max: float = 80.0, M: int = 1000, C1: float = 0.001, C2: float = 0.008,
    append_zero: bool = True,
) -> torch.Tensor:
    """EDM ablation 'iddpm' discretisation: n evenly spaced picks among the iDDPM levels in range.

    Karras et al. (arXiv 2206.00364) Table 1, the iDDPM column: u_j of the cosine model (Nichol & Dhariwal,
    arXiv 2102.09672) picked at floor(j0 + (M - 1 - j0) i/(N - 1) + 1/2) (EDM rounds half to even)."""
    _check(n, sigma_min, sigma_max)
    u = iddpm_levels(M, C1, C2)
    u = u[(u >= sigma_min) & (u <= sigma_max)]
    count = n if append_zero else n + 1
    if count > u.numel():
        raise ValueError(f"only {u.numel()} iDDPM levels lie in [{sigma_min}, {sigma_max}]; ask for fewer steps")
    if count == 1:
        idx = torch.zeros(1, dtype=torch.long)
    else:
        # torch.round rounds halves to even, as EDM's ``.round()`` does; floor(x + 0.5) would pick the
        # next level whenever (len - 1)/(N - 1) * i ends in .5 (e.g. 991 levels and N = 5).
        idx = torch.round((u.numel() - 1) / (count - 1) * torch.arange(count, dtype=torch.float64)).long()
    return _finish(u[idx], append_zero)


def from_list(values: Sequence[float]) -> torch.Tensor:
    """A user-given grid, validated: positive, strictly decreasing, only the last value may be 0."""
    t = torch.as_tensor(list(values), dtype=torch.float64)
    if t.ndim != 1 or t.numel() < 2:
        raise ValueError("a user-given schedule needs at least 2 noise levels")
    if not torch.isfinite(t).all():
        raise ValueError("a user-given schedule contains NaN or Inf")
    if (t[:-1] <= 0).any() or t[-1] < 0:
        raise ValueError("a user-given schedule must be positive (only the last value may be 0)")
    if not (t[1:] < t[:-1]).all():
        raise ValueError("a user-given schedule must be strictly decreasing")
    return t


#: Builders by name, for specs and the command line. Each takes (n, sigma_min, sigma_max, **params).
BUILDERS = {
    "karras": karras,
    "log_snr_uniform": log_snr_uniform,
    "polyexponential": polyexponential,
    "vp_time_uniform": vp_time_uniform,
    "vp_time_quadratic": vp_time_quadratic,
    "edm_vp": edm_vp,
    "edm_ve": edm_ve,
    "edm_iddpm": edm_iddpm,
}


def available() -> list[str]:
    """Names of the schedule builders (plus 'list' for a user-given grid)."""
    return sorted(BUILDERS) + ["list"]


def build(name: str, n: int, sigma_min: float, sigma_max: float, append_zero: bool = True, **params) -> torch.Tensor:
    """Build schedule ``name`` with ``n`` steps; ValueError naming the closest schedule otherwise."""
    if name not in BUILDERS:
        raise ValueError(f"unknown schedule {name!r}{closest(name, list(BUILDERS))}; available: {', '.join(available())}")
    try:
        return BUILDERS[name](n, sigma_min, sigma_max, append_zero=append_zero, **params)
    except TypeError as e:
        raise ValueError(f"schedule {name!r}: {e}") from None


# The schedules of issue #15 (ComfyUI's, diffusers' spacings, Align Your Steps) live in their own module.
from .field_schedules import (  # noqa: E402
    ays, beta, kl_optimal, laplace, leading, linear_quadratic, linspace, sgm_uniform, simple, trailing,
    vp_training_sigmas,
)
from .field_schedules import BUILDERS as _FIELD_BUILDERS  # noqa: E402

BUILDERS.update(_FIELD_BUILDERS)
