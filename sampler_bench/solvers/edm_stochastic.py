"""EDM's stochastic sampler: Heun with "churn" (Karras et al., 'Elucidating the Design Space of
Diffusion-Based Generative Models', arXiv 2206.00364, Algorithm 2; docs/solvers.md).

Each step first raises the noise level from sigma_i to sigma_hat = sigma_i (1 + gamma_i) by adding
fresh noise of std sqrt(sigma_hat^2 - sigma_i^2) S_noise, then takes a Heun step from sigma_hat to
sigma_{i+1} (a single Euler step onto sigma = 0). gamma_i = min(S_churn / N, sqrt(2) - 1) for
S_min <= sigma_i <= S_max and 0 elsewhere, N the number of steps (EDM ``edm_sampler``, k-diffusion
``sample_heun``). The NFE law is Heun's: 2N - 1 on a grid ending at 0, 2N otherwise.
"""

from __future__ import annotations

import math

from .noise import stochastic_options
from .registry import Option, SolverOptionError, register


def _check(ctx, x) -> None:
    lo, hi = ctx.options["S_min"], ctx.options["S_max"]
    if hi is not None and hi < lo:
        raise SolverOptionError(
            f"solver {ctx.name!r}: S_max={hi!r} is below S_min={lo!r}; churn applies to S_min <= sigma <= S_max"
        )


@register(
    "edm_stochastic",
    # Without churn this is heun (order 2). With churn no weak order beyond 1 is established
    # (docs/solvers.md); on a Gaussian it measures 2, because gamma = S_churn/N vanishes as N grows.
    order=lambda o: 2 if o["S_churn"] == 0 else 1,
    nfe_per_step=2,
    stochastic=True,
    paper="Karras et al., 'Elucidating the Design Space of Diffusion-Based Generative Models' (arXiv 2206.00364) Alg. 2",
    description="EDM's stochastic Heun (S_churn, S_min, S_max, S_noise); S_churn=0 (default) is heun. "
    "2N-1 NFE on a grid ending at 0.",
    options=stochastic_options(
        S_churn=Option(0.0, float, "total churn; gamma_i = min(S_churn/N, sqrt(2)-1)", low=0.0),
        S_min=Option(0.0, float, "churn only where sigma_i >= S_min", low=0.0),
        S_max=Option(None, float, "churn only where sigma_i <= S_max; none (default) = no upper limit (EDM's inf)",
                     low=0.0, nullable=True),
        S_noise=Option(1.0, float, "std multiplier of the churn noise (EDM ImageNet-64: 1.003)", low=0.0),
    ),
    init=_check,
)
def edm_stochastic(ctx, x, i):
    """Churn sigma_i -> sigma_hat with fresh noise, then Heun (Euler onto sigma = 0) to sigma_{i+1}.

    Karras et al. (arXiv 2206.00364) Alg. 2: the churn (gamma_i, sigma_hat, the added noise), then the Heun
    step from sigma_hat, skipping the correction onto sigma = 0 as its sigma_{i+1} != 0 test does; the
    reference is EDM's ``generate.py`` ``edm_sampler``.
    """
    s, s_next = ctx.sigmas[i], ctx.sigmas[i + 1]
    o = ctx.options
    in_range = o["S_min"] <= s and (o["S_max"] is None or s <= o["S_max"])
    gamma = min(o["S_churn"] / ctx.steps, math.sqrt(2.0) - 1.0) if in_range else 0.0
    s_hat = s  # EDM rounds s_hat with net.round_sigma; a denoiser that needs it rounds internally
    if gamma > 0:
        s_hat = s * (1.0 + gamma)
        x = x + ctx.noise(x, i) * (math.sqrt(s_hat**2 - s**2) * o["S_noise"])
    # Heun from (x_hat, s_hat), in the same arithmetic as `heun` so that S_churn = 0 reproduces it exactly.
    d = (x - ctx.model(x, s_hat)) / s_hat
    x_euler = x + (s_next - s_hat) * d
    if s_next == 0:
        return x_euler
    d_next = (x_euler - ctx.model(x_euler, s_next)) / s_next
    return x + (s_next - s_hat) * 0.5 * (d + d_next)
