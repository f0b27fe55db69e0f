"""Feature extractors: the space a distribution metric (FD, KID, precision/recall, SWD) works in.

Built in:

* ``"raw"``: the flattened sample itself (Fréchet distance in raw space for vector data);
* ``"inception-v3-compat"``: torch-fidelity's TF-compatible InceptionV3 (FID features), loaded lazily
  (see :mod:`sampler_bench.metrics.inception`).

Others are added with :func:`register_extractor` (e.g. a digits classifier)::

    from sampler_bench.metrics import features
    features.register_extractor("digits-classifier", load_classifier, factory=True,
                                description="MLP trained on sklearn digits; penultimate layer")
    ex = features.get("digits-classifier")          # built on first use, then reused
    ex(samples)                                     # -> [B, F] float64

An extractor maps ``[B, *shape]`` samples (as the sampler returns them) to ``[B, F]`` float64 features
and has a ``fingerprint`` (name + weights hash) that keys reference statistics and goes into provenance.
"""

from __future__ import annotations

import inspect
import json
import math
from typing import Any, Callable

import torch

from ..hashing import tensor_hash
from ..options import closest
from .extractor import FeatureExtractor, image_shape_problem  # noqa: F401  re-exported


class Raw(FeatureExtractor):
    """The identity on flattened samples: metrics in the data space itself."""

    name = "raw"
    description = "the flattened sample (Fréchet distance etc. in raw data space)"

    def extract(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], -1).to(torch.float64)


class Wrapped(FeatureExtractor):
    """A user's ``nn.Module`` or function ``x -> features``, run under ``no_grad`` on the device.

    A module gets its input in its own parameter dtype; a plain function gets float64.
    """

    def __init__(self, name: str, fn, *, description: str = "", fingerprint: str | None = None,
                 device: str | torch.device = "cpu"):
        super().__init__(device)
        self.name = name
        self.description = description
        if isinstance(fn, torch.nn.Module):
            fn = fn.to(self.device).eval()
        self.fn = fn
        self._fingerprint = fingerprint

    def extract(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.fn, torch.nn.Module):  # metrics hand over float64; a float32 net wants float32
            dtype = next((p.dtype for p in self.fn.parameters() if p.is_floating_point()), x.dtype)
            x = x.to(dtype)
        return self.fn(x)

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            if isinstance(self.fn, torch.nn.Module):
                sd = self.fn.state_dict()
                weights = tensor_hash(*[sd[k] for k in sorted(sd)], extra=sorted(sd))
            else:  # a plain function: its name is all we can tell (pass fingerprint= to be precise)
                weights = tensor_hash(extra=getattr(self.fn, "__qualname__", repr(self.fn)))
            self._fingerprint = f"{self.name}:{weights}"
        return self._fingerprint


class _Entry:
    def __init__(self, name, build: Callable[..., FeatureExtractor], description: str, params: tuple[str, ...]):
        self.name, self.build, self.description, self.params = name, build, description, params


_REGISTRY: dict[str, _Entry] = {}
_INSTANCES: dict[str, FeatureExtractor] = {}


def register_extractor(name: str, fn_or_module, *, description: str = "", fingerprint: str | None = None,
                       factory: bool = False, overwrite: bool = False) -> None:
    """Register a feature extractor under ``name``.

    ``fn_or_module`` is one of:

    * an ``nn.Module`` or a function ``x [B, *shape] -> features [B, ...]`` (flattened to ``[B, F]``);
    * with ``factory=True``, a function ``(**params) -> module / function / FeatureExtractor`` called on
      first use, so registering costs nothing (e.g. weights are loaded only when a sweep asks); it is
      given ``device=`` if it takes that parameter, and its other parameters become the extractor's;
    * a :class:`FeatureExtractor` subclass, instantiated as ``cls(device=..., **params)``.

    ``fingerprint`` overrides the automatic one (the name plus a hash of a module's state dict); give
    one for a plain function, whose code cannot be hashed reliably.
    """
    if not isinstance(name, str) or not name:
        raise ValueError("a feature extractor needs a non-empty string name")
    if name in _REGISTRY and not overwrite:
        raise ValueError(f"feature extractor {name!r} is already registered; pass overwrite=True to replace it")
    if inspect.isclass(fn_or_module) and issubclass(fn_or_module, FeatureExtractor):
        cls = fn_or_module
        params = tuple(p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "device"))

        def build(device="cpu", **kw):
            return cls(device=device, **kw)

        desc = description or cls.description
    elif factory:
        sig = inspect.signature(fn_or_module).parameters
        params = tuple(p for p, v in sig.items() if v.kind in (v.POSITIONAL_OR_KEYWORD, v.KEYWORD_ONLY) and p != "device")

        def build(device="cpu", **kw):
            made = fn_or_module(**kw, **({"device": device} if "device" in sig else {}))
            if isinstance(made, FeatureExtractor):
                return made
            fp = fingerprint if fingerprint is None or not kw else f"{fingerprint}:{json.dumps(kw, sort_keys=True, default=str)}"
            return Wrapped(name, made, description=description, fingerprint=fp, device=device)

        desc = description
    elif callable(fn_or_module):
        params = ()

        def build(device="cpu"):
            return Wrapped(name, fn_or_module, description=description, fingerprint=fingerprint, device=device)

        desc = description
    else:
        raise ValueError(f"feature extractor {name!r}: expected an nn.Module, a function or a FeatureExtractor "
                         f"subclass, got {type(fn_or_module).__name__}")
    _REGISTRY[name] = _Entry(name, build, desc, params)
    for key in [k for k in _INSTANCES if k.split("\0", 1)[0] == name]:
        del _INSTANCES[key]


def available() -> list[str]:
    """Names of the registered feature extractors, sorted."""
    return sorted(_REGISTRY)


def describe(name: str) -> str:
    """One line saying what the extractor computes."""
    return _entry(name).description


def params(name: str) -> tuple[str, ...]:
    """The keyword parameters an extractor accepts (e.g. ``weights_path`` for Inception)."""
    return _entry(name).params


def _entry(name: str) -> _Entry:
    if name not in _REGISTRY:
        raise ValueError(f"unknown feature extractor {name!r}{closest(str(name), available())}; "
                         f"available: {', '.join(available())}")
    return _REGISTRY[name]


def get(name: str, *, device: str | torch.device = "cpu", **kwargs) -> FeatureExtractor:
    """The extractor ``name`` with ``kwargs`` on ``device``; built once per process and reused."""
    entry = _entry(name)
    unknown = sorted(set(kwargs) - set(entry.params))
    if unknown:
        allowed = ", ".join(entry.params) or "none"
        raise ValueError(f"feature extractor {name!r} has no parameter {unknown[0]!r}"
                         f"{closest(unknown[0], list(entry.params))}; its parameters are: {allowed}")
    key = "\0".join([name, str(torch.device(device)), json.dumps(kwargs, sort_keys=True, default=str)])
    if key not in _INSTANCES:
        _INSTANCES[key] = entry.build(device=device, **kwargs)
    return _INSTANCES[key]


def name_of(extractor) -> str:
    """The name of an extractor given by name or as an instance."""
    return extractor.name if isinstance(extractor, FeatureExtractor) else str(extractor)


def check_input(extractor, shape: tuple[int, ...]) -> str | None:
    """Why ``extractor`` (a name or an instance) cannot take samples of ``shape``; None if it can.

    Checked without building the extractor (no weights are loaded for a name).
    """
    if isinstance(extractor, FeatureExtractor):
        return extractor.check_input(shape)
    if extractor == "inception-v3-compat":
        return image_shape_problem(shape)
    if extractor == "digits-classifier" and math.prod(shape) != 64:  # its CNN reshapes every sample to 1x8x8
        return f"it takes 8x8 digits (64 values per sample), not samples of shape {list(shape)}"
    return None


def _lazy_inception(device="cpu", **kwargs) -> FeatureExtractor:
    # imported here: torch-fidelity (and torchvision) load only when an image metric is used
    from .inception import InceptionV3Compat

    return InceptionV3Compat(device=device, **kwargs)


register_extractor("raw", Raw)
_REGISTRY["inception-v3-compat"] = _Entry(
    "inception-v3-compat", _lazy_inception,
    "torch-fidelity's TF-compatible InceptionV3 (FID features; images in [-1, 1], 1 or 3 channels)",
    ("weights_path", "feature_layer", "batch_size", "inference", "quantize_uint8"),
)


def _lazy_digits_classifier(path: str | None = None):
    # imported here: the classifier's weights load only when a sweep asks for its features
    from ..data.digits_classifier import _extractor

    return _extractor(path)


register_extractor(
    "digits-classifier", _lazy_digits_classifier, factory=True,
    description="CNN trained on the sklearn digits training split; 64-d penultimate layer (inputs in [-1, 1])")
