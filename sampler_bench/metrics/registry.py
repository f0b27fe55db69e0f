"""The metric registry: names, what each metric reports, when it applies, and how to build one.

A metric is an :class:`~.base.Accumulator` subclass registered with :func:`register_metric`, which
declares its value keys, direction, options (validated like solver options) and requirements.
:func:`make` checks everything a user can get wrong -- unknown metric, option, extractor, a model
the metric does not apply to -- and raises one readable ``ValueError`` before any work starts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch

from ..processes.analytic import GaussianMixture
from ..options import Option, SolverOptionError, closest
from . import features as _features
from . import refstats

#: default number of reference draws for statistics that are not exact
DEFAULT_REFERENCE_SAMPLES = 10_000


@dataclass(frozen=True)
class MetricInfo:
    """What a registered metric reports and needs.

    ``keys``: the value names :meth:`Accumulator.compute` returns; ``needs_reference_endpoints``: its
    ``update`` needs the ODE reference endpoints of the same seeds (so it is meaningful only for
    deterministic samplers); ``requires``: ``"gmm"`` when the model's law must be a GaussianMixture.
    """

    name: str
    description: str
    keys: tuple[str, ...]
    lower_is_better: bool
    cls: type
    paper: str = ""
    needs_reference_endpoints: bool = False
    requires: str | None = None
    params: Mapping[str, Option] = field(default_factory=dict)
    #: its ``update`` needs the batch's recorded trajectory (``trajectory=``): deterministic step solvers of
    #: the probability-flow ODE only (:mod:`.trajectory_geometry`)
    needs_trajectory: bool = False

    @property
    def uses_features(self) -> bool:
        return bool(getattr(self.cls, "uses_features", False))

    def applies(self, model, feature_extractor=None) -> tuple[bool, str]:
        """(True, "") if the metric can score samples of ``model``, else (False, the reason)."""
        mname = getattr(model, "name", type(model).__name__)
        if self.requires == "gmm":
            dist = getattr(model, "distribution", None)
            if not isinstance(dist, GaussianMixture):
                has = f"a {type(dist).__name__}" if dist is not None else "no analytic distribution"
                return False, (f"metric {self.name!r} needs a model whose data law is an analytic GaussianMixture "
                               f"(model.distribution); model {mname!r} has {has}")
        if self.uses_features and feature_extractor is not None:
            reason = _features.check_input(feature_extractor, tuple(getattr(model, "shape", ()) or ()))
            if reason:
                return False, f"metric {self.name!r} with extractor {_features.name_of(feature_extractor)!r}: {reason}"
        return True, ""

    def validate(self, params: Mapping[str, Any]) -> dict[str, Any]:
        out = {}
        for key, opt in self.params.items():
            if key not in params:
                out[key] = opt.default
                continue
            try:
                out[key] = opt.validate(self.name, key, params[key])
            except SolverOptionError:
                raise ValueError(f"metric {self.name!r}: option {key}={params[key]!r} is not allowed; "
                                 f"expected {opt.allowed()}") from None
        return out


_REGISTRY: dict[str, MetricInfo] = {}


def register_metric(name: str, *, keys, lower_is_better: bool, description: str, paper: str = "",
                    needs_reference_endpoints: bool = False, requires: str | None = None,
                    params: Mapping[str, Option] | None = None, needs_trajectory: bool = False):
    """Class decorator: register an Accumulator subclass as metric ``name``."""

    def wrap(cls):
        if name in _REGISTRY:
            raise RuntimeError(f"metric {name!r} registered twice")
        _REGISTRY[name] = MetricInfo(name=name, description=description, keys=tuple(keys),
                                     lower_is_better=lower_is_better, cls=cls, paper=paper,
                                     needs_reference_endpoints=needs_reference_endpoints, requires=requires,
                                     params=dict(params or {}), needs_trajectory=needs_trajectory)
        cls.name = name
        cls.info = _REGISTRY[name]
        return cls

    return wrap


def available() -> list[str]:
    """Names of the registered metrics, sorted."""
    return sorted(_REGISTRY)


def info(name: str) -> MetricInfo:
    """The :class:`MetricInfo` of a registered metric; ValueError with a suggestion otherwise."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown metric {name!r}{closest(str(name), available())}; "
                         f"available: {', '.join(available())}") from None


def _feature_dim(extractor, model) -> int:
    """Number of features the extractor gives for the model's samples (one probe of a zero sample)."""
    shape = tuple(getattr(model, "shape", ()) or ())
    return int(extractor(torch.zeros((1, *shape), dtype=torch.float64)).shape[1])


def make(name: str, model, *, feature_extractor=None, reference_samples: int | torch.Tensor = DEFAULT_REFERENCE_SAMPLES,
         seed: int = 0, cache_dir=None, device: str | torch.device = "cpu", reference_stats: str | None = None,
         reference_dir: str | None = None, **params):
    """A fresh accumulator of metric ``name`` for samples of ``model``.

    ``feature_extractor``: a registered name or a :class:`~.features.FeatureExtractor` (default
    ``"raw"``); extractor parameters (e.g. ``weights_path=`` for ``"inception-v3-compat"``) may be
    passed with the metric's own ``params``. ``reference_samples``: how many reference draws
    (``model.sample_data``) the reference statistics use, or a tensor of reference data. ``seed`` fixes
    the reference draws, projections and subsets. ``reference_stats``: an EDM-format ``.npz`` of
    feature mean/covariance (``mu``, ``sigma``) to compare with instead (Fréchet distances only);
    ``reference_dir``: a folder of images whose features are the reference (see
    :mod:`.reference_files`). Metrics that use no features or reference
    (``endpoint_error``, ``gmm_*``) ignore ``feature_extractor``, ``reference_samples`` and ``cache_dir``.
    """
    mi = info(name)
    ok, why = mi.applies(model, feature_extractor)
    if not ok:
        raise ValueError(why)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"metric {name!r}: seed must be an integer, got {seed!r}")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"metric {name!r}: device {device!r} is not a torch device (e.g. 'cpu', 'cuda:0')") from None

    ex_name = None
    if mi.uses_features:
        ex_name = "raw" if feature_extractor is None else _features.name_of(feature_extractor)
    ex_params = _features.params(ex_name) if isinstance(feature_extractor, (str, type(None))) and ex_name else ()
    unknown = [k for k in params if k not in mi.params and k not in ex_params]
    if unknown:
        allowed = sorted(mi.params) + [f"{p} (extractor {ex_name!r})" for p in ex_params]
        raise ValueError(f"metric {name!r} has no option {unknown[0]!r}"
                         f"{closest(unknown[0], list(mi.params) + list(ex_params))}; "
                         f"its options are: {', '.join(allowed) or 'none'}")
    opts = mi.validate({k: v for k, v in params.items() if k in mi.params})
    if not mi.uses_features:
        return mi.cls(model, device=device, seed=seed, **opts)

    if isinstance(feature_extractor, _features.FeatureExtractor):
        extractor = feature_extractor
    else:
        extractor = _features.get(ex_name, device=device, **{k: v for k, v in params.items() if k in ex_params})
    reason = extractor.check_input(tuple(getattr(model, "shape", ()) or ()))
    if reason:
        raise ValueError(f"metric {name!r} with extractor {ex_name!r}: {reason}")

    if reference_stats is not None and reference_dir is not None:
        raise ValueError(f"metric {name!r}: give reference_stats or reference_dir, not both")
    if reference_stats is not None:
        from .reference_files import load_npz_stats

        if mi.cls.reference_kind != "moments":
            raise ValueError(f"metric {name!r} compares feature rows, which an .npz of mean and covariance does not "
                             "hold; use reference_dir (images) instead of reference_stats")
        if not isinstance(reference_stats, (str, os.PathLike)):
            raise ValueError(f"metric {name!r}: reference_stats must be a path to an .npz file, got {reference_stats!r}")
        stats = load_npz_stats(reference_stats, dim=_feature_dim(extractor, model))
        return mi.cls(model, extractor=extractor, reference=stats, device=device, seed=seed, **opts)
    if reference_dir is not None:
        from .reference_files import folder_images

        if not isinstance(reference_dir, (str, os.PathLike)):
            raise ValueError(f"metric {name!r}: reference_dir must be a folder path, got {reference_dir!r}")
        reference_samples = folder_images(reference_dir, tuple(getattr(model, "shape", ()) or ()))

    data = None
    if isinstance(reference_samples, torch.Tensor):
        data = reference_samples
        shape = tuple(getattr(model, "shape", ()) or ())
        if data.ndim < 1 or data.shape[0] < 2 or (shape and tuple(data.shape[1:]) != shape):
            raise ValueError(f"metric {name!r}: reference_samples tensor has shape {tuple(data.shape)}; expected "
                             f"[n >= 2, {', '.join(map(str, shape))}] like the model's samples")
        if not torch.isfinite(data).all():
            raise ValueError(f"metric {name!r}: reference_samples contain NaN or inf")
        n = data.shape[0]
    elif isinstance(reference_samples, bool) or not isinstance(reference_samples, int) or reference_samples < 2:
        raise ValueError(f"metric {name!r}: reference_samples must be an integer >= 2 (number of reference draws) "
                         f"or a tensor of reference data, got {reference_samples!r}")
    else:
        n = reference_samples
    compute = refstats.reference_moments if mi.cls.reference_kind == "moments" else refstats.reference_features
    stats = compute(model, extractor, n=n, seed=seed, cache_dir=cache_dir, data=data, device=device)
    return mi.cls(model, extractor=extractor, reference=stats, device=device, seed=seed, **opts)
