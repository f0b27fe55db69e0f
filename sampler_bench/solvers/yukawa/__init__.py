"""Samplers for the Yukawa process of GenPhys (Liu et al., arXiv 2304.02637): weighted particles in z.

Why not the standard ODE solvers: the Yukawa density flow has a death term, d_z p~ + div(p~ v) =
-(kappa - m) p~ (docs/processes.md, "Yukawa"), so transporting particles with dx/dz = (x - D)/z alone
samples the wrong law unless m z_max is small. A Yukawa process therefore does not offer the
probability-flow ODE capability, and euler, heun, dpmpp_*, ... refuse Yukawa models; ``yukawa_smc``
integrates the same transport *and* the log-weights, resampling when the weights degenerate.
"""

from . import smc  # noqa: F401  yukawa_smc
