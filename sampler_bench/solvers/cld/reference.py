"""The CLD yardstick: adaptive DOP853 on CLD's probability-flow ODE, for endpoint errors."""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.integrate import solve_ivp

from ...processes.kind import CLD_PHASE_SPACE
from ..registry import Option, register
from .common import _PAPER, _denoise_to_zero, _drift, _init

@register(
    "cld_reference",
    order=8,
    paper="Dormand & Prince (1980) 8(5,3) pair via scipy.integrate.solve_ivp(method='DOP853'), on the CLD "
    "probability-flow ODE of " + _PAPER + " eq. 6 (lambda = 0)",
    description="Adaptive float64 DOP853 on the CLD probability-flow ODE du/dt = F u + 1/2 G G^T R_t^{-T} eps; "
    "the yardstick for endpoint errors of the deterministic CLD samplers. CLD models only.",
    options={
        "rtol": Option(1e-10, float, "relative tolerance", low=0.0, open_low=True, high=1.0),
        "atol": Option(1e-10, float, "absolute tolerance", low=0.0, open_low=True),
    },
    nfe=lambda steps, ends_at_zero, opts: 0,
    needs=(CLD_PHASE_SPACE,),
    init=_init,
    kind="run",
    adaptive=True,
)
def cld_reference(ctx, u):
    """Integrate from sigmas[0] to the last positive time (intermediate grid times are not visited).

    The ODE is integrated in s = log t (du/ds = t (F u + 1/2 G G^T R^{-T} eps)): near t_eps the solution
    varies on the scale t itself, so the step size in log t stays roughly constant down to t_eps. On a
    grid ending at 0 it then takes the same denoising step from the last positive time to 0 as every
    CLD sampler here (gDDIM's ``noise_removal``), so endpoint errors compare like with like.

    DOP853 as SciPy's ``solve_ivp(method='DOP853')`` (Hairer, Nørsett & Wanner, 'Solving Ordinary
    Differential Equations I' (1993) Sec. II, the reference SciPy's documentation gives) on the probability-flow ODE of gDDIM's lambda family (arXiv 2206.05564, eq. 6, lambda = 0) for CLD
    (Dockhorn et al., arXiv 2112.07068).
    """
    cld = ctx.state["cld"]
    t0, t_end = ctx.sigmas[0], ctx.sigmas[-1]
    denoise_at_end = t_end == 0.0
    if denoise_at_end:
        t_end = ctx.sigmas[-2]
    shape, dtype, device = u.shape, u.dtype, u.device

    def rhs(s, y):
        t = math.exp(s)
        state = torch.from_numpy(y).reshape(shape).to(device=device)
        eps = ctx.model(state.to(dtype), t).to(torch.float64)
        return (t * _drift(cld, state, t, eps, 0.5)).reshape(-1).cpu().numpy()

    y0 = u.detach().to(torch.float64).reshape(-1).cpu().numpy()
    sol = solve_ivp(rhs, (math.log(t0), math.log(t_end)), y0, method="DOP853",
                    rtol=ctx.options["rtol"], atol=ctx.options["atol"])
    if not sol.success:
        raise RuntimeError(f"CLD reference integrator failed: {sol.message}")
    out = torch.from_numpy(np.ascontiguousarray(sol.y[:, -1])).reshape(shape).to(device=device, dtype=torch.float64)
    if denoise_at_end:
        out = _denoise_to_zero(cld, out, t_end, ctx.model(out.to(dtype), t_end).to(torch.float64))
    return out.to(dtype)
