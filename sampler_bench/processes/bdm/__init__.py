"""Blurring diffusion (BDM): Gaussian diffusion that is diagonal in the image's DCT basis.

Hoogeboom & Salimans (arXiv 2209.05557), with gDDIM's schedule and eps parameterisation (Zhang, Tao,
Chen, arXiv 2206.05564). Modules: :mod:`.dct` (the orthonormal 2-D DCT and the frequencies lambda_ij),
:mod:`.process` (the schedule, the per-frequency linear SDE, the kernel, the eps loss, the prior),
:mod:`.exact` (exact eps of Gaussian mixtures of images and the analytic sweep model).
"""

from .dct import dct2, frequencies, idct2
from .exact import BDMAnalyticModel, BDMGaussianMixture
from .process import BDM, BDM_KIND

__all__ = ["BDM", "BDM_KIND", "BDMGaussianMixture", "BDMAnalyticModel", "dct2", "idct2", "frequencies"]
