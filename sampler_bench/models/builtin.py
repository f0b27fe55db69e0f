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
``gmm2d_yukawa``: eight isotropic components on the ring of ``gmm2d`` with unequal weights (1 : 2 : ... : 8)
under the Yukawa process of GenPhys (Liu et al., arXiv 2304.02637) with m = 0.05 and z in [0.002, 40]
(m z_max = 2): its exact denoiser and birth/death rate by quadrature over W, for sweeping ``yukawa_smc``;
the unequal weights make ``gmm_tv`` show what the birth/death weights do (the plain ODE misses them).
"""

from __future__ import annotations

import math

import torch

from ..processes.analytic import GaussianMixture
from ..processes.bdm import BDM, BDMAnalyticModel
from ..processes.cld import CLD, CLDAnalyticModel
from ..processes.yukawa import YukawaAnalyticModel, YukawaMixture, YukawaProcess
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


def _gmm2d_yukawa() -> YukawaAnalyticModel:
    means = _gmm2d().distribution.means
    gmm = GaussianMixture.isotropic(torch.arange(1, 9, dtype=torch.float64), means, 0.15)
    return YukawaAnalyticModel(
        "gmm2d_yukawa", YukawaMixture(gmm, 0.05), YukawaProcess(m=0.05, z_min=0.002, z_max=40.0),
        description="2-D ring of 8 Gaussians (std 0.15, radius 2, weights 1:2:...:8) under the Yukawa process "
        "(m = 0.05, z in [0.002, 40]); exact denoiser and birth/death rate")


BUILTIN = {"gmm2d": _gmm2d, "gmm16": _gmm16, "gmm2d_cld": _gmm2d_cld, "gmm16_bdm": _gmm16_bdm,
           "gmm2d_yukawa": _gmm2d_yukawa}


def available() -> list[str]:
    return sorted(BUILTIN)


def builtin_model(name: str) -> AnalyticModel | CLDAnalyticModel | BDMAnalyticModel | YukawaAnalyticModel:
    if name not in BUILTIN:
        raise ValueError(f"unknown built-in model {name!r}{closest(name, list(BUILTIN))}; available: {', '.join(available())}")
    return BUILTIN[name]()
