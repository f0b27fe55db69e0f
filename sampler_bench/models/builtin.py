"""Built-in analytic models: Gaussian mixtures with exact denoisers, usable anywhere a model is.

``gmm2d``: eight isotropic components on a ring of radius 2 (pictures of samples).
``gmm16``: a 16-D anisotropic mixture of four full-covariance components (condition numbers up to
~100), a harder test of solver accuracy; built from a fixed seed so its hash never changes.
``gmm2d_cld``: the ``gmm2d`` mixture under critically-damped Langevin diffusion (Dockhorn et al., arXiv
2112.07068) with gDDIM's defaults (arXiv 2206.05564): its exact R_t-parameterised eps, for sweeping the CLD
samplers (gddim, gddim_sde, cld_*) with endpoint errors against ``cld_reference`` and distribution metrics
on the generated data u[:, 0].
``gmm16_bdm``: the ``gmm16`` mixture read as 1x4x4 images under blurring diffusion (Hoogeboom & Salimans,
arXiv 2209.05557) with gDDIM's blur schedule: its exact eps, for sweeping the BDM samplers (gddim_bdm,
bdm_*) with endpoint errors against ``bdm_reference``.
"""

from __future__ import annotations

import math

import torch

from ..processes.analytic import GaussianMixture
from ..processes.bdm import BDM, BDMAnalyticModel
from ..processes.cld import CLD, CLDAnalyticModel
from ..options import closest
from .base import AnalyticModel


def _gmm2d() -> AnalyticModel:
    angles = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
    means = 2.0 * torch.stack([torch.cos(angles), torch.sin(angles)], 1)
    gmm = GaussianMixture.isotropic(torch.ones(8), means, 0.15)
    return AnalyticModel("gmm2d", gmm, description="2-D ring of 8 Gaussians (std 0.15, radius 2)")


def _gmm16() -> AnalyticModel:
    g = torch.Generator().manual_seed(20261122)
    d, K = 16, 4
    means = 1.5 * torch.randn(K, d, generator=g, dtype=torch.float64)
    covs = []
    for _ in range(K):
        q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
        lam = torch.logspace(-2, 0, d, dtype=torch.float64)  # variances 0.01 .. 1
        covs.append(q @ torch.diag(lam) @ q.T)
    gmm = GaussianMixture(torch.tensor([0.4, 0.3, 0.2, 0.1], dtype=torch.float64), means, torch.stack(covs))
    return AnalyticModel("gmm16", gmm, description="16-D mixture of 4 anisotropic Gaussians (variances 0.01..1)")


def _gmm2d_cld() -> CLDAnalyticModel:
    return CLDAnalyticModel.from_mixture(
        "gmm2d_cld", _gmm2d().distribution, CLD(),
        description="gmm2d (2-D ring of 8 Gaussians) under CLD with gDDIM's defaults (M^-1 = 4, beta = 4, T = 1); "
        "state u = (x, v) of shape [2, 2], data = u[:, 0]")


def _gmm16_bdm() -> BDMAnalyticModel:
    return BDMAnalyticModel.from_mixture(
        "gmm16_bdm", _gmm16().distribution, (1, 4, 4), BDM(),
        description="gmm16 (16-D, 4 full-covariance components) as 1x4x4 images under blurring diffusion "
        "with gDDIM's schedule (sigma_B,max = 10, d_min = 0.001, cosine alpha); state = the image")


BUILTIN = {"gmm2d": _gmm2d, "gmm16": _gmm16, "gmm2d_cld": _gmm2d_cld, "gmm16_bdm": _gmm16_bdm}


def available() -> list[str]:
    return sorted(BUILTIN)


def builtin_model(name: str) -> AnalyticModel | CLDAnalyticModel | BDMAnalyticModel:
    if name not in BUILTIN:
        raise ValueError(f"unknown built-in model {name!r}{closest(name, list(BUILTIN))}; available: {', '.join(available())}")
    return BUILTIN[name]()
