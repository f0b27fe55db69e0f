"""The one sampling loop shared by every solver, the denoiser wrapper that counts NFE, and ``sample``.

Conventions (docs/notation.md, "The public API"): ``denoiser(x, sigma)`` with ``sigma`` of shape ``[B]``
returns E[x0 | x]; ``sigmas`` is 1-D, strictly decreasing, float64; a trailing 0 means the
sampler ends with its reference code's denoise to 0, a positive last value means it stops there.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch

from . import noise as _noise
from .history import History
from .output import OUTPUT, denoised as _denoised_output
from .registry import SolverOptionError, check_applies, info as solver_info


class NonFiniteSampleError(RuntimeError):
    """A NaN or Inf appeared in the state; names the solver, the step and the NFE so far."""

    def __init__(self, solver: str, step: int, steps: int, nfe: int, sigma: float):
        self.solver, self.step, self.steps, self.nfe, self.sigma = solver, step, steps, nfe, sigma
        super().__init__(
            f"solver {solver!r} produced NaN/Inf at step {step + 1} of {steps} "
            f"(sigma {sigma:.4g}, after {nfe} denoiser evaluations)"
        )


class CountingDenoiser:
    """Wraps ``denoiser(x, sigma[B])``; accepts a Python float sigma; counts every call.

    NFE is *counted* here, never inferred from loop lengths (docs/notation.md, "Counting NFE").
    ``seconds`` accumulates wall time inside the denoiser when ``timed`` (for the sweep's
    fraction-of-time-in-denoiser figure); timing synchronises CUDA so it is off by default.
    """

    def __init__(self, denoiser: Callable, timed: bool = False):
        self.denoiser = denoiser
        self.nfe = 0
        self.timed = timed
        self.seconds = 0.0
        #: ``watch(x, sigma, out)`` sees every evaluation (a trajectory recorder); None on the default path
        self.watch = None
        #: what a solver records about its run besides samples (e.g. Yukawa SMC's resampling events);
        #: the sweep stores it with the cell's values
        self.notes: dict[str, Any] = {}

    def with_rate(self, x: torch.Tensor, sigma: float | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(D, kappa) from one evaluation of a model with a birth/death-rate head (Yukawa), counted as one NFE.

        The model's ``denoise_with_rate(x, sigma[B])`` returns E[x0 | x] shaped like ``x`` and the rate [B].
        """
        if isinstance(sigma, torch.Tensor) and sigma.ndim == 1:
            s = sigma.to(device=x.device, dtype=x.dtype)
        else:
            s = torch.full((x.shape[0],), float(sigma), device=x.device, dtype=x.dtype)
        self.nfe += 1
        if self.timed and x.is_cuda:
            torch.cuda.synchronize(x.device)
        import time

        t0 = time.perf_counter()
        D, rate = self.denoiser.denoise_with_rate(x, s)
        if self.timed:
            if x.is_cuda:
                torch.cuda.synchronize(x.device)
            self.seconds += time.perf_counter() - t0
        D = self._checked(x, D)
        if not isinstance(rate, torch.Tensor) or rate.shape != (x.shape[0],):
            raise DenoiserOutputError(f"denoise_with_rate returned a rate of shape {list(getattr(rate, 'shape', []))} "
                                      f"for {x.shape[0]} states; it must return one rate per sample, shape [{x.shape[0]}]")
        return D, rate

    def __call__(self, x: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
        if isinstance(sigma, torch.Tensor) and sigma.ndim == 1:
            s = sigma.to(device=x.device, dtype=x.dtype)
        else:
            s = torch.full((x.shape[0],), float(sigma), device=x.device, dtype=x.dtype)
        self.nfe += 1
        if not self.timed:
            out = self._checked(x, self.denoiser(x, s))
        else:
            import time

            if x.is_cuda:
                torch.cuda.synchronize(x.device)
            t0 = time.perf_counter()
            out = self.denoiser(x, s)
            if x.is_cuda:
                torch.cuda.synchronize(x.device)
            self.seconds += time.perf_counter() - t0
            out = self._checked(x, out)
        if self.watch is not None:
            self.watch(x, s, out)
        return out

    def _checked(self, x: torch.Tensor, out) -> torch.Tensor:
        """``out`` if it has the shape of ``x``. A [B, 1], [1, D] or scalar output would broadcast through
        the update rules into a wrong state without any error ([1, D] even collapses the batch onto one
        sample), so it is refused at the first call, naming the shapes (a comparison of two tuples)."""
        if not isinstance(out, torch.Tensor):
            raise DenoiserOutputError(f"the denoiser returned a {type(out).__name__}, not a tensor; "
                                      f"denoiser(x, sigma) must return a tensor shaped like x {list(x.shape)}")
        if out.shape != x.shape:
            raise DenoiserOutputError(
                f"the denoiser returned shape {list(out.shape)} for x of shape {list(x.shape)}; denoiser(x, sigma) "
                "must return E[x0 | x] with the shape of x (no broadcasting: one row per sample)")
        return out


class DenoiserOutputError(ValueError):
    """The denoiser broke its contract (docs/notation.md, "The public API"): an output not shaped like its input."""


#: How many per-grid coefficient sets :meth:`Context.cached` keeps (least recently used dropped first).
#: A sweep needs a handful at a time (one per solver x budget it is running); each is a few KB.
COEFFICIENT_CACHE_SIZE = 256
_COEFFICIENTS: OrderedDict[tuple, Any] = OrderedDict()
_COEFFICIENTS_LOCK = threading.Lock()
_COEFFICIENT_STATS = {"hits": 0, "misses": 0}


def _frozen(value: Any) -> Any:
    """A hashable, value-equal form of an option value or cache key (dicts sorted, sequences as tuples)."""
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), _frozen(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(v) for v in value)
    if isinstance(value, torch.Tensor):
        return ("tensor", str(value.dtype), tuple(value.shape), tuple(value.detach().cpu().flatten().tolist()))
    hash(value)  # TypeError for anything else unhashable: a key must say what the coefficients depend on
    return value


def clear_coefficient_cache() -> None:
    """Forget every cached coefficient set (tests; or after changing a solver's code in a session)."""
    with _COEFFICIENTS_LOCK:
        _COEFFICIENTS.clear()
        _COEFFICIENT_STATS.update(hits=0, misses=0)


def coefficient_cache_info() -> dict[str, int]:
    """``{"hits", "misses", "size", "max_size"}`` of the per-grid coefficient cache."""
    with _COEFFICIENTS_LOCK:
        return {**_COEFFICIENT_STATS, "size": len(_COEFFICIENTS), "max_size": COEFFICIENT_CACHE_SIZE}


@dataclass
class Context:
    """Everything a step function needs: ``history`` holds a multistep solver's past model values,
    ``state`` its per-run plan (coefficients, orders) and other scratch."""

    name: str
    model: CountingDenoiser
    sigmas: list[float]
    options: dict[str, Any]
    generator: Any = None
    noise_source: Any = None
    state: dict[str, Any] = field(default_factory=dict)
    #: past model values of a multistep solver, newest first (:class:`~sampler_bench.solvers.history.History`)
    history: History = field(default_factory=History)
    #: this run's view of the coefficient cache (``key`` -> value), so step-time lookups skip the grid hash
    memo: dict[Any, Any] = field(default_factory=dict, repr=False)
    #: a :class:`~.trajectory.TrajectoryRecorder` that sees every grid level the loop visits (None: not recorded)
    trajectory: Any = None

    @property
    def steps(self) -> int:
        return len(self.sigmas) - 1

    def cached(self, key: Any, compute: Callable[[], Any]) -> Any:
        """``compute()``, run once per (solver, grid, options, ``key``) and shared by every later run.

        For per-grid coefficients (DEIS/UniPC/ER-SDE integrals, Lagrange integrals, phi-functions):
        a sweep runs the same solver on the same grid batch after batch, so they are computed once
        per (schedule, solver), never per batch or per sample. ``compute`` may depend only on the
        solver, ``self.sigmas``, ``self.options`` and whatever ``key`` names (e.g. a process's
        parameters); it must not depend on the state (return Python floats or CPU float64 tensors,
        and move them to the state's device in the step). The value is shared: treat it as read-only.
        """
        try:
            return self.memo[key]
        except (KeyError, TypeError):  # TypeError: an unhashable key; _frozen below makes it hashable
            pass
        full = (self.name, tuple(self.sigmas), _frozen(self.options), _frozen(key))
        value = self._shared(full, compute)
        try:
            self.memo[key] = value
        except TypeError:
            pass
        return value

    @staticmethod
    def _shared(full: tuple, compute: Callable[[], Any]) -> Any:
        with _COEFFICIENTS_LOCK:
            if full in _COEFFICIENTS:
                _COEFFICIENTS.move_to_end(full)
                _COEFFICIENT_STATS["hits"] += 1
                return _COEFFICIENTS[full]
        value = compute()  # outside the lock: a compute() may itself use the cache
        with _COEFFICIENTS_LOCK:
            _COEFFICIENT_STATS["misses"] += 1
            _COEFFICIENTS[full] = value
            _COEFFICIENTS.move_to_end(full)
            while len(_COEFFICIENTS) > COEFFICIENT_CACHE_SIZE:
                _COEFFICIENTS.popitem(last=False)
        return value

    def noise(self, x: torch.Tensor, i: int, sigma: float | None = None, sigma_next: float | None = None):
        """Standard normal noise for the interval (sigma, sigma_next) of step ``i``.

        With the default source the draw comes from the caller's generator(s); a Brownian
        source (option ``noise='brownian'``) returns the normalised Brownian increment over the
        interval instead, consistent across step grids.
        """
        if self.noise_source is not None:
            a = self.sigmas[i] if sigma is None else sigma
            b = self.sigmas[i + 1] if sigma_next is None else sigma_next
            return self.noise_source(a, b)
        return _noise.randn_like(x, self.generator)


def as_sigma_grid(sigmas) -> torch.Tensor:
    """Validate a noise-level grid: 1-D, >= 2 values, finite, strictly decreasing, >= 0."""
    if isinstance(sigmas, (str, bytes)):
        raise ValueError(f"sigmas must be a 1-D sequence of noise levels, got the string {sigmas!r}")
    try:
        t = torch.as_tensor(sigmas, dtype=torch.float64).detach().cpu()
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"sigmas must be a 1-D sequence of noise levels, got {type(sigmas).__name__}") from None
    if t.ndim != 1 or t.numel() < 2:
        raise ValueError(f"sigmas must be a 1-D sequence of at least 2 noise levels, got shape {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise ValueError("sigmas contains NaN or Inf")
    if (t[:-1] <= 0).any() or t[-1] < 0:
        raise ValueError("sigmas must be positive (only the last value may be 0)")
    if not (t[1:] < t[:-1]).all():
        raise ValueError("sigmas must be strictly decreasing (from sigma_max down to sigma_min or 0)")
    return t


def all_finite(x: torch.Tensor) -> bool:
    """True when ``x`` has no NaN/Inf.

    A NaN or Inf anywhere makes the sum non-finite, and one reduction plus one scalar read is
    several times cheaper per step than ``isfinite(x).all()``; only when the sum is not finite
    (which an overflowing sum of huge finite values can also cause) is the exact check run.
    """
    if math.isfinite(x.sum().item()):
        return True
    return bool(torch.isfinite(x).all())


def integrate(ctx: Context, x: torch.Tensor, step: Callable, check_finite: bool = True,
              stop: int | None = None) -> torch.Tensor:
    """Advance ``x`` through the intervals of ``ctx.sigmas`` with ``step(ctx, x, i)``, up to level ``stop``
    (default: the last); a trajectory recorder in ``ctx.trajectory`` is shown every level reached."""
    stop = ctx.steps if stop is None else stop
    record = ctx.trajectory
    for i in range(stop):
        if record is not None:
            record.visit(ctx.sigmas[i], x)
        x = step(ctx, x, i)
        if check_finite and not all_finite(x):
            raise NonFiniteSampleError(ctx.name, i, ctx.steps, ctx.model.nfe, ctx.sigmas[i + 1])
    if record is not None:
        record.visit(ctx.sigmas[stop], x)
    return x


def run_solver(
    name: str,
    model: CountingDenoiser,
    x: torch.Tensor,
    sigmas,
    *,
    generator=None,
    check_finite: bool = True,
    options: dict[str, Any] | None = None,
    trajectory=None,
) -> torch.Tensor:
    """Validate everything, then run solver ``name`` with an already-wrapped denoiser.

    Runs under ``torch.no_grad()`` (as k-diffusion's samplers do), so a raw ``nn.Module`` passed as
    the denoiser does not build an autograd graph across every step. ``trajectory``: a
    :class:`~.trajectory.TrajectoryRecorder` to record the sampling and denoising trajectories (step
    solvers only).
    """
    with torch.no_grad():
        return _run_solver(name, model, x, sigmas, generator=generator, check_finite=check_finite, options=options,
                           trajectory=trajectory)


def _run_solver(name, model, x, sigmas, *, generator, check_finite, options, trajectory=None) -> torch.Tensor:
    meta = solver_info(name)
    # The model's process decides which solvers apply (a CLD model refuses heun, finite-D PFGM++ every SDE).
    check_applies(name, getattr(model, "denoiser", model))
    opts = meta.validate(options or {})
    grid = as_sigma_grid(sigmas)
    if not isinstance(x, torch.Tensor) or x.ndim < 1 or x.shape[0] < 1:
        raise ValueError("x must be a tensor of shape [B, ...] with B >= 1")
    if not x.is_floating_point():
        raise ValueError(f"x must be a floating-point tensor, got {x.dtype}")
    steps = grid.numel() - 1
    need = meta.min_steps(opts)
    if steps < need:
        raise SolverOptionError(
            f"solver {name!r} with these options needs at least {need} steps "
            f"({meta.nfe(need, bool(grid[-1] == 0), opts)} NFE); the grid has {steps}"
        )
    _noise.check_generator(generator, x.shape[0])
    # ``output`` is handled here, around the solver: its steps, coefficients and caches never see it
    jump = _denoised_output(opts)
    opts.pop(OUTPUT, None)
    ends_at_zero = bool(grid[-1] == 0)
    if meta.run is not None and (trajectory is not None or (jump and ends_at_zero)):
        what = ("its trajectory cannot be recorded" if trajectory is not None else
                "output='denoised' needs a grid whose last level is above 0 (ends_at_zero = false)")
        raise SolverOptionError(f"solver {name!r} integrates the whole grid in one adaptive run, so {what}")
    ctx = Context(name=name, model=model, sigmas=grid.tolist(), options=opts, generator=generator,
                  trajectory=trajectory)
    # Stochastic solvers declare a shared `noise` option (noise.stochastic_options); 'brownian' swaps
    # the per-step generator draws for increments of a Brownian path per sample.
    ctx.noise_source = _noise.noise_source(opts.get("noise"), x, ctx.sigmas, generator)
    if meta.init is not None:
        meta.init(ctx, x)
    if trajectory is not None:
        trajectory.attach(model)
    if meta.run is not None:
        out = meta.run(ctx, x)
        if check_finite and not all_finite(out):
            raise NonFiniteSampleError(name, steps - 1, steps, model.nfe, ctx.sigmas[-1])
    else:  # with output='denoised' on a grid ending at 0 the loop stops before the solver's final step
        stop = steps - 1 if (jump and ends_at_zero) else steps
        out = integrate(ctx, x, meta.step, check_finite=check_finite, stop=stop)
    if jump:  # Chen et al. 2023 (arXiv 2305.19947) Sec. 3.2: the denoising trajectory's point at the last level
        out = model(out, ctx.sigmas[stop if meta.run is None else steps])
        if check_finite and not all_finite(out):
            raise NonFiniteSampleError(name, steps - 1, steps, model.nfe, ctx.sigmas[-1])
    if trajectory is not None:
        trajectory.finish(out)
    return out


def sample(name: str, denoiser: Callable, x: torch.Tensor, sigmas, *, generator=None, **options) -> torch.Tensor:
    """Run sampler ``name`` from ``x`` (the state at ``sigmas[0]``) down the grid ``sigmas``.

    ``options`` are the solver's own keywords (``sampler-bench list`` shows them); an unknown
    option or a bad value raises ValueError naming the solver, the option and what is allowed.
    """
    return run_solver(name, CountingDenoiser(denoiser), x, sigmas, generator=generator, options=options)
