"""The BDM yardstick: adaptive DOP853 on blurring diffusion's probability-flow ODE, for endpoint errors."""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.integrate import solve_ivp

from ...processes.bdm import dct2, idct2
from ...processes.kind import BDM_FREQUENCY_SPACE
from ..registry import Option, register
from .common import _BDM_PAPER, denoise_to_zero, init


@register(
    "bdm_reference",
    order=8,
    paper="Dormand & Prince (1980) 8(5,3) pair via scipy.integrate.solve_ivp(method='DOP853'), on the BDM "
    "probability-flow ODE of " + _BDM_PAPER,
    description="Adaptive float64 DOP853 on the BDM probability-flow ODE per DCT coefficient (in the exponential "
    "integrator's variables u/a_t against log(sigma/alpha), ending with the same denoising step); the yardstick for "
    "endpoint errors of the deterministic BDM samplers. BDM models only.",
    options={
        "rtol": Option(1e-10, float, "relative tolerance", low=0.0, open_low=True, high=1.0),
        "atol": Option(1e-10, float, "absolute tolerance", low=0.0, open_low=True),
    },
    nfe=lambda steps, ends_at_zero, opts: 0,
    needs=(BDM_FREQUENCY_SPACE,),
    init=init,
    kind="run",
    adaptive=True,
)
def bdm_reference(ctx, z):
    """Integrate from sigmas[0] to the last positive time, then (grid ending at 0) take the same denoising
    step as every BDM sampler here, so endpoint errors compare like with like.

    The ODE is integrated in the variables of the exponential integrator, which remove its stiff linear
    part: per DCT coefficient v = u / a_t (so dv/dt = rho'(t) eps), against s = log(sigma_t/alpha_t) =
    log tan(phi_t) as the independent variable (near t_start, d/dt log tan(phi) ~ 125 for rho_max = 80:
    in t itself DOP853 would need thousands of steps there). It is still the same ODE, solved to tolerance.

    DOP853 as SciPy's ``solve_ivp(method='DOP853')`` (Hairer, Nørsett & Wanner, 'Solving Ordinary
    Differential Equations I' (1993) Sec. II, the reference SciPy's documentation gives) on the probability-flow ODE (Song et al., arXiv 2011.13456, eq. 13) of blurring diffusion (Hoogeboom &
    Salimans, arXiv 2209.05557).
    """
    bdm, hw = ctx.state["bdm"], ctx.state["hw"]
    t0, t_end = ctx.sigmas[0], ctx.sigmas[-1]
    denoise_at_end = t_end == 0.0
    if denoise_at_end:
        t_end = ctx.sigmas[-2]
    shape, dtype, device = z.shape, z.dtype, z.device

    def time_of(s: float) -> float:
        return float(bdm.time_of_log_noise_ratio(s))

    def s_of(t: float) -> float:
        return float(bdm.log_noise_ratio(t))

    def rhs(s, y):
        t = time_of(s)
        a = torch.as_tensor(bdm.a(t, hw), dtype=torch.float64, device=device)
        v = torch.from_numpy(y).reshape(shape).to(device=device)
        eps = ctx.model(idct2(a * v).to(dtype), t).to(torch.float64)
        k = torch.as_tensor(bdm.rho_dot(t, hw) * bdm.dt_dlog_noise_ratio(t), dtype=torch.float64, device=device)
        return (k * dct2(eps)).reshape(-1).cpu().numpy()

    a0 = torch.as_tensor(bdm.a(t0, hw), dtype=torch.float64, device=device)
    y0 = (dct2(z.detach().to(torch.float64)) / a0).reshape(-1).cpu().numpy()
    sol = solve_ivp(rhs, (s_of(t0), s_of(t_end)), y0, method="DOP853",
                    rtol=ctx.options["rtol"], atol=ctx.options["atol"])
    if not sol.success:
        raise RuntimeError(f"BDM reference integrator failed: {sol.message}")
    v = torch.from_numpy(np.ascontiguousarray(sol.y[:, -1])).reshape(shape).to(device=device, dtype=torch.float64)
    out = idct2(torch.as_tensor(bdm.a(t_end, hw), dtype=torch.float64, device=device) * v)
    if denoise_at_end:
        out = denoise_to_zero(bdm, out, t_end, ctx.model(out.to(dtype), t_end).to(torch.float64))
    return out.to(dtype)
