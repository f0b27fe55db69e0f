"""Blurring diffusion (BDM): Gaussian diffusion that is diagonal in the image's DCT basis.

Hoogeboom & Salimans, "Blurring Diffusion Models" (arXiv 2209.05557); schedule and parameterisation as
in the reference code of gDDIM (Zhang, Tao, Chen, arXiv 2206.05564, ``blur_jax/sde_lib.py``), which is
where gDDIM reports its >20x speed-up on BDM. Formulas and their derivations: docs/processes.md
("Blurring diffusion").

**State:** ``z`` has the data's shape ``[B, C, H, W]`` (pixel space). With u = V^T z its orthonormal 2-D
DCT (:mod:`.dct`) the forward kernel is, per DCT coefficient (i, j) of every channel,

    u_t = a_t(lambda_ij) u_0 + sigma_t eps,   a_t = alpha_t d_t(lambda),   eps ~ N(0, I)

with the frequency factor d_t(lambda) = (1 - d_min) exp(-lambda tau_t) + d_min, the dissipation time
tau_t = sigma_B(t)^2 / 2, the blur sigma_B(t) = sigma_B,max sin^2(pi t / 2), and gDDIM's shifted cosine
alpha_t = cos(phi_t), sigma_t = sin(phi_t), phi_t = (t + s)/(1 + 2 s) pi/2, s = 0.004. The noise is
isotropic (V is orthogonal), so in pixel space z_t = V diag(a_t) V^T z_0 + sigma_t eps as well.

**Linear SDE per frequency** (what the samplers integrate; derived in docs/processes.md):
du = f_t u dt + g_t dW with f_t = d/dt log a_t and g_t^2 = d(sigma_t^2)/dt - 2 f_t sigma_t^2
(> 0: sigma_t grows and a_t shrinks). The noise factor of gDDIM's score parameterisation is R_t =
sigma_t I (the noise is isotropic), so a BDM model predicts eps and score = -eps / sigma_t.

**What a BDM model returns:** ``model(z, t)`` with ``t`` of shape [B] returns eps_theta(z, t) in pixel
space (the training target of :meth:`BDM.eps_loss`). ``model.sigma_min = t_eps`` and ``model.sigma_max``
= the sampling start time :attr:`BDM.t_start`, where sigma_t / alpha_t = ``rho_max`` (gDDIM's
``sampling_T``, 80 as EDM's sigma_max), and ``model.prior(n)`` is N(0, sigma_{t_start}^2 I).
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ...rng import Generators, check_generator, randn_like
from ..kind import BDM_FREQUENCY_SPACE, ProcessKind
from .dct import dct2, frequencies, idct2

#: BDM: samplers of its own on the image state with a time grid in t, integrating each DCT coefficient's
#: linear SDE. The default grid is gDDIM's ``ts_order = 2`` (uniform in sqrt t: ``karras`` with rho = 2).
BDM_KIND = ProcessKind(
    "bdm", frozenset({BDM_FREQUENCY_SPACE}), time_variable="t", state="z of the data's shape [B, C, H, W] (pixel space)",
    reference_solver="bdm_reference", schedule_defaults={"karras": {"rho": 2.0}})


def times(t, n: int | None = None) -> np.ndarray:
    """Times as a float64 numpy vector (a scalar broadcast to ``n`` entries when given)."""
    if isinstance(t, torch.Tensor):
        t = t.detach().to(dtype=torch.float64, device="cpu").numpy()
    arr = np.asarray(t, dtype=np.float64)
    if n is not None:
        arr = np.broadcast_to(arr.reshape(-1) if arr.ndim else arr, (n,)).copy()
    return arr


def _number(key: str, v) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ValueError(f"BDM parameter {key} must be a finite number, got {v!r}")
    return float(v)


@dataclass(frozen=True)
class BDM:
    """Blurring diffusion with gDDIM's defaults for it (``blur_jax``; docs/processes.md).

    ``sigma_blur_max``: the largest blur sigma_B,max in pixels (gDDIM's default 10; 0 gives plain cosine
    diffusion), ``min_scale``: d_min, the frequency factor's floor in (0, 1] (the paper's 0.001),
    ``shift``: s of the cosine schedule, ``T``: the end of the forward process (at most 1, where the blur
    schedule sin^2(pi t / 2) peaks), ``rho_max``: sigma/alpha where sampling starts, ``t_eps``: where
    samplers stop before the final denoising step, ``t_min_train``: the smallest training time
    (gDDIM: t ~ U[1e-5, T]).
    """

    sigma_blur_max: float = 10.0
    min_scale: float = 0.001
    shift: float = 0.004
    T: float = 1.0
    rho_max: float = 80.0
    t_eps: float = 1e-3
    t_min_train: float = 1e-5

    name = "bdm"
    kind = "bdm"
    traits = BDM_KIND
    has_reverse_sde = True

    def __post_init__(self):
        for key in ("sigma_blur_max", "min_scale", "shift", "T", "rho_max", "t_eps", "t_min_train"):
            object.__setattr__(self, key, _number(key, getattr(self, key)))
        if self.sigma_blur_max < 0:
            raise ValueError(f"BDM blur schedule: sigma_blur_max must be >= 0 (pixels; 0 = no blur), got {self.sigma_blur_max}")
        if not 0 < self.min_scale <= 1:
            raise ValueError(f"BDM blur schedule: min_scale (d_min) must lie in (0, 1], got {self.min_scale}; "
                             "at 0 the blurred frequencies would carry no signal and the denoiser would divide by 0")
        if self.shift <= 0:
            raise ValueError(f"BDM noise schedule: shift must be > 0 (sigma_0 > 0), got {self.shift}")
        if not 0 < self.T <= 1:
            raise ValueError(f"BDM: T must lie in (0, 1] (the blur schedule sin^2(pi t / 2) peaks at t = 1), got {self.T}")
        if self.rho_max <= 0:
            raise ValueError(f"BDM: rho_max (sigma/alpha where sampling starts) must be > 0, got {self.rho_max}")
        for key in ("t_eps", "t_min_train"):
            if not 0 < getattr(self, key) < self.t_start:
                raise ValueError(f"BDM: {key} must lie in (0, t_start = {self.t_start:.6g}) (t_start is where "
                                 f"sigma/alpha = rho_max = {self.rho_max:g}), got {getattr(self, key)}")

    # --- scalar schedule --------------------------------------------------------------------
    @property
    def _phi_rate(self) -> float:
        return 0.5 * math.pi / (1.0 + 2.0 * self.shift)

    def phi(self, t) -> np.ndarray:
        """phi_t = (t + s)/(1 + 2 s) pi/2, so alpha_t = cos(phi_t) and sigma_t = sin(phi_t)."""
        return (times(t) + self.shift) * self._phi_rate

    def alpha(self, t) -> np.ndarray:
        return np.cos(self.phi(t))

    def sigma(self, t) -> np.ndarray:
        """The noise level sigma_t (every frequency, pixel space too)."""
        return np.sin(self.phi(t))

    def log_noise_ratio(self, t) -> np.ndarray:
        """s = log(sigma_t / alpha_t) = log tan(phi_t): the clock in which the noise part of every frequency
        moves at unit log-rate (rho of the DC coefficient is e^s); quadratures and the yardstick use it."""
        return np.log(np.tan(self.phi(t)))

    def time_of_log_noise_ratio(self, s) -> np.ndarray:
        """The inverse of :meth:`log_noise_ratio`."""
        return np.arctan(np.exp(np.asarray(s, dtype=np.float64))) / self._phi_rate - self.shift

    def dt_dlog_noise_ratio(self, t) -> np.ndarray:
        """dt/ds = sin(phi) cos(phi) / phi' (vanishes at t_start's end of the range, where s runs fast)."""
        ph = self.phi(t)
        return np.sin(ph) * np.cos(ph) / self._phi_rate

    @property
    def t_start(self) -> float:
        """The time where sigma_t / alpha_t = tan(phi_t) = rho_max: where samplers start (gDDIM's sampling_T)."""
        return min(self.T, math.atan(self.rho_max) / self._phi_rate - self.shift)

    @property
    def sigma_min(self) -> float:
        """The sampling end time t_eps (the name sweeps use for a model's lowest level)."""
        return self.t_eps

    @property
    def sigma_max(self) -> float:
        """The sampling start time :attr:`t_start`."""
        return self.t_start

    def sigma_blur(self, t) -> np.ndarray:
        """sigma_B(t) = sigma_B,max sin^2(pi t / 2), in pixels."""
        return self.sigma_blur_max * np.sin(0.5 * math.pi * times(t)) ** 2

    # --- per-frequency coefficients: arrays [*t.shape, H, W] --------------------------------
    @staticmethod
    @functools.lru_cache(maxsize=16)
    def _lam(h: int, w: int) -> np.ndarray:
        return frequencies(h, w)

    def _heat(self, t, hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """(e^{-lambda tau_t}, lambda d tau_t/dt) with the time axes first, [..., H, W]."""
        t = times(t)[..., None, None]
        lam = self._lam(*hw)
        sb = self.sigma_blur_max * np.sin(0.5 * math.pi * t) ** 2
        # tau = sigma_B^2 / 2, d tau/dt = sigma_B d sigma_B/dt, d sigma_B/dt = sigma_B,max (pi/2) sin(pi t)
        dtau = sb * self.sigma_blur_max * 0.5 * math.pi * np.sin(math.pi * t)
        return np.exp(-lam * 0.5 * sb**2), lam * dtau

    def freq_scaling(self, t, hw: tuple[int, int]) -> np.ndarray:
        """d_t(lambda) = (1 - d_min) exp(-lambda tau_t) + d_min, [..., H, W]."""
        heat, _ = self._heat(t, hw)
        return (1.0 - self.min_scale) * heat + self.min_scale

    def a(self, t, hw: tuple[int, int]) -> np.ndarray:
        """The signal gain a_t(lambda) = alpha_t d_t(lambda) of each DCT coefficient, [..., H, W]."""
        return np.cos(self.phi(t))[..., None, None] * self.freq_scaling(t, hw)

    def f(self, t, hw: tuple[int, int]) -> np.ndarray:
        """The drift f_t(lambda) = d/dt log a_t = -tan(phi) phi' + d/dt log d_t, [..., H, W]."""
        heat, ldtau = self._heat(t, hw)
        d = (1.0 - self.min_scale) * heat + self.min_scale
        dlog_d = -(1.0 - self.min_scale) * heat * ldtau / d
        return (-np.tan(self.phi(t)) * self._phi_rate)[..., None, None] + dlog_d

    def g2(self, t, hw: tuple[int, int]) -> np.ndarray:
        """g_t^2(lambda) = d sigma^2/dt - 2 f sigma^2 = 2 sigma^2 (phi'/(sin phi cos phi) - d/dt log d_t) > 0."""
        heat, ldtau = self._heat(t, hw)
        d = (1.0 - self.min_scale) * heat + self.min_scale
        dlog_d = -(1.0 - self.min_scale) * heat * ldtau / d
        ph = self.phi(t)
        s2 = np.sin(ph) ** 2
        return (2.0 * s2 * self._phi_rate / (np.sin(ph) * np.cos(ph)))[..., None, None] - 2.0 * s2[..., None, None] * dlog_d

    def rho(self, t, hw: tuple[int, int]) -> np.ndarray:
        """rho_t(lambda) = sigma_t / a_t: the exponential integrator's variable (u_s = a_s (u_t/a_t + int eps d rho))."""
        return np.sin(self.phi(t))[..., None, None] / self.a(t, hw)

    def rho_dot(self, t, hw: tuple[int, int]) -> np.ndarray:
        """d rho/dt = rho (sigma'/sigma - f) = rho g^2 / (2 sigma^2) (> 0), [..., H, W]."""
        s2 = np.sin(self.phi(t))[..., None, None] ** 2
        return self.rho(t, hw) * self.g2(t, hw) / (2.0 * s2)

    # --- applying coefficients to states ----------------------------------------------------
    @staticmethod
    def hw(x: torch.Tensor) -> tuple[int, int]:
        if x.ndim < 3:
            raise ValueError(f"a BDM state is an image batch [B, (C,) H, W]; got shape {tuple(x.shape)}")
        return int(x.shape[-2]), int(x.shape[-1])

    @staticmethod
    def per_sample(coef: np.ndarray, x: torch.Tensor) -> torch.Tensor:
        """A coefficient [B, H, W] (or [H, W]) as a tensor that broadcasts against ``x`` [B, C, H, W]."""
        c = torch.as_tensor(coef, dtype=x.dtype, device=x.device)
        if c.ndim == 3:
            c = c.reshape(c.shape[0], *([1] * (x.ndim - 3)), *c.shape[1:])
        return c

    def apply(self, coef: np.ndarray, z: torch.Tensor) -> torch.Tensor:
        """V diag(coef) V^T z: scale every DCT coefficient of the pixel-space ``z`` by ``coef``."""
        return idct2(self.per_sample(coef, z) * dct2(z))

    # --- kernel, training -------------------------------------------------------------------
    def mean(self, x0: torch.Tensor, t) -> torch.Tensor:
        """E[z_t | x_0] = V diag(a_t) V^T x_0 (float64)."""
        x0 = x0.to(torch.float64)
        return self.apply(self.a(times(t, x0.shape[0]), self.hw(x0)), x0)

    def sample_time(self, n: int, generator: Generators = None) -> torch.Tensor:
        """n training times t ~ U[t_min_train, T] (float64; per-sample generators supported)."""
        return self.t_min_train + _uniform(n, generator) * (self.T - self.t_min_train)

    def perturb(self, x0: torch.Tensor, t, generator: Generators = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(z_t, eps) with z_t = V diag(a_t) V^T x_0 + sigma_t eps: gDDIM's ``perturb_data``; eps is the target."""
        tt = times(t, x0.shape[0])
        eps = randn_like(torch.empty(x0.shape, dtype=torch.float64), generator).to(x0.device)
        sig = torch.as_tensor(self.sigma(tt), device=x0.device).reshape(-1, *([1] * (x0.ndim - 1)))
        z = self.mean(x0, tt) + sig * eps
        return z.to(x0.dtype), eps.to(x0.dtype)

    def eps_loss(self, eps_net: Callable, x0: torch.Tensor, generator: Generators = None, t=None,
                 reduction: str = "mean") -> torch.Tensor:
        """|eps - eps_net(z_t, t)|^2 averaged over the pixels, then over the batch (``'none'``: per sample [B]).

        gDDIM's BDM loss (``blur_jax/losses.py``, eps prediction, uniform weight) up to a constant factor.
        """
        tt = self.sample_time(x0.shape[0], generator) if t is None else torch.as_tensor(times(t, x0.shape[0]))
        z, eps = self.perturb(x0, tt, generator)
        pred = eps_net(z, tt.to(device=x0.device, dtype=torch.float32))
        per = ((pred.to(torch.float64) - eps.to(torch.float64)) ** 2).flatten(1).mean(1)
        if reduction == "none":
            return per
        if reduction != "mean":
            raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
        return per.mean()

    # --- sampling ---------------------------------------------------------------------------
    def prior(self, n: int, shape: Sequence[int], generator: Generators = None, *, dtype=torch.float64,
              device=None) -> torch.Tensor:
        """n starting states N(0, sigma_{t_start}^2 I) (the kernel's noise; the signal left there, a_t x_0
        with a_t <= alpha_{t_start} = 1/sqrt(1 + rho_max^2), is dropped as in gDDIM's ``prior_sampling``)."""
        z = randn_like(torch.empty((n, *shape), dtype=torch.float64), generator)
        return (float(self.sigma(self.t_start)) * z).to(dtype=dtype, device=device or "cpu")

    def x0_from_eps(self, z: torch.Tensor, t, eps: torch.Tensor) -> torch.Tensor:
        """x_0 = V diag(1/a_t) V^T (z - sigma_t eps) (gDDIM ``xeps2x0``; Tweedie's mean for the exact eps)."""
        tt = times(t, z.shape[0])
        sig = torch.as_tensor(self.sigma(tt), dtype=z.dtype, device=z.device).reshape(-1, *([1] * (z.ndim - 1)))
        return self.apply(1.0 / self.a(tt, self.hw(z)), z - sig * eps)

    def score_from_eps(self, z: torch.Tensor, t, eps: torch.Tensor) -> torch.Tensor:
        """score = -eps / sigma_t (R_t = sigma_t I)."""
        sig = torch.as_tensor(self.sigma(times(t, z.shape[0])), dtype=eps.dtype, device=eps.device)
        return -eps / sig.reshape(-1, *([1] * (eps.ndim - 1)))

    def config(self) -> dict[str, Any]:
        """JSON-able parameters; ``BDM.from_config(p.config()) == p``."""
        return {"name": "bdm", **asdict(self)}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "BDM":
        if config.get("name", "bdm") != "bdm":
            raise ValueError(f"not a BDM process config: name={config.get('name')!r}")
        params = {k: v for k, v in config.items() if k not in ("name", "kind")}
        try:
            return cls(**params)
        except TypeError as e:
            raise ValueError(f"process 'bdm': {e}") from None

    def describe(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in asdict(self).items())


def _uniform(n: int, generator: Generators) -> torch.Tensor:
    if generator is None or isinstance(generator, torch.Generator):
        dev = generator.device if generator is not None else "cpu"
        return torch.rand(n, generator=generator, dtype=torch.float64, device=dev).cpu()
    check_generator(generator, n)
    return torch.stack([torch.rand((), generator=g, dtype=torch.float64, device=g.device) for g in generator]).cpu()
