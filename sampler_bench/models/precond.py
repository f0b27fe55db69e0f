"""Preconditioning: turn a raw network into the denoiser D(x-hat, sigma) that every solver sees.

EDM (Karras et al., arXiv 2206.00364, Table 1; ``training/networks.py``)::

    D(x, sigma) = c_skip x + c_out F(c_in x, c_noise)

==========  =====================  ==========================  ==================  ======================
precond     c_skip                 c_out                       c_in                c_noise
==========  =====================  ==========================  ==================  ======================
``edm``     sd^2/(s^2 + sd^2)      s sd/sqrt(s^2 + sd^2)       1/sqrt(s^2 + sd^2)  ln(s)/4
``ve``      1                      s                           1                   ln(s/2)
==========  =====================  ==========================  ==================  ======================

VP models (DDPM/ScoreSDE) predict epsilon, v or x0 from the *scaled* state x = alpha x-hat at a model
time t; :class:`VPPrecond` wraps them with the conversion table of docs/notation.md:
alpha = 1/sqrt(1 + sigma^2), sigma_VP = alpha sigma, and

* epsilon-prediction: D = x-hat - sigma eps
* v-prediction (Salimans & Ho, arXiv 2202.00512): D = alpha x - sigma_VP v
* x0-prediction: D = the output

The model time is either EDM's continuous VP time, c_noise = (M - 1) t(sigma) (``VPPrecond``), or the
nearest step of a discrete DDPM schedule (``iDDPMPrecond``'s ``round_sigma``), :class:`DiscreteVPTime`.

The mixing c_skip x + c_out F is done in float64 so the identity part is exact at small sigma; the
network itself runs in its own dtype (float32).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from ..vp import vp_time


def _col(sigma: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return sigma.to(torch.float64).reshape(-1, *([1] * (x.ndim - 1)))


def _as_sigma(sigma, x: torch.Tensor) -> torch.Tensor:
    s = torch.as_tensor(sigma, dtype=torch.float64, device=x.device)
    return s.expand(x.shape[0]) if s.ndim == 0 else s.reshape(-1)


def _net_dtype(net: nn.Module) -> torch.dtype:
    p = next(net.parameters(), None)
    return p.dtype if p is not None else torch.float32


class EDMPrecond(nn.Module):
    """EDM preconditioning with the data std ``sigma_data`` (measured on the training set)."""

    def __init__(self, net: nn.Module, sigma_data: float = 0.5):
        super().__init__()
        if not sigma_data > 0:
            raise ValueError(f"sigma_data must be positive, got {sigma_data!r}")
        self.net = net
        self.sigma_data = float(sigma_data)

    def coefficients(self, sigma: torch.Tensor):
        sd2 = self.sigma_data**2
        s2 = sigma**2
        return sd2 / (s2 + sd2), sigma * self.sigma_data / torch.sqrt(s2 + sd2), 1 / torch.sqrt(s2 + sd2), torch.log(sigma) / 4

    def forward(self, x: torch.Tensor, sigma) -> torch.Tensor:
        sigma = _as_sigma(sigma, x)
        c_skip, c_out, c_in, c_noise = self.coefficients(sigma.to(torch.float64))
        dt = _net_dtype(self.net)
        F_x = self.net((_col(c_in, x) * x.to(torch.float64)).to(dt), c_noise.to(dt))
        return (_col(c_skip, x) * x.to(torch.float64) + _col(c_out, x) * F_x.to(torch.float64)).to(x.dtype)


class VEPrecond(nn.Module):
    """Song et al.'s VE (NCSN++) parameterisation as EDM writes it: D = x + sigma F(x, ln(sigma/2))."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor, sigma) -> torch.Tensor:
        sigma = _as_sigma(sigma, x).to(torch.float64)
        dt = _net_dtype(self.net)
        F_x = self.net(x.to(dt), torch.log(0.5 * sigma).to(dt))
        return (x.to(torch.float64) + _col(sigma, x) * F_x.to(torch.float64)).to(x.dtype)


class ContinuousVPTime:
    """EDM ``VPPrecond``: model time c_noise = (M - 1) t(sigma), t the inverse of the VP sigma schedule."""

    def __init__(self, beta_d: float = 19.9, beta_min: float = 0.1, M: int = 1000):
        self.beta_d, self.beta_min, self.M = float(beta_d), float(beta_min), int(M)

    def __call__(self, sigma: torch.Tensor) -> torch.Tensor:
        return (self.M - 1) * vp_time(sigma, self.beta_d, self.beta_min).to(sigma.device)

    def config(self) -> dict:
        return {"time": "continuous", "beta_d": self.beta_d, "beta_min": self.beta_min, "M": self.M}


class DiscreteVPTime:
    """A discrete DDPM schedule: the model time is the step whose sigma is nearest in log sigma.

    ``alphas_cumprod[k]`` is DDPM's abar at step k; sigma_k = sqrt((1 - abar_k)/abar_k). A sigma on the
    schedule maps to its own step exactly, so a solver on those sigmas evaluates the network at the same
    inputs as the DDPM/DDIM sampler would.
    """

    def __init__(self, alphas_cumprod):
        ac = torch.as_tensor(alphas_cumprod, dtype=torch.float64).reshape(-1)
        if ac.numel() < 2 or not ((ac > 0) & (ac < 1)).all():
            raise ValueError("alphas_cumprod must be a sequence of values in (0, 1)")
        self.alphas_cumprod = ac
        self.sigmas = torch.sqrt((1 - ac) / ac)
        self.log_sigmas = torch.log(self.sigmas)

    @property
    def sigma_min(self) -> float:
        return float(self.sigmas.min())

    @property
    def sigma_max(self) -> float:
        return float(self.sigmas.max())

    def index(self, sigma: torch.Tensor) -> torch.Tensor:
        ls = torch.log(sigma.to(torch.float64).cpu())
        return (ls[:, None] - self.log_sigmas[None, :]).abs().argmin(1)

    def __call__(self, sigma: torch.Tensor) -> torch.Tensor:
        return self.index(sigma).to(sigma.device)

    def config(self) -> dict:
        return {"time": "discrete", "steps": int(self.alphas_cumprod.numel())}


PREDICTIONS = ("eps", "v", "x0")


def vp_output_to_denoised(out: torch.Tensor, x_hat: torch.Tensor, sigma: torch.Tensor, prediction: str) -> torch.Tensor:
    """The conversion table of docs/notation.md, in float64: a VP model output -> D(x-hat, sigma)."""
    s = _col(sigma, x_hat)
    xh = x_hat.to(torch.float64)
    out = out.to(torch.float64)
    if prediction == "eps":
        return xh - s * out
    alpha = 1 / torch.sqrt(1 + s**2)
    if prediction == "v":
        return alpha * (alpha * xh) - alpha * s * out
    if prediction == "x0":
        return out
    raise ValueError(f"unknown VP prediction {prediction!r}; allowed: {', '.join(PREDICTIONS)}")


def denoised_to_vp_target(denoised: torch.Tensor, x_hat: torch.Tensor, sigma: torch.Tensor, prediction: str) -> torch.Tensor:
    """Inverse of :func:`vp_output_to_denoised` (what a VP network should output for a given D)."""
    s = _col(sigma, x_hat)
    xh, d = x_hat.to(torch.float64), denoised.to(torch.float64)
    if prediction == "eps":
        return (xh - d) / s
    alpha = 1 / torch.sqrt(1 + s**2)
    if prediction == "v":
        return (alpha * xh - d / alpha) / s
    if prediction == "x0":
        return d
    raise ValueError(f"unknown VP prediction {prediction!r}; allowed: {', '.join(PREDICTIONS)}")


class VPPrecond(nn.Module):
    """Wrap a VP network ``net(x_vp, t)`` predicting ``prediction`` into a denoiser D(x-hat, sigma).

    ``time`` maps sigma [B] to the network's time input (:class:`ContinuousVPTime` by default,
    :class:`DiscreteVPTime` for DDPM checkpoints).
    """

    def __init__(self, net: Callable, prediction: str = "eps", time: Callable | None = None):
        super().__init__()
        if prediction not in PREDICTIONS:
            raise ValueError(f"unknown VP prediction {prediction!r}; allowed: {', '.join(PREDICTIONS)}")
        self.net = net
        self.prediction = prediction
        self.time = time or ContinuousVPTime()

    def forward(self, x: torch.Tensor, sigma, **conditioning) -> torch.Tensor:
        sigma = _as_sigma(sigma, x).to(torch.float64)
        alpha = 1 / torch.sqrt(1 + sigma**2)
        dt = _net_dtype(self.net) if isinstance(self.net, nn.Module) else torch.float32
        x_vp = (_col(alpha, x) * x.to(torch.float64)).to(dt)
        out = self.net(x_vp, self.time(sigma).to(dt), **conditioning)
        return vp_output_to_denoised(out, x, sigma, self.prediction).to(x.dtype)


def build_precond(config: dict[str, Any], net: nn.Module) -> nn.Module:
    """``{"type": "edm", "sigma_data": sd}``, ``{"type": "ve"}`` or ``{"type": "vp", "prediction": ...}``."""
    kind = (config or {}).get("type", "edm")
    if kind == "edm":
        return EDMPrecond(net, config.get("sigma_data", 0.5))
    if kind == "ve":
        return VEPrecond(net)
    if kind == "vp":
        time_cfg = {k: v for k, v in config.items() if k in ("beta_d", "beta_min", "M")}
        return VPPrecond(net, config.get("prediction", "eps"), ContinuousVPTime(**time_cfg))
    raise ValueError(f"unknown preconditioning {kind!r}; allowed: edm, ve, vp")


def precond_config(model: nn.Module) -> dict[str, Any]:
    """The config that :func:`build_precond` turns back into ``model`` (for checkpoints)."""
    if isinstance(model, EDMPrecond):
        return {"type": "edm", "sigma_data": model.sigma_data}
    if isinstance(model, VEPrecond):
        return {"type": "ve"}
    if isinstance(model, VPPrecond) and isinstance(model.time, ContinuousVPTime):
        t = model.time
        return {"type": "vp", "prediction": model.prediction, "beta_d": t.beta_d, "beta_min": t.beta_min, "M": t.M}
    raise ValueError(f"cannot describe preconditioning {type(model).__name__} as a config")


def edm_sigma_data(data: torch.Tensor) -> float:
    """sigma_data of EDM: the standard deviation of all training values (EDM uses 0.5 for [-1, 1] images)."""
    return float(torch.as_tensor(data, dtype=torch.float64).std())


__all__ = ["EDMPrecond", "VEPrecond", "VPPrecond", "ContinuousVPTime", "DiscreteVPTime", "build_precond",
           "precond_config", "vp_output_to_denoised", "denoised_to_vp_target", "edm_sigma_data", "PREDICTIONS"]
