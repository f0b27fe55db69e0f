"""What every CLD sampler shares: the model's process, the time grids, the grid checks, the drifts and
gDDIM's final denoising step (Zhang, Tao, Chen, arXiv 2206.05564; reference code qsh-zh/gDDIM ``cld_jax``).
"""

from __future__ import annotations

import numpy as np
import torch

from ...processes.cld import CLD, apply2, inv2
from .. import schedules
from ..registry import SolverOptionError

_PAPER = "Zhang, Tao, Chen, 'gDDIM: Generalized Denoising Diffusion Implicit Models' (arXiv 2206.05564)"
_CLD_PAPER = "Dockhorn, Vahdat, Kreis, 'Score-Based Generative Modeling with Critically-Damped Langevin Diffusion' (arXiv 2112.07068)"


def cld_time_quadratic(n: int, t_min: float = 1e-3, t_max: float = 1.0, append_zero: bool = True) -> torch.Tensor:
    """gDDIM's default grid (``ts_order=2``): uniform in sqrt(t) from ``t_max`` to ``t_min``.

    ``n`` is the number of steps, as for every schedule builder: with ``append_zero`` (the default) ``n``
    times from T to t_eps followed by 0, so that ``n`` = gDDIM's ``nfe`` with ``noise_removal=True``.
    Identical to ``schedules.karras(n, t_min, t_max, rho=2)``.
    """
    return schedules.karras(n, t_min, t_max, rho=2.0, append_zero=append_zero)


def cld_time_uniform(n: int, t_min: float = 1e-3, t_max: float = 1.0, append_zero: bool = True) -> torch.Tensor:
    """Uniform time grid (``ts_order=1``), same conventions as :func:`cld_time_quadratic`."""
    return schedules.karras(n, t_min, t_max, rho=1.0, append_zero=append_zero)


def _t(m: np.ndarray) -> np.ndarray:
    return np.swapaxes(m, -1, -2)


def _cld_model(ctx):
    """The model whose ``process_def`` is a CLD: the counting wrapper's model, or the wrapper itself."""
    for obj in (ctx.model, getattr(ctx.model, "denoiser", None)):
        if isinstance(getattr(obj, "process_def", None), CLD):
            return obj
    return None


def process_of(ctx) -> CLD:
    """The CLD process of the model being sampled (``model.process_def``), or a ValueError saying what to pass."""
    model = _cld_model(ctx)
    if model is not None:
        return model.process_def
    inner = getattr(ctx.model, "denoiser", ctx.model)
    raise SolverOptionError(
        f"solver {ctx.name!r} samples critically-damped Langevin diffusion only: pass a CLD model, i.e. an object "
        f"whose `process_def` is its sampler_bench.processes.cld.CLD and whose __call__(u, t) returns the R_t eps "
        f"(e.g. sampler_bench.processes.cld.CLDAnalyticModel or a CLD checkpoint); got {type(inner).__name__}"
    )


def _init(ctx, u: torch.Tensor) -> None:
    cld = process_of(ctx)
    data_shape = getattr(_cld_model(ctx), "shape", None)
    if u.ndim < 2 or u.shape[1] != 2 or (data_shape is not None and tuple(u.shape[2:]) != tuple(data_shape)):
        raise SolverOptionError(
            f"solver {ctx.name!r}: the CLD state must have shape [B, 2, *data_shape] (x = u[:, 0], v = u[:, 1]); "
            f"got {tuple(u.shape)}" + (f" for data of shape {tuple(data_shape)}" if data_shape is not None else "")
            + " (start from model.prior(n))"
        )
    if ctx.sigmas[0] > cld.T * (1 + 1e-12):
        raise SolverOptionError(
            f"solver {ctx.name!r}: CLD grids are times from T = {cld.T:g} down to t_eps (then optionally 0), but this "
            f"grid starts at {ctx.sigmas[0]:g}; build it with sampler_bench.solvers.cld.cld_time_quadratic or pass "
            f"sigma_min=model.sigma_min, sigma_max=model.sigma_max to plan()"
        )
    ctx.state["cld"] = cld


def _positive_times(ctx) -> tuple[float, ...]:
    return tuple(s for s in ctx.sigmas if s > 0)


def _drift_matrices(cld: CLD, t: float, score_weight: float) -> tuple[np.ndarray, np.ndarray]:
    """(F_t, w G G^T R_t^{-T}): drift = F u + w G G^T R^{-T} eps = F u - w G G^T score.

    w = 1/2 is the probability-flow ODE, w = (1 + lam^2)/2 the lam-family reverse SDE (gDDIM eq. 6).
    """
    return cld.F(t), score_weight * cld.GGT(t) @ _t(inv2(cld.R(t)))


def _drift(cld: CLD, u: torch.Tensor, t: float, eps: torch.Tensor, score_weight: float) -> torch.Tensor:
    f, g = _drift_matrices(cld, t, score_weight)
    return apply2(f, u) + apply2(g, eps)


def _denoise_to_zero(cld: CLD, u: torch.Tensor, t: float, eps: torch.Tensor) -> torch.Tensor:
    """gDDIM's ``noise_removal`` step from t_eps to 0: u - t (F u - G G^T score) (``get_denoising_step``)."""
    return u - t * _drift(cld, u, t, eps, 1.0)
