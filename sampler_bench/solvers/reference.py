"""High-accuracy reference integrator for measuring every other solver's error.

Integrates the probability-flow ODE in u = log(sigma), where it reads dx/du = x - D(x, sigma)
(smooth and non-stiff down to small sigma), with SciPy's adaptive DOP853 (Dormand & Prince,
8th order; Hairer, Norsett & Wanner, 'Solving ODEs I') in float64 at tight tolerances.
Measure orders against it ending at sigma_min > 0 (docs/solvers.md, "Reference integrators").
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.integrate import solve_ivp

from .registry import Option, register


@register(
    "reference",
    order=8,
    paper="Dormand & Prince (1980) 8(5,3) pair via scipy.integrate.solve_ivp(method='DOP853')",
    description="Adaptive float64 DOP853 on dx/dlog(sigma) = x - D; the yardstick for endpoint errors.",
    options={
        "rtol": Option(1e-10, float, "relative tolerance", low=0.0, open_low=True, high=1.0),
        "atol": Option(1e-10, float, "absolute tolerance", low=0.0, open_low=True),
        "zero_floor": Option(1e-5, float, "on a grid ending at 0: integrate to this sigma, then denoise once",
                             low=0.0, open_low=True),
    },
    nfe=lambda steps, ends_at_zero, opts: 0,
    kind="run",
    adaptive=True,
)
def reference(ctx, x):
    """Integrate from sigmas[0] to sigmas[-1] (intermediate grid points are not visited).

    SciPy's ``solve_ivp(method='DOP853')``, the explicit Runge–Kutta method of order 8 with embedded
    5th/3rd-order error estimates of Hairer, Nørsett & Wanner, 'Solving Ordinary Differential Equations I'
    (1993) Sec. II (the reference SciPy's documentation gives for it), on the probability-flow ODE
    dx/dsigma = (x - D)/sigma (Karras et al., arXiv 2206.00364, eq. 1 with sigma(t) = t) in u = log sigma.
    """
    rtol, atol = ctx.options["rtol"], ctx.options["atol"]
    s0, s_end = ctx.sigmas[0], ctx.sigmas[-1]
    denoise_at_end = s_end == 0.0
    if denoise_at_end:
        s_end = min(ctx.options["zero_floor"], 0.5 * ctx.sigmas[-2])
    shape, dtype, device = x.shape, x.dtype, x.device

    def rhs(u, y):
        state = torch.from_numpy(y).reshape(shape).to(device=device, dtype=torch.float64)
        d = ctx.model(state.to(dtype), math.exp(u)).to(torch.float64)
        return (state - d).reshape(-1).cpu().numpy()

    y0 = x.detach().to(torch.float64).reshape(-1).cpu().numpy()
    sol = solve_ivp(rhs, (math.log(s0), math.log(s_end)), y0, method="DOP853", rtol=rtol, atol=atol)
    if not sol.success:
        raise RuntimeError(f"reference integrator failed: {sol.message}")
    out = torch.from_numpy(np.ascontiguousarray(sol.y[:, -1])).reshape(shape).to(device=device, dtype=dtype)
    if denoise_at_end:
        out = ctx.model(out, s_end)
    return out
