"""The Yukawa (screened Poisson) generative process of GenPhys (Liu et al., arXiv 2304.02637).

Modules: :mod:`.bessel` (log K_nu for the kernel's orders), :mod:`.process` (the NIG kernel as an
inverse-Gaussian scale mixture, training law and targets, the prior), :mod:`.exact` (exact denoisers and
birth/death rates of point sets and Gaussian mixtures), :mod:`.model` (the analytic sweep model).
"""

from .exact import YukawaMixture, YukawaPointSet, check_mass
from .model import YukawaAnalyticModel
from .process import YUKAWA_KIND, YukawaProcess, inverse_gaussian

__all__ = ["YukawaProcess", "YUKAWA_KIND", "YukawaMixture", "YukawaPointSet", "YukawaAnalyticModel",
           "check_mass", "inverse_gaussian"]
