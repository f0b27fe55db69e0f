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
from ..processes.catalog import KINDS, process_kind
from ..processes.kind import GAUSSIAN_REVERSE_SDE, PROBABILITY_FLOW_ODE, ProcessKind
from .output import COMMON_OPTIONS, OUTPUT, with_output_min_steps, with_output_nfe

#: What a solver needs unless it says otherwise: a deterministic one, the probability-flow ODE in sigma
#: (Gaussian and PFGM++ kernels); a stochastic one, also the Gaussian reverse SDE (Gaussian kernels only).
ODE_NEEDS = frozenset({PROBABILITY_FLOW_ODE})
SDE_NEEDS = frozenset({PROBABILITY_FLOW_ODE, GAUSSIAN_REVERSE_SDE})


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
    of the schedule (``build(n)`` is the schedule with n steps; ``given`` the caller's options);
    ``tolerance_for_nfe`` (adaptive solvers that can be swept) maps a budget to tolerance options: the
    NFE is then an output, counted, and the plan's ``nfe`` is None.
    """

    name: str
    order: int
    stochastic: bool
    description: str
    paper: str
    nfe_per_step: int
    options: Mapping[str, Option]
    nfe: NfeLaw
    #: the process capabilities the solver relies on (:mod:`sampler_bench.processes.kind`)
    needs: frozenset[str]
    step: Callable | None = None
    run: Callable | None = None
    init: Callable | None = None
    min_steps: Callable[[Mapping[str, Any]], int] = lambda opts: 1
    steps_for_nfe: Callable | None = None
    plan_grid: Callable | None = None
    tolerance_for_nfe: Callable | None = None
    order_of: Callable[[Mapping[str, Any]], int] | None = None
    family: str = ""
    adaptive: bool = False
    aliases: tuple[str, ...] = field(default_factory=tuple)

    @property
    def processes(self) -> tuple[str, ...]:
        """The kinds of process this solver applies to: those that offer everything it needs."""
        return tuple(name for name, kind in KINDS.items() if kind.offers(self.needs))

    def applies_to(self, kind: ProcessKind | str) -> bool:
        return process_kind(kind).offers(self.needs)

    def validate(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """Defaults filled in, every value checked; unknown names rejected with a suggestion.

        The options every solver shares (:data:`~.output.COMMON_OPTIONS`: ``output``) appear in the result
        only when given, so a configuration without them validates exactly as before they existed."""
        out = {}
        for key in options:
            if key not in self.options and key not in COMMON_OPTIONS:
                names = sorted(self.options) + sorted(COMMON_OPTIONS)
                raise SolverOptionError(
                    f"solver {self.name!r} has no option {key!r}{closest(key, names)}; "
                    f"its options are: {', '.join(names)}"
                )
        for key, opt in self.options.items():
            out[key] = opt.validate(self.name, key, options[key]) if key in options else opt.default
        for key, opt in COMMON_OPTIONS.items():
            if key in options:
                out[key] = opt.validate(self.name, key, options[key])
        if out.get(OUTPUT) == "denoised" and PROBABILITY_FLOW_ODE not in self.needs:
            raise SolverOptionError(
                f"solver {self.name!r}: option output='denoised' returns the denoiser's estimate D(x, sigma), which "
                f"only the solvers of the probability-flow ODE in sigma have; {self.name!r} integrates "
                f"{', '.join(sorted(self.needs))} with a model that is not a denoiser; leave output unset")
        return out

    def order_for(self, options: Mapping[str, Any]) -> int:
        """Theoretical order of this solver with the given (validated) options."""
        return self.order_of(options) if self.order_of is not None else self.order


_REGISTRY: dict[str, SolverInfo] = {}


def register(
    name: str,
    *,
    order: int | Callable[[Mapping[str, Any]], int],
    paper: str,
    description: str,
    nfe_per_step: int = 1,
    stochastic: bool = False,
    options: Mapping[str, Option] | None = None,
    nfe: NfeLaw | None = None,
    needs: Sequence[str] | None = None,
    init: Callable | None = None,
    min_steps: Callable | None = None,
    steps_for_nfe: Callable | None = None,
    plan_grid: Callable | None = None,
    tolerance_for_nfe: Callable | None = None,
    order_of: Callable | None = None,
    kind: str = "step",
    adaptive: bool = False,
    final_step_nfe: int | Callable[[Mapping[str, Any]], int] = 1,
):
    """Decorator: register a step function (``kind='step'``) or a whole run (``kind='run'``).

    ``order`` is the one declaration of the solver's theoretical global order: an int, or a function of
    its validated options (``order=lambda opts: opts["order"] + 1``); ``info(name).order`` is its value
    for the default options, ``info(name).order_for(options)`` for others. (``order_of`` is the older
    spelling of a function ``order``; given with an int ``order`` the two must agree on the defaults.)

    ``nfe`` defaults to the law of a k-stage singlestep solver whose final step to sigma=0 is a
    single evaluation: ``k*steps - (k-1)`` when the grid ends at 0, else ``k*steps``. ``final_step_nfe``
    (an int or a function of the options) is what that final step to 0 costs, which ``output="denoised"``
    replaces by one evaluation (:mod:`.output`).
    """

    if name in _REGISTRY:
        raise RuntimeError(f"solver {name!r} registered twice")
    k = nfe_per_step

    def default_nfe(steps: int, ends_at_zero: bool, opts) -> int:
        return k * steps - ((k - 1) if ends_at_zero else 0)

    options = dict(options or {})
    defaults = {key: opt.default for key, opt in options.items()}
    order_fn = order if callable(order) else order_of
    default_order = int(order_fn(defaults)) if order_fn is not None else int(order)
    if order_of is not None and not callable(order) and int(order) != default_order:
        raise RuntimeError(f"solver {name!r}: order={order} disagrees with order_of(defaults)={default_order}; "
                           "declare the order once, as order=<function of the options>")

    def wrap(fn):
        info = SolverInfo(
            name=name,
            order=default_order,
            stochastic=stochastic,
            description=description,
            paper=paper,
            nfe_per_step=nfe_per_step,
            options=options,
            nfe=with_output_nfe(nfe or default_nfe,
                                final_step_nfe if callable(final_step_nfe) else (lambda opts: int(final_step_nfe))),
            needs=frozenset(needs) if needs is not None else (SDE_NEEDS if stochastic else ODE_NEEDS),
            step=fn if kind == "step" else None,
            run=fn if kind == "run" else None,
            init=init,
            min_steps=with_output_min_steps(min_steps or (lambda opts: 1)),
            steps_for_nfe=steps_for_nfe,
            plan_grid=plan_grid,
            tolerance_for_nfe=tolerance_for_nfe,
            order_of=order_fn,
            adaptive=adaptive,
            family=fn.__module__.split(".solvers.", 1)[-1],
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


def samplers_for(kind: ProcessKind | str) -> list[str]:
    """Names of the registered solvers that apply to processes of ``kind``, sorted."""
    kind = process_kind(kind)
    return [n for n in available() if kind.offers(_REGISTRY[n].needs)]


def mismatch(name: str, kind: ProcessKind | str | None) -> str | None:
    """Why solver ``name`` does not apply to processes of ``kind`` (None when it does, or no kind is declared).

    The one place where ``sb.sample`` and the sweep decide whether a solver fits a model's process.
    """
    meta = info(name)
    kind = process_kind(kind)
    if kind is None or kind.offers(meta.needs):
        return None
    missing = sorted(meta.needs - kind.capabilities)
    return (f"solver {name!r} does not apply to {kind.name!r} processes: it needs {' and '.join(missing)}, which a "
            f"{kind.name!r} process (state {kind.state}, grid in {kind.time_variable}) does not offer; "
            + (f"{kind.refusal}; " if kind.refusal else "")
            + f"samplers that apply to {kind.name!r} models: {', '.join(samplers_for(kind)) or 'none'}")


def check_applies(name: str, model: Any) -> None:
    """Raise one :class:`SolverOptionError` when solver ``name`` does not apply to ``model``'s process.

    ``model`` is a model (its ``process`` / ``process_def`` declare the kind), a kind, or its name. A plain
    callable that declares no process passes: it is sampled as the denoiser of a sigma-ODE (the contract
    of ``sb.sample``), and the CLD samplers refuse it themselves, since they need its process's parameters.
    """
    try:
        kind = process_kind(model)
    except ValueError as e:
        raise SolverOptionError(f"solver {name!r}: {e}") from None
    why = mismatch(name, kind)
    if why is not None:
        raise SolverOptionError(why)
