"""The Yukawa (screened Poisson) generative process of GenPhys (Liu et al., arXiv 2304.02637, §4.2).

Formulas and derivations: docs/processes.md ("Yukawa"). In the augmented space (x in R^N, z > 0) the
potential solves (Delta_x + d_z^2 - m^2) phi = -rho(x) delta(z). With p = -d_z phi and flux -grad_x phi it
is a density flow with a death term (GenPhys eq. 2 with R != 0):

    d_z p + div_x(p v) = -m^2 phi,   v(x, z) = (x - E[y | x, z]) / z,

so the velocity has the denoiser form of PFGM++ (Xu et al., arXiv 2302.04265, eq. 4) with z as the level,
and the normalised density obeys d_z p~ + div(p~ v) = -(kappa - m) p~ with the birth/death rate
kappa(x, z) = m^2 phi / p = (m^2 / z) E[W | x, z] (mean m over p~).

**Kernel.** The normalised kernel p(x | y, z) ~ z r^{-(N+1)/2} K_{(N+1)/2}(m r), r^2 = |x - y|^2 + z^2, is the
multivariate normal-inverse-Gaussian law NIG(alpha = m, beta = 0, delta = z) (Barndorff-Nielsen 1997),
a Gaussian scale mixture:

    x = y + sqrt(W) eps,  eps ~ N(0, I_N),  W ~ InverseGaussian(mean z/m, shape z^2).

Its per-coordinate variance is exactly z/m; m z >> 1 is diffusion-like (sigma^2 = z/m), m z << 1 the
heavy-tailed PFGM kernel (m -> 0: W has the Levy law and p is PFGM's (|x - y|^2 + z^2)^{-(N+1)/2}).

**Levels.** Samplers integrate in z (the grid ``sigmas`` holds z values). Training and preconditioning use
the scale sigma(z) = z / sqrt(1 + m z) (``precond_sigma``, our choice: GenPhys trains no Yukawa image model):
the harmonic blend of the kernel's variance z/m (its diffusion-like end, m z >> 1) and z^2 (PFGM's end,
m z << 1, where PFGM++ aligns sigma = r/sqrt(D) = z for D = 1, Xu et al. §4). The variance z/m alone
would be a poor scale at small m z, where it is carried by rare huge W. Training draws EDM's
ln sigma ~ N(P_mean, P_std^2) and inverts z(sigma) = (m sigma^2 + sqrt(m^2 sigma^4 + 4 sigma^2)) / 2,
with EDM's weight and preconditioning on sigma. The default z range is sigma(z) in [0.002, 80].

**Rate target.** kappa = E[h | x] with the per-pair h = (m/z) r K_{(N-1)/2}(m r) / K_{(N+1)/2}(m r)
= (m^2/z) E[W | x, y, z] (the mean of W's generalised-inverse-Gaussian posterior), so regressing a rate
head on h is unbiased, as regressing the denoiser on y.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch

from ...rng import Generators, randn_like
from ..base import Process, _sigma_vector, standard_normal
from ..kind import YUKAWA_WEIGHTED_FLOW, ProcessKind
from .bessel import log_bessel_k
from .exact import YukawaPointSet, check_mass

#: Yukawa: the weighted flow in z only. Its samplers are stochastic (resampling), so sweeps measure no
#: endpoint errors on it and the declared yardstick is never run (``reference`` would refuse a Yukawa model).
YUKAWA_KIND = ProcessKind(
    "yukawa", frozenset({YUKAWA_WEIGHTED_FLOW}), time_variable="z (the sweep's sigma grid holds z)",
    state="x, the data's own shape, with one log-weight per sample kept by the sampler", reference_solver="reference",
    refusal=("its flow has a birth/death term, so the plain ODE or SDE without the particle weights samples the wrong "
             "law (docs/processes.md, 'Yukawa')"))


def _normal_cdf(v: torch.Tensor) -> torch.Tensor:
    return torch.special.ndtr(v)


def inverse_gaussian(mean: torch.Tensor, shape: torch.Tensor, generator: Generators = None) -> torch.Tensor:
    """One draw of InverseGaussian(mean_i, shape_i) per entry (float64) by Michael, Schucany & Haas (1976).

    With nu ~ N(0, 1), a = mean nu^2 / (2 shape), the smaller root of the quadratic is
    w = mean / (1 + a + sqrt(a^2 + 2a)) (the textbook mean + mean a - mean sqrt(a^2 + 2a), rewritten so it
    does not cancel when a is large); it is kept with probability mean / (mean + w), else mean^2 / w.
    Both normal draws come from each sample's own generator (the uniform is Phi of a normal).
    """
    n = mean.shape[0]
    draws = randn_like(torch.empty((n, 2), dtype=torch.float64), generator)
    nu, u = draws[:, 0], _normal_cdf(draws[:, 1])
    a = mean * nu**2 / (2.0 * shape)
    w = mean / (1.0 + a + torch.sqrt(a * a + 2.0 * a))
    return torch.where(u <= mean / (mean + w), w, mean * mean / w)


class YukawaProcess(Process):
    """The Yukawa kernel family in z with screening mass ``m`` (sigma_min/sigma_max are z_min/z_max)."""

    name = "yukawa"
    kind = "yukawa"
    traits = YUKAWA_KIND
    has_reverse_sde = False

    PROPOSALS = ("poisson", "nig")

    def __init__(self, m: float = 1.0, z_min: float | None = None, z_max: float | None = None,
                 P_mean: float = -1.2, P_std: float = 1.2, proposal: str = "nig"):
        self.m = check_mass(m)
        if proposal not in self.PROPOSALS:
            raise ValueError(f"process 'yukawa': proposal must be one of {', '.join(self.PROPOSALS)}, got {proposal!r}")
        self.proposal = proposal
        super().__init__(float(self.z_of_sigma(0.002)) if z_min is None else z_min,
                         float(self.z_of_sigma(80.0)) if z_max is None else z_max)
        if isinstance(P_std, bool) or not isinstance(P_std, (int, float)) or not P_std > 0:
            raise ValueError(f"process 'yukawa': P_std must be positive, got {P_std!r}")
        if isinstance(P_mean, bool) or not isinstance(P_mean, (int, float)) or not math.isfinite(P_mean):
            raise ValueError(f"process 'yukawa': P_mean must be a finite number, got {P_mean!r}")
        self.P_mean, self.P_std = float(P_mean), float(P_std)

    @property
    def z_min(self) -> float:
        return self.sigma_min

    @property
    def z_max(self) -> float:
        return self.sigma_max

    def precond_sigma(self, z) -> torch.Tensor:
        """sigma(z) = z / sqrt(1 + m z): the kernel's scale that training and preconditioning use (float64)."""
        z = torch.as_tensor(z, dtype=torch.float64)
        return z / torch.sqrt(1.0 + self.m * z)

    def z_of_sigma(self, sigma) -> torch.Tensor:
        """The inverse of :meth:`precond_sigma`: z = (m s^2 + sqrt(m^2 s^4 + 4 s^2)) / 2."""
        s2 = torch.as_tensor(sigma, dtype=torch.float64) ** 2
        return 0.5 * (self.m * s2 + torch.sqrt(self.m**2 * s2 * s2 + 4.0 * s2))

    # --- training ---------------------------------------------------------------------------
    def sample_sigma(self, n: int, generator: Generators = None) -> torch.Tensor:
        """n training levels z = z(sigma) with ln sigma ~ N(P_mean, P_std^2) (float64)."""
        return self.z_of_sigma(torch.exp(self.P_mean + self.P_std * standard_normal(n, generator)))

    def loss_weight(self, z: torch.Tensor, sigma_data: float) -> torch.Tensor:
        """EDM's lambda on sigma = precond_sigma(z): (sigma^2 + sd^2)/(sigma sd)^2."""
        s = self.precond_sigma(z)
        return (s**2 + sigma_data**2) / (s * sigma_data) ** 2

    def mixing(self, z, n: int, generator: Generators = None) -> torch.Tensor:
        """n draws of W ~ InverseGaussian(z/m, z^2) (float64, one z per sample or a scalar)."""
        zz = _sigma_vector(z, n)
        return inverse_gaussian(zz / self.m, zz**2, generator)

    def noise_and_mixing(self, shape: Sequence[int], z, generator: Generators = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(x - y, W) for x ~ p(x | y, z): W first, then eps, from each sample's generator (float64)."""
        shape = tuple(int(s) for s in shape)
        W = self.mixing(z, shape[0], generator)
        eps = randn_like(torch.empty(shape, dtype=torch.float64), generator)
        return torch.sqrt(W).reshape(-1, *([1] * (len(shape) - 1))) * eps, W

    def noise(self, shape: Sequence[int], z, generator: Generators = None) -> torch.Tensor:
        return self.noise_and_mixing(shape, z, generator)[0]

    def rate_target(self, x: torch.Tensor, y: torch.Tensor, z) -> torch.Tensor:
        """h / m = (r / z) K_{(N-1)/2}(m r) / K_{(N+1)/2}(m r) per sample (float64): the rate head's target.

        E[h | x, z] = kappa(x, z) (docs/processes.md, "Yukawa"); h / m has mean 1 over the kernel.
        """
        flat_x = x.reshape(x.shape[0], -1).to(torch.float64)
        flat_y = y.reshape(y.shape[0], -1).to(torch.float64).to(flat_x.device)
        zz = _sigma_vector(z, x.shape[0]).to(flat_x.device)
        N = flat_x.shape[1]
        r = torch.sqrt(((flat_x - flat_y) ** 2).sum(1) + zz**2)
        _, ratio = log_bessel_k(N + 1, self.m * r)
        return r / zz * ratio

    def training_loss(self, model, y: torch.Tensor, sigma_data: float, generator: Generators = None,
                      rate_weight: float = 1.0) -> torch.Tensor:
        """EDM's weighted denoising loss on sigma(z) plus ``rate_weight`` |z (kappa_theta - h)|^2 (batch means).

        ``model(x, z, with_rate=True)`` returns (D, kappa) (:class:`~sampler_bench.models.networks.YukawaNetwork`).
        The rate error is weighted by z^2: z (kappa - m) is the log-weight's rate per unit ln z, so this
        is the error that reaches the samples' weights; unweighted, the target's variance 1/(m z) (in units of
        m^2) would swamp the loss at small m z, where the weights hardly matter. A weight per level does not
        move the minimiser, E[h | x, z] = kappa. Draw order per batch: z, then W, then eps.
        """
        n = y.shape[0]
        z = self.sample_sigma(n, generator)
        noise, _ = self.noise_and_mixing(y.shape, z, generator)
        x = (y.detach().cpu().to(torch.float64) + noise)
        target_rate = self.m * self.rate_target(x, y.detach().cpu(), z)
        weight = self.loss_weight(z, sigma_data).to(y.device)
        denoised, rate = model(x.to(device=y.device, dtype=torch.float32), z.to(y.device), with_rate=True)
        per_sample = ((denoised.to(torch.float64) - y.to(torch.float64)) ** 2).flatten(1).mean(1)
        rate_err = (z.to(y.device) * (rate.to(torch.float64) - target_rate.to(y.device))) ** 2
        return (weight * per_sample).mean() + rate_weight * rate_err.mean()

    # --- sampling ---------------------------------------------------------------------------
    def prior(self, n: int, shape: Sequence[int], generator: Generators = None, *, sigma: float | None = None,
              dtype: torch.dtype = torch.float64, device=None) -> torch.Tensor:
        """n starting states at z (default z_max), drawn from the proposal the SMC samplers weight.

        ``proposal = 'nig'`` (default): the Yukawa prior itself, the kernel at z centred at 0 (weights start equal).
        ``proposal = 'poisson'``: PFGM's kernel at z (Student-t with 1 degree of freedom, scale z), whose
        heavier tails cover the prior; the sampler starts with the weights NIG/Poisson (:meth:`log_prior_ratio`).
        Why: along the flow's (nearly straight) field lines the death term's weights grow like
        exp(m z_max (sec theta - 1)) with the angle theta from the z axis, which the NIG prior has
        suppressed by the same factor; drawn from the Poisson kernel the two cancel. Measured: better in 2-D
        (tests/test_yukawa.py), worse on 64-D digits, where the starting weights NIG/Poisson themselves
        degenerate (checkpoints/README.md, "digits-yukawa"); docs/processes.md, "Yukawa".
        """
        z = self.sigma_max if sigma is None else float(sigma)
        if self.proposal == "nig":
            out = self.noise((n, *shape), z, generator)
        else:
            from ..pfgmpp import pfgmpp_noise

            out = pfgmpp_noise((n, *shape), z, 1.0, generator)
        return out.to(dtype=dtype, device=device or "cpu")

    def log_prior_ratio(self, x: torch.Tensor, z: float) -> torch.Tensor:
        """log NIG_z(x) - log Poisson_z(x) per sample (both kernels centred at 0, normalised; 0 for 'nig').

        log NIG = log 2 + m z - ((N+1)/2) log(2 pi / m) + log z - ((N+1)/2) log R + log K_{(N+1)/2}(m R),
        log Poisson = lgamma((N+1)/2) - ((N+1)/2) log pi + log z - (N + 1) log R, with R^2 = |x|^2 + z^2.
        """
        flat = x.reshape(x.shape[0], -1).to(torch.float64)
        if self.proposal == "nig":
            return torch.zeros(flat.shape[0], dtype=torch.float64, device=flat.device)
        N = flat.shape[1]
        nu = 0.5 * (N + 1)
        R = torch.sqrt((flat**2).sum(1) + z * z)
        log_k, _ = log_bessel_k(N + 1, self.m * R)
        log_nig = math.log(2.0) + self.m * z - nu * math.log(2 * math.pi / self.m) - nu * torch.log(R) + log_k
        log_poisson = math.lgamma(nu) - nu * math.log(math.pi) - (N + 1) * torch.log(R)
        return log_nig - log_poisson

    # --- oracles ----------------------------------------------------------------------------
    def point_set_denoiser(self, points: torch.Tensor):
        """The exact E[y | x, z] (and kappa) of the empirical law of ``points`` (Bessel-function weights)."""
        return YukawaPointSet(points, self.m)

    def config(self) -> dict[str, Any]:
        return {"name": "yukawa", "m": self.m, "z_min": self.z_min, "z_max": self.z_max,
                "P_mean": self.P_mean, "P_std": self.P_std, "proposal": self.proposal}
