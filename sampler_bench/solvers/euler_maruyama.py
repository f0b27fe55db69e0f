"""Euler–Maruyama on the reverse-SDE family in sigma (docs/notation.md, "Reverse SDEs"; docs/solvers.md).

    d x = (1 + kappa) eps d sigma + sqrt(2 kappa sigma) dw,   eps = (x - D(x, sigma)) / sigma,

with sigma decreasing as time: kappa = 1 is the reverse-time SDE of Song et al. (arXiv 2011.13456,
eq. 6, in the sigma form of Karras et al. arXiv 2206.00364 eq. 6), kappa = 0 the probability-flow ODE.
One step (Maruyama 1955; Kloeden & Platen, 'Numerical Solution of SDEs', §9.1 / §14.1):

    x_{i+1} = x_i + (1 + kappa)(s' - s) eps_i + sqrt(2 kappa s (s - s')) z

Weak order 1, strong order 1/2. The step onto sigma = 0 returns D_i with no noise (ScoreSDE's
``noise_removal``; the drift formula would overshoot to (1+kappa) D - kappa x there).
"""

from __future__ import annotations

import math

from .noise import stochastic_options
from .updates import first_order_update
from .registry import Option, register


@register(
    "euler_maruyama",
    order=1,
    stochastic=True,
    paper="Song et al., 'Score-Based Generative Modeling through SDEs' (arXiv 2011.13456) reverse SDE; "
    "Maruyama (1955); Kloeden & Platen (1992) weak order 1",
    description="Euler–Maruyama on dx = (1+kappa) eps dsigma + sqrt(2 kappa sigma) dw; kappa=1 the reverse "
    "SDE, kappa=0 euler. The step onto sigma=0 is a plain denoise.",
    options=stochastic_options(
        kappa=Option(1.0, float, "noise scale of the SDE family: 0 = probability-flow ODE, 1 = reverse-time SDE", low=0.0),
    ),
)
def euler_maruyama(ctx, x, i):
    """Written as ``euler`` plus the kappa terms, so kappa = 0 reproduces ``euler`` bit for bit.

    Euler–Maruyama (Kloeden & Platen (1992) §14.1, weak order 1) on the reverse SDE of Song et al. (arXiv
    2011.13456, eq. 6), in sigma as EDM's eq. 6 (Karras et al., arXiv 2206.00364) with beta = kappa / sigma.
    """
    s, s_next = ctx.sigmas[i], ctx.sigmas[i + 1]
    kappa = ctx.options["kappa"]
    denoised = ctx.model(x, s)
    out = first_order_update(x, denoised, s, s_next)
    if s_next == 0:
        return out
    ratio = s_next / s
    if kappa > 0:
        # (1 + kappa)(s' - s) eps = -(1 - ratio)(x - D) - kappa (1 - ratio)(x - D)
        out = out - (kappa * (1.0 - ratio)) * (x - denoised)
        out = out + ctx.noise(x, i) * math.sqrt(2.0 * kappa * s * (s - s_next))
    return out
