"""Preparing a sweep: load every model, check every metric on it, choose its reference integrator.

Everything that can go wrong with the user's input happens here, before any cell runs, and is a
:class:`~.spec.SpecError` naming the model or metric at fault.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

from ..processes.catalog import process_kind
from ..solvers.registry import info as solver_info, mismatch
from .reference_cache import reference_solver
from .spec import MetricSpec, ModelSpec, Spec, SpecError, check_device

#: Reference tolerances for a model whose denoiser is not exact float64 arithmetic (a network in
#: float32): DOP853 cannot resolve 1e-10 through float32 noise and would shrink its steps for ever;
#: 1e-6 is still far below the error of any sampler at the budgets swept.
NETWORK_REFERENCE = {"rtol": 1e-6, "atol": 1e-6}


def metrics_api():
    """The metrics registry (``sampler_bench.metrics``); a SpecError if it is not importable."""
    try:
        import sampler_bench.metrics as M
    except ImportError as e:
        raise SpecError(f"the metrics package sampler_bench.metrics cannot be imported ({e})") from None
    return M


def load_checkpoint_model(path: str, device: str = "cpu"):
    """``sampler_bench.models.checkpoint.load_model(path)`` with a readable error when unavailable."""
    try:
        from ..models.checkpoint import load_model
    except ImportError as e:
        raise SpecError(
            f"checkpoint {path!r}: loading checkpoints needs sampler_bench.models.checkpoint, "
            f"which is not available in this installation ({e})"
        ) from None
    try:
        return load_model(path, device=device)
    except (ValueError, OSError) as e:
        raise SpecError(f"checkpoint {path!r}: {e}") from None


def load_model(m: ModelSpec, device: str = "cpu"):
    """The model a spec entry names (built-in analytic model or checkpoint) on ``device``."""
    if m.builtin is not None:
        from ..models.builtin import builtin_model

        try:
            return builtin_model(m.builtin)
        except ValueError as e:
            raise SpecError(str(e)) from None
    if m.python is not None:
        return load_plugin_model(m, device)
    return load_checkpoint_model(m.checkpoint, device)


def load_plugin_model(m: ModelSpec, device: str = "cpu"):
    """A plug-in model (``python = "module:factory"``), checked and probed, guided when the spec asks."""
    from ..models.guidance import GuidedModel
    from ..models.plugin import load_plugin

    try:
        model = load_plugin(m.python, m.args, trust_pickle=m.trust_pickle, name=m.label, device=device)
        return model if m.guidance is None else GuidedModel(model, m.guidance)
    except ValueError as e:
        raise SpecError(f"model {m.label!r}: {e}") from None


def executed(model, spec: Spec, label: str):
    """``model`` under the spec's [execution] options (compile / CUDA graphs / autocast), or as it is."""
    if not spec.execution:
        return model
    from ..models.execution import ExecutedModel

    try:
        return ExecutedModel(model, device=spec.device, **spec.execution)
    except ValueError as e:
        raise SpecError(f"[execution] for model {label!r}: {e}") from None


@dataclass(frozen=True)
class MetricFactory:
    """Makes metric accumulators with the sweep's seed, device and cache directory (``api``: the
    metrics registry, :func:`metrics_api`)."""

    api: Any
    seed: int
    device: str
    cache_dir: Path | None

    def make(self, ms: MetricSpec, model):
        return self.api.make(
            ms.name, model, feature_extractor=ms.feature_extractor, seed=self.seed,
            cache_dir=str(self.cache_dir) if self.cache_dir is not None else None, device=self.device, **ms.params,
        )


@dataclass
class PreparedMetric:
    """A metric checked on one model: ``accumulator()`` makes a fresh one, ``reduce`` merges states."""

    spec: MetricSpec
    info: Any
    needs_reference: bool
    factory: MetricFactory
    model: Any

    def accumulator(self):
        return self.factory.make(self.spec, self.model)

    @property
    def needs_trajectory(self) -> bool:
        """Its update needs the recorded trajectory (``trajectory_geometry``): deterministic step solvers only."""
        return bool(getattr(self.info, "needs_trajectory", False))

    def reduce(self, states: list[dict]) -> dict:
        """One accumulator state from the states of several sample ranges (float64 sums)."""
        return states[0] if len(states) == 1 else self.factory.api.reduce_states(states)

    def lower_is_better(self, key: str) -> bool:
        lib = getattr(self.info, "lower_is_better", True)
        if isinstance(lib, Mapping):
            return bool(lib.get(key, True))
        return bool(lib)


@dataclass
class PreparedModel:
    """A loaded model with its provenance, the metrics that apply to it and its endpoint-error
    yardstick: ``reference_solver`` (None when its process has none; ``reference_problem`` says why)
    with ``reference_options``."""

    spec: ModelSpec
    model: Any
    label: str
    hash: str
    process: str
    metrics: list[PreparedMetric]
    notes: list[str] = field(default_factory=list)
    reference_options: dict = field(default_factory=dict)
    reference_solver: str | None = None
    reference_problem: str = ""
    #: the spec's decoder (``decode = "module:fn"``) applied to samples before the metrics, or None
    decode: Any = None


def _reference_of(model, spec: Spec) -> tuple[str | None, dict, str]:
    """(reference solver, its validated options, why there is none) for ``model``."""
    from ..models.base import AnalyticModel
    from ..processes.bdm import BDMAnalyticModel
    from ..processes.cld import CLDAnalyticModel
    from ..processes.yukawa import YukawaAnalyticModel

    exact = (AnalyticModel, CLDAnalyticModel, BDMAnalyticModel, YukawaAnalyticModel)
    base = {} if isinstance(model, exact) else dict(NETWORK_REFERENCE)
    try:
        solver = reference_solver(str(model.process))
    except ValueError as e:  # no yardstick for this process: only an endpoint-error cell can fail, and says why
        return None, {}, str(e)
    return solver, solver_info(solver).validate({**base, **spec.reference}), ""


def reference_options(model, spec: Spec) -> dict:
    """Tolerances of the endpoint-error reference: the solver's defaults (1e-10) for exact analytic
    models, :data:`NETWORK_REFERENCE` for other models, overridden by the spec's ``[reference]`` table.
    The reference solver is the one registered for the model's process (:func:`reference_solver`)."""
    return _reference_of(model, spec)[1]


def prepare_models(spec: Spec, cache_dir: Path | None) -> list[PreparedModel]:
    """Load every model and check every metric on it (a trial accumulator validates the parameters)."""
    check_device(spec.device)  # cuda, mps: present on this machine, before any model is loaded
    factory = MetricFactory(metrics_api(), spec.seed, spec.device, cache_dir) if spec.metrics else None
    out = []
    for m in spec.models:
        raw = load_model(m, spec.device)
        model = executed(raw, spec, m.label)
        ref_solver, ref_options, ref_problem = _reference_of(raw, spec)
        scored, decode = model, None  # what the metrics see: the samples, or the decoder's output
        if m.decode is not None:
            from ..models.decode import DecodedView, load_decoder

            try:
                decode, shape = load_decoder(m.decode, raw, spec.device)
            except ValueError as e:
                raise SpecError(f"model {m.label!r}: {e}") from None
            scored = DecodedView(model, m.decode, shape)
        prepared = PreparedModel(m, model, m.label, str(scored.fingerprint()), str(raw.process), [],
                                 reference_options=ref_options, reference_solver=ref_solver,
                                 reference_problem=ref_problem, decode=decode)
        for s in spec.every_schedule:
            smax = s.sigma_max if s.sigma_max is not None else model.sigma_max
            smin = s.sigma_min if s.sigma_min is not None else model.sigma_min
            if smin >= smax:
                raise SpecError(
                    f"model {m.label!r}: the schedule's sigma range [{smin}, {smax}] is empty; "
                    f"the model's range is [{model.sigma_min}, {model.sigma_max}]"
                )
            if smax != model.sigma_max and not process_kind(prepared.process).gaussian_prior:
                raise SpecError(
                    f"model {m.label!r} ({prepared.process}): its prior is drawn at sigma_max = {model.sigma_max}; "
                    "a different schedule sigma_max is only supported for Gaussian processes"
                )
        for ms in spec.metrics:
            info = factory.api.info(ms.name)
            needs_reference = bool(getattr(info, "needs_reference_endpoints", False))
            ok, reason = info.applies(scored, ms.feature_extractor)
            if not ok:
                prepared.notes.append(f"metric {ms.name!r} does not apply to model {m.label!r}: {reason}")
                continue
            try:
                factory.make(ms, scored)
            except (ValueError, TypeError) as e:
                raise SpecError(f"[[metric]] {ms.name!r} on model {m.label!r}: {e}") from None
            prepared.metrics.append(PreparedMetric(ms, info, needs_reference, factory, scored))
        left_out = [s.name for s in spec.every_sampler if s.from_all and mismatch(s.name, prepared.process) is not None]
        if left_out:
            prepared.notes.append(
                f"all_samplers: left out for model {m.label!r} ({prepared.process} process), as they apply to "
                f"other processes: {', '.join(left_out)}"
            )
        out.append(prepared)
    return out
