"""One interface for the physical processes that share the ODE dx/dsigma = (x - D(x, sigma))/sigma.

Every process here is "data (+) an isotropic kernel family indexed by the noise level sigma"
(docs/processes.md). What differs between them, and so what a
:class:`Process` declares:

* ``sample_sigma``      -- the training law of the noise level (EDM: ln sigma ~ N(P_mean, P_std^2));
* ``noise``/``perturb`` -- a draw x ~ p_sigma(x | y) of the perturbation kernel;
* ``loss_weight``       -- lambda(sigma) of the denoising loss lambda |D(x, sigma) - y|^2;
* ``prior``             -- the starting law at ``sigma_max`` (the kernel centred at 0);
* ``point_set_denoiser``-- the exact E[y | x] of a finite point set under this kernel (a test oracle);
* ``kind`` / ``has_reverse_sde`` -- ``'gaussian'`` kernels have a reverse SDE (score = (D - x)/sigma^2),
  others (finite-D PFGM++) only the probability-flow ODE, so sweeps skip stochastic samplers there.

Processes are plain data: ``config()`` round-trips through
:func:`sampler_bench.processes.catalog.process_from_config`, which is how a checkpoint's JSON names its process.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any, Callable, Sequence

import torch

from ..rng import Generators, check_generator, randn_like
from .kind import ProcessKind  # noqa: F401  (the type of Process.traits)


def standard_normal(n: int, generator: Generators) -> torch.Tensor:
    """n standard normals in float64; with a list of generators, draw i uses generator i only."""
    if generator is None or isinstance(generator, torch.Generator):
        return torch.randn(n, generator=generator, dtype=torch.float64,
                           device=generator.device if generator is not None else "cpu")
    check_generator(generator, n)
    return torch.stack([torch.randn((), generator=g, dtype=torch.float64, device=g.device) for g in generator]).cpu()


def per_sample_gamma(concentration: float, n: int, generator: Generators) -> torch.Tensor:
    """n draws of Gamma(concentration, 1) in float64 (per-sample generators supported)."""
    if generator is None or isinstance(generator, torch.Generator):
        device = generator.device if generator is not None else "cpu"
        a = torch.full((n,), float(concentration), dtype=torch.float64, device=device)
        return torch._standard_gamma(a, generator=generator).cpu()
    check_generator(generator, n)
    return torch.stack([
        torch._standard_gamma(torch.full((1,), float(concentration), dtype=torch.float64, device=g.device), generator=g)[0]
        for g in generator
    ]).cpu()


def _sigma_vector(sigma, n: int) -> torch.Tensor:
    s = torch.as_tensor(sigma, dtype=torch.float64).detach().cpu()
    if s.ndim == 0:
        s = s.expand(n)
    if s.shape != (n,):
        raise ValueError(f"sigma must be a scalar or have one value per sample ({n}), got shape {tuple(s.shape)}")
    return s


class Process(ABC):
    """A perturbation kernel family indexed by sigma, with its training law and prior."""

    #: short name in specs and checkpoints ('edm', 've', 'vp', 'pfgmpp')
    name: str = ""
    #: the ``Model.process`` value sweeps gate solvers on: 'gaussian' or 'pfgmpp' (``traits.name``)
    kind: str = "gaussian"
    #: what samplers may assume (:class:`~sampler_bench.processes.kind.ProcessKind`), set by each subclass
    traits: "ProcessKind"
    has_reverse_sde: bool = True

    def __init__(self, sigma_min: float, sigma_max: float):
        for label, v in (("sigma_min", sigma_min), ("sigma_max", sigma_max)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise ValueError(f"process {self.name!r}: {label} must be a positive number, got {v!r}")
        if sigma_min >= sigma_max:
            raise ValueError(f"process {self.name!r}: sigma_min ({sigma_min}) must be below sigma_max ({sigma_max})")
        self.sigma_min = float(sigma_min)
        self.sigma_max = float(sigma_max)

    # --- training ---------------------------------------------------------------------------
    @abstractmethod
    def sample_sigma(self, n: int, generator: Generators = None) -> torch.Tensor:
        """n training noise levels (float64, on the CPU)."""

    @abstractmethod
    def loss_weight(self, sigma: torch.Tensor, sigma_data: float) -> torch.Tensor:
        """lambda(sigma) of the loss lambda(sigma) |D(x, sigma) - y|^2."""

    @abstractmethod
    def noise(self, shape: Sequence[int], sigma, generator: Generators = None) -> torch.Tensor:
        """x - y for x ~ p_sigma(x | y): float64, ``shape = [n, ...]``, one sigma per sample."""

    def perturb(self, y: torch.Tensor, sigma, generator: Generators = None) -> torch.Tensor:
        """x ~ p_sigma(x | y), in the dtype and on the device of ``y``."""
        n = self.noise(y.shape, sigma, generator)
        return (y.to(torch.float64) + n.to(y.device)).to(y.dtype)

    # --- sampling ---------------------------------------------------------------------------
    def prior(self, n: int, shape: Sequence[int], generator: Generators = None, *, sigma: float | None = None,
              dtype: torch.dtype = torch.float64, device=None) -> torch.Tensor:
        """n starting states at ``sigma`` (default ``sigma_max``): the kernel centred at 0."""
        s = self.sigma_max if sigma is None else float(sigma)
        out = self.noise((n, *shape), s, generator)
        return out.to(dtype=dtype, device=device or "cpu")

    @abstractmethod
    def point_set_denoiser(self, points: torch.Tensor) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """The exact E[y | x] of the empirical distribution of ``points`` under this kernel."""

    # --- bookkeeping ------------------------------------------------------------------------
    @abstractmethod
    def config(self) -> dict[str, Any]:
        """JSON-able parameters; ``catalog.process_from_config(p.config())`` rebuilds ``p``."""

    def describe(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.config().items())

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.describe()})"

    def __eq__(self, other) -> bool:
        return isinstance(other, Process) and self.config() == other.config()

    def __hash__(self) -> int:
        return hash(tuple(sorted((k, str(v)) for k, v in self.config().items())))


def gaussian_noise(shape: Sequence[int], sigma, generator: Generators) -> torch.Tensor:
    """sigma * n with n ~ N(0, I), drawn by :func:`sampler_bench.solvers.noise.randn_like` (float64 result)."""
    shape = tuple(int(s) for s in shape)
    sig = _sigma_vector(sigma, shape[0]).reshape(-1, *([1] * (len(shape) - 1)))
    z = randn_like(torch.empty(shape, dtype=torch.float64), generator)
    return sig * z
