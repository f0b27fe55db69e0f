"""The solver registry: every sampler declares its name, order, NFE law and validated options.

A solver is registered with :func:`register` around a *step function*
``step(ctx, x, i) -> x`` that advances the state from ``sigmas[i]`` to ``sigmas[i+1]``;
the one loop that drives every solver lives in :func:`sampler_bench.solvers.driver.integrate`.
Solvers that cannot be written as steps (an adaptive reference integrator) register a
``run(ctx, x) -> x`` instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from ..options import Option, OptionError, SolverOptionError, closest  # noqa: F401  re-exported

#: Processes whose probability-flow ODE is dx/dsigma = (x - D)/sigma (every isotropic kernel).
ODE_PROCESSES = ("gaussian", "pfgmpp")
#: Processes with a Gaussian kernel, hence a reverse SDE (score = (D - x)/sigma^2).
SDE_PROCESSES = ("gaussian",)


NfeLaw = Callable[[int, bool, Mapping[str, Any]], int]


@dataclass(frozen=True)
class SolverInfo:
    """What a registered solver promises.

    ``order`` is the theoretical global order of the default configuration (weak order for
    stochastic samplers); ``nfe(steps, ends_at_zero, options)`` the exact number of denoiser
    evaluations for a grid of ``steps`` intervals; ``min_steps(options)`` the fewest steps the
    solver accepts; ``steps_for_nfe`` (optional) maps a budget to ``(steps, option updates)``
    when the NFE law is not a simple function of the step count (DPM-Solver-fast); ``plan_grid``
    (optional) ``(schedule, build, steps, ends_at_zero, options, given) -> (sigmas, option updates)``
    builds the planned grid itself when the solver's reference does not simply take ``steps`` levels
    of the schedule (``build(n)`` is the schedule with n steps; ``given`` the caller's options).
    """

    name: str
    order: int
    stochastic: bool
    description: str
    paper: str
    nfe_per_step: int
    options: Mapping[str, Option]
    nfe: NfeLaw
    processes: tuple[str, ...]
    step: Callable | None = None
    run: Callable | None = None
    init: Callable | None = None
    min_steps: Callable[[Mapping[str, Any]], int] = lambda opts: 1
    steps_for_nfe: Callable | None = None
    plan_grid: Callable | None = None
    order_of: Callable[[Mapping[str, Any]], int] | None = None
    family: str = ""
    adaptive: bool = False
    aliases: tuple[str, ...] = field(default_factory=tuple)

    def validate(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """Defaults filled in, every value checked; unknown names rejected with a suggestion."""
        out = {}
        for key in options:
            if key not in self.options:
                allowed = ", ".join(sorted(self.options)) or "none"
                raise SolverOptionError(
                    f"solver {self.name!r} has no option {key!r}{closest(key, list(self.options))}; "
                    f"its options are: {allowed}"
                )
        for key, opt in self.options.items():
            out[key] = opt.validate(self.name, key, options[key]) if key in options else opt.default
        return out

    def order_for(self, options: Mapping[str, Any]) -> int:
        """Theoretical order of this solver with the given (validated) options."""
        return self.order_of(options) if self.order_of is not None else self.order


_REGISTRY: dict[str, SolverInfo] = {}


def register(
    name: str,
    *,
    order: int,
    paper: str,
    description: str,
    nfe_per_step: int = 1,
    stochastic: bool = False,
    options: Mapping[str, Option] | None = None,
    nfe: NfeLaw | None = None,
    processes: Sequence[str] | None = None,
    init: Callable | None = None,
    min_steps: Callable | None = None,
    steps_for_nfe: Callable | None = None,
    plan_grid: Callable | None = None,
    order_of: Callable | None = None,
    kind: str = "step",
    adaptive: bool = False,
):
    """Decorator: register a step function (``kind='step'``) or a whole run (``kind='run'``).

    ``nfe`` defaults to the law of a k-stage singlestep solver whose final step to sigma=0 is a
    single evaluation: ``k*steps - (k-1)`` when the grid ends at 0, else ``k*steps``.
    """

    if name in _REGISTRY:
        raise RuntimeError(f"solver {name!r} registered twice")
    k = nfe_per_step

    def default_nfe(steps: int, ends_at_zero: bool, opts) -> int:
        return k * steps - ((k - 1) if ends_at_zero else 0)

    def wrap(fn):
        info = SolverInfo(
            name=name,
            order=order,
            stochastic=stochastic,
            description=description,
            paper=paper,
            nfe_per_step=nfe_per_step,
            options=dict(options or {}),
            nfe=nfe or default_nfe,
            processes=tuple(processes or (SDE_PROCESSES if stochastic else ODE_PROCESSES)),
            step=fn if kind == "step" else None,
            run=fn if kind == "run" else None,
            init=init,
            min_steps=min_steps or (lambda opts: 1),
            steps_for_nfe=steps_for_nfe,
            plan_grid=plan_grid,
            order_of=order_of,
            adaptive=adaptive,
            family=fn.__module__.rsplit(".", 1)[-1],
        )
        _REGISTRY[name] = info
        fn.info = info
        return fn

    return wrap


def available() -> list[str]:
    """Names of every registered solver, sorted."""
    return sorted(_REGISTRY)


def info(name: str) -> SolverInfo:
    """The :class:`SolverInfo` of a registered solver; ValueError with a suggestion otherwise."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise SolverOptionError(
            f"unknown solver {name!r}{closest(name, available())}; "
            f"run `sampler-bench list` to see the {len(_REGISTRY)} registered solvers"
        ) from None
