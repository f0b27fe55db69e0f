"""Critically-damped Langevin diffusion (CLD) on the phase space u = (x, v).

Dockhorn, Vahdat, Kreis (arXiv 2112.07068); the R_t score parameterisation of gDDIM (Zhang, Tao, Chen,
arXiv 2206.05564). Modules: :mod:`.blocks` (the 2x2 linear algebra and the state layout),
:mod:`.process` (the forward SDE, its kernel, R_t, the HSM loss, the prior), :mod:`.exact` (exact
eps of Gaussian mixtures and point sets, and the analytic sweep model).
"""

from .blocks import apply2, chol2, inv2, psd_sqrt2, split_state, stack_state
from .exact import CLDAnalyticModel, CLDGaussianMixture, CLDPointSet
from .process import CLD, CLD_KIND

__all__ = [
    "CLD", "CLD_KIND", "CLDGaussianMixture", "CLDPointSet", "CLDAnalyticModel",
    "apply2", "chol2", "inv2", "psd_sqrt2", "split_state", "stack_state",
]
