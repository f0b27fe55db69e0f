"""The interface of a *schedule that needs the model*: an optimiser of the noise levels of one sampler
at one budget (docs/schedule_optimisers.md).

An optimiser gets an :class:`Problem` (the model, the sampler and its validated options, the number
of steps its budget buys, the sigma range) and its own parameters, and returns the noise levels in the
convention of :mod:`..schedules` (``steps`` positive levels from ``sigma_max`` down to ``sigma_min``
followed by 0, or ``steps + 1`` positive levels when the grid does not end at zero) together with what
finding them cost (:class:`Cost`: denoiser evaluations *counted*, wall time, warm-up samples used).

Honest protocol, by construction: the warm-up samples an optimiser draws come from the *optimisation
seed namespace*, seeds ``OPTIMISATION_SEED_BASE + seed + j`` with ``OPTIMISATION_SEED_BASE = 2**63``,
while a sweep's evaluation seeds are stored as signed 64-bit integers and so are at most ``2**63 - 1``:
no optimisation sample can share a seed with an evaluated sample, whatever the spec's seeds.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from ...processes.catalog import process_kind
from ...rng import generators_for
from ..driver import CountingDenoiser
from ..registry import info as solver_info

#: The first optimisation seed. Evaluation seeds are signed 64-bit (<= 2**63 - 1, bench/spec.py MAX_SEED);
#: torch.Generator takes unsigned 64-bit seeds, so [2**63, 2**64) is a namespace evaluation cannot reach.
OPTIMISATION_SEED_BASE = 2**63
#: The largest ``seed`` parameter of an optimiser, and the most warm-up samples: seed + j stays below 2**63.
MAX_OPTIMISATION_SEED = 2**62
MAX_WARMUP = 2**20


class OptimiserError(ValueError):
    """An optimiser cannot run on this input (a model without what it needs, a bad parameter)."""


def optimisation_seeds(seed: int, n: int) -> list[int]:
    """The torch seeds of warm-up samples ``0..n-1`` under optimisation seed ``seed`` (all >= 2**63)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_OPTIMISATION_SEED:
        raise OptimiserError(f"the optimisation seed must be an integer in [0, {MAX_OPTIMISATION_SEED}], got {seed!r}")
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_WARMUP:
        raise OptimiserError(f"the number of warm-up samples must be an integer in [1, {MAX_WARMUP}], got {n!r}")
    return [OPTIMISATION_SEED_BASE + seed + j for j in range(n)]


@dataclass
class Cost:
    """What an optimisation spent: ``nfe`` denoiser calls (batched; one call evaluates every warm-up
    sample once), ``sample_evaluations`` (the sum over calls of the batch size), ``wall_s`` seconds and
    ``samples`` warm-up samples (their seeds: ``seeds``, a [first, last] range)."""

    nfe: int = 0
    sample_evaluations: int = 0
    wall_s: float = 0.0
    samples: int = 0
    seeds: list[int] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"nfe": self.nfe, "sample_evaluations": self.sample_evaluations, "wall_s": self.wall_s,
                "samples": self.samples, "seeds": list(self.seeds)}


class CountingModel(CountingDenoiser):
    """A :class:`CountingDenoiser` that also counts sample evaluations (calls times batch size)."""

    def __init__(self, denoiser: Callable):
        super().__init__(denoiser)
        self.sample_evaluations = 0

    def __call__(self, x, sigma):
        self.sample_evaluations += int(x.shape[0])
        return super().__call__(x, sigma)


@dataclass
class Problem:
    """One schedule to optimise: ``model`` (the denoiser with ``prior``, ``process``), ``solver`` with its
    validated ``options``, ``steps`` solver steps, the range [``sigma_min``, ``sigma_max``], whether the
    grid ends at 0, and where and in which precision the warm-up runs."""

    model: Any
    solver: str
    options: dict
    steps: int
    sigma_min: float
    sigma_max: float
    ends_at_zero: bool = True
    device: str = "cpu"
    dtype: torch.dtype = torch.float64
    #: filled by :func:`run`: the counted model and the cost
    counted: CountingModel | None = None
    cost: Cost = field(default_factory=Cost)

    @property
    def n_levels(self) -> int:
        """How many positive levels the grid holds (sigma_max and sigma_min included)."""
        return self.steps if self.ends_at_zero else self.steps + 1

    def finish(self, positive: torch.Tensor) -> torch.Tensor:
        """The grid from its positive levels: pinned ends, checked strictly decreasing, 0 appended."""
        levels = torch.as_tensor(positive, dtype=torch.float64).clone()
        if levels.numel() != self.n_levels:
            raise AssertionError(f"an optimiser returned {levels.numel()} positive levels, not {self.n_levels}")
        levels[0] = self.sigma_max
        if levels.numel() > 1:
            levels[-1] = self.sigma_min
        if not (levels[1:] < levels[:-1]).all():
            raise AssertionError(f"an optimiser returned levels that are not strictly decreasing: {levels.tolist()}")
        return torch.cat([levels, levels.new_zeros(1)]) if self.ends_at_zero else levels

    def warmup_states(self, seed: int, n: int) -> torch.Tensor:
        """``n`` starting states at ``sigma_max`` drawn from the model's prior with the optimisation seeds
        (never a cell's evaluation seeds); their seeds are recorded in the cost."""
        seeds = optimisation_seeds(seed, n)
        prior = getattr(self.model, "prior", None)
        if prior is None:
            raise OptimiserError("the model has no prior(n, generator) to draw warm-up samples from")
        x = prior(n, generator=generators_for(seeds, self.device)).to(device=self.device, dtype=torch.float64)
        if self.sigma_max != float(self.model.sigma_max):  # Gaussian prior: rescaling is exact (bench/states.py)
            x = x * (self.sigma_max / float(self.model.sigma_max))
        self.cost.samples += n
        self.cost.seeds = [seeds[0], seeds[-1]] if not self.cost.seeds else [self.cost.seeds[0], max(self.cost.seeds[1], seeds[-1])]
        return x.to(self.dtype)


@dataclass(frozen=True)
class Optimiser:
    """A registered optimiser: ``run(problem, **params) -> positive levels``; ``defaults`` its parameters
    (the paper's, where it has them); ``needs_model``: whether it evaluates the denoiser at all."""

    name: str
    run: Callable[..., torch.Tensor]
    defaults: dict
    description: str
    paper: str
    needs_model: bool = True
    #: whether the levels depend on the sampler (its name and options are then part of the cache key)
    uses_solver: bool = True
    #: what else the model must provide: model -> None, or why it cannot serve (one sentence)
    requires: Callable[[Any], str | None] | None = None
    #: which samplers it can optimise for: (solver, validated options) -> None, or why not (one sentence);
    #: a sweep stores a cell it refuses as skipped with that sentence, before any work
    supports: Callable[[str, dict], str | None] | None = None
    #: bumped when the algorithm changes, so stored cells and cached schedules of the old one are not reused
    version: int = 1
    #: checks of a parameter value: name -> (predicate, what is allowed)
    checks: dict = field(default_factory=dict)

    def params(self, given: dict) -> dict:
        unknown = sorted(set(given) - set(self.defaults))
        if unknown:
            raise OptimiserError(f"optimised schedule {self.name!r} has no parameter {unknown[0]!r}; "
                                 f"its parameters: {', '.join(sorted(self.defaults))}")
        params = {**self.defaults, **given}
        for k, (ok, allowed) in self.checks.items():
            v = params[k]
            if not ok(v):
                raise OptimiserError(f"optimised schedule {self.name!r}: parameter {k} = {v!r} must be {allowed}")
        return params

    def applies(self, model) -> str | None:
        """None when this optimiser can work on ``model``, else why not (one sentence)."""
        try:
            kind = process_kind(str(getattr(model, "process", "gaussian")))
        except ValueError as e:
            return str(e)
        if kind.time_variable != "sigma" or kind.data_channel is not None:
            return (f"optimised schedule {self.name!r} places noise levels sigma of a state that is the data; "
                    f"the {kind.name} process runs on {kind.time_variable} with state {kind.state!r}: use a fixed "
                    "schedule for this model")
        if self.needs_model and getattr(model, "prior", None) is None:
            return f"optimised schedule {self.name!r} draws warm-up samples, but the model has no prior(n, generator)"
        return self.requires(model) if self.requires is not None else None


def run(optimiser: Optimiser, problem: Problem, params: dict) -> tuple[torch.Tensor, Cost]:
    """The optimised grid of ``problem`` and its counted :class:`Cost`."""
    why = optimiser.applies(problem.model)
    if why is not None:
        raise OptimiserError(why)
    params = optimiser.params(params)
    problem.options = solver_info(problem.solver).validate(problem.options)
    problem.counted = CountingModel(problem.model)
    problem.cost = Cost()
    t0 = time.perf_counter()
    if problem.n_levels <= 2:  # nothing to choose: both positive levels are pinned
        levels = torch.tensor([problem.sigma_max, problem.sigma_min][: problem.n_levels], dtype=torch.float64)
    else:
        levels = optimiser.run(problem, **params)
    grid = problem.finish(levels)
    problem.cost.wall_s = time.perf_counter() - t0
    problem.cost.nfe = problem.counted.nfe
    problem.cost.sample_evaluations = problem.counted.sample_evaluations
    return grid, dataclasses.replace(problem.cost, seeds=list(problem.cost.seeds))  # a later draw does not change it


def positive_int(low: int = 1, high: int = 10**6):
    return (lambda v: isinstance(v, int) and not isinstance(v, bool) and low <= v <= high,
            f"an integer in [{low}, {high}]")


def positive_number(low: float = 0.0, high: float = math.inf):
    return (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and low < v <= high,
            f"a number in ({low:g}, {high:g}]")
