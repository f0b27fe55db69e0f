"""Critically-damped Langevin diffusion (CLD) on the phase space u = (x, v), with gDDIM's R_t.

Dockhorn, Vahdat, Kreis, "Score-Based Generative Modeling with Critically-Damped Langevin Diffusion"
(arXiv 2112.07068); score parameterisation and samplers from Zhang, Tao, Chen, "gDDIM: Generalized
Denoising Diffusion Implicit Models" (arXiv 2206.05564), reference code qsh-zh/gDDIM ``cld_jax``.
Formulas: docs/processes.md (CLD, exact denoisers); docs/solvers.md (CLD samplers).

**State layout (used everywhere in sampler-bench):** ``u`` has shape ``[B, 2, *data_shape]`` with
``u[:, 0]`` the position x (the data channel) and ``u[:, 1]`` the velocity v. A network sees the two
halves as 2C channels by ``u.reshape(B, 2 * C, H, W)`` (x channels first, as CLD-SGM concatenates).
Every 2x2 matrix below acts on the (x, v) pair of each data coordinate (Kronecker with I_d).

**Forward SDE** ``du = F_t u dt + G_t dW`` with F_t = beta(t) [[0, M^-1], [-1, -Gamma M^-1]],
G_t = diag(0, sqrt(2 Gamma beta(t))), beta(t) = beta_0 + beta_1 t, critical damping Gamma^2 = 4M.
Everything depends on t only through B(t) = int_0^t beta, so time-varying beta costs nothing extra.

**Perturbation kernel (HSM, v_0 ~ N(0, gamma M) marginalised):** u_t = Psi(t, 0) (x_0, 0) + R_t eps with
eps ~ N(0, I), Sigma_t = R_t R_t^T the Lyapunov solution from Sigma_0 = diag(numerical_eps,
gamma M + numerical_eps) (gDDIM's R_0; CLD-SGM instead adds numerical_eps after propagating, a
difference of order numerical_eps).

**What a CLD model returns:** ``model(u, t)`` with ``t`` of shape [B] returns eps_theta(u, t), the
R_t-parameterised noise prediction of shape ``[B, 2, *data_shape]`` (gDDIM's K_t = R_t choice), so
``score = -R_t^{-T} eps_theta`` and the HSM training target is the ``eps`` drawn in :meth:`CLD.perturb`.
A CLD model also exposes ``model.cld`` (its :class:`CLD`), ``model.process == "cld"``,
``model.sigma_min = t_eps`` and ``model.sigma_max = T`` (the sampling time range), and
``model.prior(n)`` of shape ``[n, 2, *data_shape]``; the generated data is ``u[:, 0]``.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
from scipy.integrate import solve_ivp

from ...rng import Generators, check_generator, randn_like
from ..kind import CLD_PHASE_SPACE, ProcessKind
from .blocks import apply2, chol2, inv2, split_state, stack_state

#: CLD: samplers of its own on u = (x, v) with a time grid in t. gDDIM's default grid is uniform in sqrt(t)
#: (``karras`` with rho = 2; Zhang et al., arXiv 2206.05564), not EDM's rho = 7 in sigma, which would crowd
#: the steps against t_eps. The data is x = u[:, 0].
CLD_KIND = ProcessKind(
    "cld", frozenset({CLD_PHASE_SPACE}), time_variable="t", state="u = (x, v) of shape [B, 2, *data_shape]",
    reference_solver="cld_reference", schedule_defaults={"karras": {"rho": 2.0}}, data_channel=0)

def _times(t, n: int | None = None) -> np.ndarray:
    """Times as a float64 numpy vector (a scalar broadcast to ``n`` entries when given)."""
    if isinstance(t, torch.Tensor):
        t = t.detach().to(dtype=torch.float64, device="cpu").numpy()
    arr = np.asarray(t, dtype=np.float64)
    if n is not None:
        arr = np.broadcast_to(arr.reshape(-1) if arr.ndim else arr, (n,)).copy()
    return arr


def _exp_remainder3(y: np.ndarray) -> np.ndarray:
    """e^y - 1 - y - y^2/2 without cancellation (series for |y| < 1)."""
    y = np.asarray(y, dtype=np.float64)
    out = np.expm1(y) - y - 0.5 * y * y
    small = np.abs(y) < 1.0
    if np.any(small):
        ys = y[small] if y.ndim else y
        term = ys**3 / 6.0
        acc = np.zeros_like(ys)
        for k in range(4, 30):  # |y| < 1: 27 terms reach double precision
            acc = acc + term
            term = term * ys / k
        if y.ndim:
            out[small] = acc
        else:
            out = acc
    return out


# ---------------------------------------------------------------------------------------------
# R_t: eq. 17 of gDDIM, solved once per set of hyperparameters
# ---------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=16)
def _r_solution(m_inv: float, gamma_: float, numerical_eps: float, b_max: float):
    """Dense solution of dR/dB = F_1 R + 1/2 G_1 G_1^T R^{-T} on [0, b_max] (time in B = int beta).

    gDDIM integrates this with RK4 at dt = 1e-6 and interpolates linearly; here scipy's adaptive
    DOP853 in float64 (rtol 1e-12) with its 7th-order dense output keeps R R^T = Sigma to ~1e-13
    relative over the whole range, including the fast transient near t = 0.
    """
    Gamma = 2.0 / math.sqrt(m_inv)
    F1 = np.array([[0.0, m_inv], [-1.0, -Gamma * m_inv]])
    half_gg = np.array([[0.0, 0.0], [0.0, Gamma]])  # 1/2 G_1 G_1^T
    r0 = np.diag([math.sqrt(numerical_eps), math.sqrt(gamma_ / m_inv + numerical_eps)])

    def rhs(_b, y):
        r = y.reshape(2, 2)
        return (F1 @ r + half_gg @ inv2(r).T).ravel()

    sol = solve_ivp(rhs, (0.0, b_max), r0.ravel(), method="DOP853", rtol=1e-12, atol=1e-14, dense_output=True)
    if not sol.success:  # pragma: no cover - DOP853 does not fail on this smooth problem
        raise RuntimeError(f"integrating gDDIM's R_t failed: {sol.message}")
    return sol.sol


# ---------------------------------------------------------------------------------------------
# The process
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CLD:
    """Critically-damped Langevin diffusion with gDDIM's defaults (``cld_jax/configs``; docs/processes.md).

    ``m_inv`` = M^-1 (mass inverse), ``beta_0``/``beta_1``: beta(t) = beta_0 + beta_1 t, ``gamma``: the
    HSM initial velocity variance in units of M (``vv_gamma``), ``numerical_eps``: added to Sigma_0,
    ``T``: the end of the forward process, ``t_eps``: where samplers stop before the final denoising
    step, ``t_min_train``: the smallest training time (gDDIM ``losses.py``: t ~ U[1e-5, T]).
    """

    m_inv: float = 4.0
    beta_0: float = 4.0
    beta_1: float = 0.0
    gamma: float = 0.04
    numerical_eps: float = 1e-6
    T: float = 1.0
    t_eps: float = 1e-3
    t_min_train: float = 1e-5

    name = "cld"
    kind = "cld"
    traits = CLD_KIND
    has_reverse_sde = True

    def __post_init__(self):
        for key in ("m_inv", "beta_0", "gamma", "numerical_eps", "T", "t_eps", "t_min_train"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise ValueError(f"CLD parameter {key} must be a positive number, got {v!r}")
            object.__setattr__(self, key, float(v))
        if isinstance(self.beta_1, bool) or not isinstance(self.beta_1, (int, float)) or self.beta_1 < 0:
            raise ValueError(f"CLD parameter beta_1 must be a number >= 0, got {self.beta_1!r}")
        object.__setattr__(self, "beta_1", float(self.beta_1))
        if not self.t_eps < self.T or not self.t_min_train < self.T:
            raise ValueError(f"CLD needs t_eps ({self.t_eps}) and t_min_train ({self.t_min_train}) below T ({self.T})")

    # --- constants --------------------------------------------------------------------------
    @property
    def Gamma(self) -> float:
        """Friction at critical damping, Gamma = 2 / sqrt(M^-1)."""
        return 2.0 / math.sqrt(self.m_inv)

    @property
    def M(self) -> float:
        return 1.0 / self.m_inv

    @property
    def sigma_min(self) -> float:
        """The sampling end time t_eps (the name sweeps use for a model's lowest level)."""
        return self.t_eps

    @property
    def sigma_max(self) -> float:
        """The sampling start time T."""
        return self.T

    @property
    def sigma0(self) -> np.ndarray:
        """Sigma_0 = R_0 R_0^T = diag(numerical_eps, gamma M + numerical_eps) (HSM)."""
        return np.diag([self.numerical_eps, self.gamma * self.M + self.numerical_eps])

    @property
    def stationary_cov(self) -> np.ndarray:
        """The equilibrium covariance diag(1, M): the prior N(0, I) x N(0, M I)."""
        return np.diag([1.0, self.M])

    # --- schedule ---------------------------------------------------------------------------
    def beta(self, t) -> np.ndarray:
        return self.beta_0 + self.beta_1 * _times(t)

    def beta_int(self, t) -> np.ndarray:
        """B(t) = int_0^t beta(s) ds."""
        t = _times(t)
        return self.beta_0 * t + 0.5 * self.beta_1 * t**2

    def F(self, t) -> np.ndarray:
        """Drift matrix F_t, shape [..., 2, 2] (code ``s_F``)."""
        b = np.asarray(self.beta(t))[..., None, None]
        return b * np.array([[0.0, self.m_inv], [-1.0, -self.Gamma * self.m_inv]])

    def G(self, t) -> np.ndarray:
        """Diffusion matrix G_t = diag(0, sqrt(2 Gamma beta)) (code ``s_G``): noise enters only through v."""
        b = np.asarray(self.beta(t))[..., None, None]
        return np.sqrt(b) * np.array([[0.0, 0.0], [0.0, math.sqrt(2.0 * self.Gamma)]])

    def GGT(self, t) -> np.ndarray:
        b = np.asarray(self.beta(t))[..., None, None]
        return b * np.array([[0.0, 0.0], [0.0, 2.0 * self.Gamma]])

    def psi(self, t, s) -> np.ndarray:
        """Transition matrix Psi(t, s) = exp(int_s^t F) (maps u(s) to the mean of u(t); code ``s_psi(s, t)``).

        With a = 2 sqrt(M^-1) and B = int_s^t beta: e^{-aB/2} [[1 + aB/2, a^2 B/4], [-B, 1 - aB/2]].
        """
        B = np.asarray(self.beta_int(t) - self.beta_int(s), dtype=np.float64)
        a = 2.0 * math.sqrt(self.m_inv)
        c = np.exp(-0.5 * a * B)
        out = np.empty(B.shape + (2, 2))
        out[..., 0, 0] = c * (1.0 + 0.5 * a * B)
        out[..., 0, 1] = c * 0.25 * a * a * B
        out[..., 1, 0] = -c * B
        out[..., 1, 1] = c * (1.0 - 0.5 * a * B)
        return out

    def cov(self, t, sigma0: np.ndarray | None = None) -> np.ndarray:
        """Sigma_t in closed form from a diagonal Sigma_0 (default: the HSM :attr:`sigma0`), [..., 2, 2].

        Sigma_t = Sigma_inf + Psi (Sigma_0 - Sigma_inf) Psi^T, rearranged so that every term is
        non-negative (no 1 - e^{-x} cancellation at small t, where Sigma_xx ~ numerical_eps):
        with x = sqrt(M^-1) B and E3(y) = e^y - 1 - y - y^2/2,
        Sigma_xx = e^{-2x} [S0xx (1+x)^2 + E3(2x) + M^-2 B^2 S0vv],
        Sigma_xv = e^{-2x} [-B (1+x) S0xx + M^-1 B (1-x) S0vv + 2 B x],
        Sigma_vv = e^{-2x} [B^2 S0xx + (1-x)^2 S0vv + M (E3(2x) + 4x)]
        (CLD-SGM's reference code gives the same polynomials).
        """
        s0 = self.sigma0 if sigma0 is None else np.asarray(sigma0, dtype=np.float64)
        if abs(s0[0, 1]) > 0 or abs(s0[1, 0]) > 0:
            raise ValueError("CLD.cov takes a diagonal initial covariance diag(Sigma0_xx, Sigma0_vv)")
        sxx0, svv0 = float(s0[0, 0]), float(s0[1, 1])
        B = np.asarray(self.beta_int(t), dtype=np.float64)
        x = math.sqrt(self.m_inv) * B
        e = np.exp(-2.0 * x)
        r3 = _exp_remainder3(2.0 * x)
        out = np.empty(B.shape + (2, 2))
        out[..., 0, 0] = e * (sxx0 * (1 + x) ** 2 + r3 + self.m_inv**2 * B**2 * svv0)
        out[..., 0, 1] = out[..., 1, 0] = e * (-B * (1 + x) * sxx0 + self.m_inv * B * (1 - x) * svv0 + 2 * B * x)
        out[..., 1, 1] = e * (B**2 * sxx0 + (1 - x) ** 2 * svv0 + self.M * (r3 + 4 * x))
        return out

    @functools.cached_property
    def _r_dense(self):
        """The cached dense solution of eq. 17 in B (shared by every CLD with these parameters)."""
        b_max = float(self.beta_int(self.T))
        return _r_solution(self.m_inv, self.gamma, self.numerical_eps, b_max), b_max

    def R(self, t) -> np.ndarray:
        """gDDIM's R_t (eq. 17: dR/dt = F R + 1/2 G G^T R^{-T}, R_0 = diag(sqrt(eps), sqrt(gamma M + eps))).

        Not symmetric and not the Cholesky factor of Sigma_t, but R R^T = Sigma_t; with it the exact
        eps is constant along probability-flow paths of a single data point (gDDIM Prop. 4), which is
        what makes the exponential integrator in :mod:`sampler_bench.solvers.cld.gddim` accurate.
        """
        t = _times(t)
        if t.min() < 0 or t.max() > self.T * (1 + 1e-12):
            raise ValueError(f"CLD times must lie in [0, T={self.T:g}], got values in [{t.min():g}, {t.max():g}]")
        sol, b_max = self._r_dense
        b = np.minimum(self.beta_0 * t + 0.5 * self.beta_1 * t * t, b_max)
        return sol(b.reshape(-1)).T.reshape(t.shape + (2, 2))

    def L(self, t) -> np.ndarray:
        """The Cholesky factor of Sigma_t (the K_t that gDDIM's Table 1 shows failing at low NFE)."""
        return chol2(self.cov(t))

    def K(self, t, kind: str = "R") -> np.ndarray:
        """The factor K_t of score = -K_t^{-T} eps: ``'R'`` (gDDIM) or ``'L'`` (Cholesky)."""
        if kind == "R":
            return self.R(t)
        if kind == "L":
            return self.L(t)
        raise ValueError(f"K_t must be 'R' or 'L', got {kind!r}")

    # --- kernel, training -------------------------------------------------------------------
    def mean(self, x0: torch.Tensor, t) -> torch.Tensor:
        """E[u_t | x_0] = Psi(t, 0) (x_0, 0): shape [B, 2, *data_shape] (float64)."""
        x0 = x0.to(torch.float64)
        p = self.psi(_times(t, x0.shape[0]), 0.0)  # [B, 2, 2]
        col = torch.as_tensor(p[:, :, 0], device=x0.device).reshape(x0.shape[0], 2, *([1] * (x0.ndim - 1)))
        return col * x0[:, None]

    def sample_time(self, n: int, generator: Generators = None) -> torch.Tensor:
        """n training times t ~ U[t_min_train, T] (float64; per-sample generators supported)."""
        u = _uniform(n, generator)
        return self.t_min_train + u * (self.T - self.t_min_train)

    def perturb(self, x0: torch.Tensor, t, generator: Generators = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(u_t, eps) with u_t = Psi(t, 0)(x_0, 0) + R_t eps, eps ~ N(0, I) of shape [B, 2, *data_shape].

        This is gDDIM's ``perturb_data`` (HSM: v_0 marginalised into R_0); ``eps`` is the regression
        target of a CLD network. Both come back in the dtype and on the device of ``x0``.
        """
        t = _times(t, x0.shape[0])
        shape = (x0.shape[0], 2, *x0.shape[1:])
        eps = randn_like(torch.empty(shape, dtype=torch.float64), generator).to(x0.device)
        u = self.mean(x0, t) + apply2(self.R(t), eps)
        return u.to(x0.dtype), eps.to(x0.dtype)

    def hsm_loss(self, eps_net: Callable, x0: torch.Tensor, generator: Generators = None, t=None,
                 reduction: str = "mean") -> torch.Tensor:
        """gDDIM's CLD training loss: |eps - eps_net(u_t, t)|^2 summed over the state, averaged over the batch.

        ``t`` defaults to U[t_min_train, T] draws; ``reduction='none'`` returns the per-sample losses [B].
        (gDDIM ``losses.py`` with ``reduce_mean=False``, up to its constant factor 1/2.)
        """
        if reduction not in ("mean", "none"):
            raise ValueError(f"hsm_loss: reduction must be 'mean' or 'none', got {reduction!r}")
        t = self.sample_time(x0.shape[0], generator) if t is None else torch.as_tensor(_times(t, x0.shape[0]))
        u, eps = self.perturb(x0, t, generator)
        pred = eps_net(u, t.to(device=x0.device, dtype=x0.dtype))
        if pred.shape != eps.shape:
            raise ValueError(f"a CLD network must return eps of the state's shape {tuple(eps.shape)}, got {tuple(pred.shape)}")
        per_sample = ((pred - eps) ** 2).reshape(x0.shape[0], -1).sum(1)
        return per_sample.mean() if reduction == "mean" else per_sample

    def mixed_eps_offset(self, u: torch.Tensor, t) -> torch.Tensor:
        """gDDIM's ``mixed_score`` term R_t^{-1} (0, v), added to a network's output when that option is on."""
        _, v = split_state(u)
        zero_x = stack_state(torch.zeros_like(v), v)
        return apply2(inv2(self.R(_times(t, u.shape[0]))), zero_x)

    # --- sampling ---------------------------------------------------------------------------
    def prior(self, n: int, shape: Sequence[int], generator: Generators = None, *,
              dtype: torch.dtype = torch.float64, device=None) -> torch.Tensor:
        """n draws of N(0, I) x N(0, M I), shape [n, 2, *shape] (gDDIM ``prior_sampling``)."""
        z = randn_like(torch.empty((n, 2, *shape), dtype=torch.float64), generator)
        z[:, 1] *= math.sqrt(self.M)
        return z.to(dtype=dtype, device=device or "cpu")

    def score_from_eps(self, u: torch.Tensor, t, eps: torch.Tensor) -> torch.Tensor:
        """score = -R_t^{-T} eps (code ``eps2score``)."""
        minv_t = -np.swapaxes(inv2(self.R(_times(t, u.shape[0]))), -1, -2)
        return apply2(minv_t, eps)

    def eps_from_score(self, u: torch.Tensor, t, score: torch.Tensor, kind: str = "R") -> torch.Tensor:
        """eps_K = -K_t^T score, for K = R (gDDIM) or L (Cholesky)."""
        k = self.K(_times(t, u.shape[0]), kind)
        return apply2(-np.swapaxes(k, -1, -2), score)

    def config(self) -> dict[str, Any]:
        """JSON-able parameters; ``CLD.from_config(p.config()) == p``."""
        return {"name": "cld", **asdict(self)}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "CLD":
        params = {k: v for k, v in config.items() if k not in ("name", "kind")}
        if config.get("name", "cld") != "cld":
            raise ValueError(f"not a CLD process config: name={config.get('name')!r}")
        try:
            return cls(**params)
        except TypeError as e:
            raise ValueError(f"process 'cld': {e}") from None

    def describe(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in asdict(self).items())


def _uniform(n: int, generator: Generators) -> torch.Tensor:
    if generator is None or isinstance(generator, torch.Generator):
        dev = generator.device if generator is not None else "cpu"
        return torch.rand(n, generator=generator, dtype=torch.float64, device=dev).cpu()
    check_generator(generator, n)
    return torch.stack([torch.rand((), generator=g, dtype=torch.float64, device=g.device) for g in generator]).cpu()
