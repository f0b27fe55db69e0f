"""What every BDM sampler shares: the model's process, the grid checks, the per-frequency drift and the
final denoising step (Hoogeboom & Salimans, arXiv 2209.05557; gDDIM, arXiv 2206.05564)."""

from __future__ import annotations

import numpy as np
import torch

from ...processes.bdm import BDM
from ..registry import SolverOptionError

_PAPER = "Zhang, Tao, Chen, 'gDDIM: Generalized Denoising Diffusion Implicit Models' (arXiv 2206.05564)"
_BDM_PAPER = "Hoogeboom & Salimans, 'Blurring Diffusion Models' (arXiv 2209.05557)"


def _bdm_model(ctx):
    for obj in (ctx.model, getattr(ctx.model, "denoiser", None)):
        if isinstance(getattr(obj, "process_def", None), BDM):
            return obj
    return None


def process_of(ctx) -> BDM:
    """The BDM process of the model being sampled (``model.process_def``), or a ValueError saying what to pass."""
    model = _bdm_model(ctx)
    if model is not None:
        return model.process_def
    inner = getattr(ctx.model, "denoiser", ctx.model)
    raise SolverOptionError(
        f"solver {ctx.name!r} samples blurring diffusion only: pass a BDM model, i.e. an object whose `process_def` "
        f"is its sampler_bench.processes.bdm.BDM and whose __call__(z, t) returns eps (e.g. "
        f"sampler_bench.processes.bdm.BDMAnalyticModel or a BDM checkpoint); got {type(inner).__name__}")


def init(ctx, z: torch.Tensor) -> None:
    bdm = process_of(ctx)
    data_shape = getattr(_bdm_model(ctx), "shape", None)
    if z.ndim != 4 or (data_shape is not None and tuple(z.shape[1:]) != tuple(data_shape)):
        raise SolverOptionError(
            f"solver {ctx.name!r}: the BDM state is an image batch [B, C, H, W]; got {tuple(z.shape)}"
            + (f" for data of shape {tuple(data_shape)}" if data_shape is not None else "") + " (start from model.prior(n))")
    if ctx.sigmas[0] > bdm.T * (1 + 1e-12):
        raise SolverOptionError(
            f"solver {ctx.name!r}: BDM grids are times from at most T = {bdm.T:g} down to t_eps (then optionally 0), "
            f"but this grid starts at {ctx.sigmas[0]:g}; pass sigma_min=model.sigma_min, sigma_max=model.sigma_max "
            "to plan()")
    ctx.state["bdm"] = bdm
    ctx.state["hw"] = BDM.hw(z)


def positive_times(ctx) -> tuple[float, ...]:
    return tuple(s for s in ctx.sigmas if s > 0)


def drift(bdm: BDM, hw, u: torch.Tensor, t: float, eps_f: torch.Tensor, score_weight: float) -> torch.Tensor:
    """f u + w g^2 eps / sigma in DCT space = f u - w g^2 score (w = 1/2: probability-flow ODE; w = 1: reverse SDE)."""
    f = torch.as_tensor(bdm.f(t, hw), dtype=u.dtype, device=u.device)
    k = torch.as_tensor(score_weight * bdm.g2(t, hw) / float(bdm.sigma(t)), dtype=u.dtype, device=u.device)
    return f * u + k * eps_f


def denoise_to_zero(bdm: BDM, z: torch.Tensor, t: float, eps: torch.Tensor) -> torch.Tensor:
    """The final step from the last positive time to 0: x_0 = V diag(1/a_t) V^T (z - sigma_t eps) (gDDIM ``xeps2x0``)."""
    return bdm.x0_from_eps(z, t, eps)


def as_tensor(coef: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(coef, dtype=like.dtype, device=like.device)
