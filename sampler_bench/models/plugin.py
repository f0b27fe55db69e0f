"""Plug-in models: a spec's ``[[model]] python = "package.module:factory"`` with ``args = {...}``.

The factory is the user's code; it returns an object that follows :class:`DenoiserProtocol`:

* ``model(x, sigma, **conditioning)`` -> E[x0 | x] with the shape of ``x`` (``sigma`` of shape [B]; the
  k-diffusion convention of docs/notation.md). A class-conditional model receives ``class_labels`` (int64 [B],
  ``-1`` = no label when it declares ``null_label = True``);
* ``sigma_min``, ``sigma_max`` (floats, 0 < sigma_min < sigma_max), ``shape`` (data shape without batch),
  ``process`` (``"gaussian"``, ``"pfgmpp"``, ``"cld"``, ``"bdm"`` or ``"yukawa"``; a Yukawa model also has
  ``denoise_with_rate(x, z) -> (D, kappa)`` and a ``process_def``);
* optional: ``prior(n, generator=None)`` (default for Gaussian processes: ``sigma_max * N(0, I)``, one
  float32 draw per sample generator, EDM's convention), ``num_classes`` (int > 0 for class-conditional
  models), ``null_label`` (bool: ``class_labels`` may hold -1 for "unconditional", so guidance can batch its
  two halves into one forward), ``weight_files`` (paths whose bytes identify the weights: hashed into the
  model's fingerprint, so a cell changes identity when the weights change), ``name``,
  ``sample_data(n, generator=None)`` (reference data), ``floor_data(n, generator=None)`` (noise-floor
  rows disjoint from the reference data, when that is a finite set), ``data_from_state(u)``.

:func:`load_plugin` imports the factory, calls it, checks the attributes and makes one *probe call* at
sigma_min and sigma_max (output shape, floating dtype, finite values); each violation is one
:class:`PluginError` naming the attribute and what was expected. Provenance: the factory's reference,
its args, and the sha256 of each declared weight file.

Running the user's code is the user's explicit choice in the spec. A factory that unpickles files
declares it with the attribute ``unpickles = True`` (see :func:`unpickles`); sampler-bench then refuses
to call it unless the spec says ``trust_pickle = true``, and passes ``trust_pickle=True`` to it.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import math
import os
from pathlib import Path
from typing import Any, Callable, Protocol, runtime_checkable

import torch

from ..processes.catalog import process_kind
from ..rng import randn_like
from .base import network_grad_mode, tensor_hash

PROCESSES = ("gaussian", "pfgmpp", "cld", "bdm", "yukawa")
#: a class label meaning "no label" (the unconditional half of classifier-free guidance)
NULL_LABEL = -1


class PluginError(ValueError):
    """A plug-in model that cannot be used; the message names the attribute and what was expected."""


@runtime_checkable
class DenoiserProtocol(Protocol):
    """What a plug-in factory returns (optional members: see the module docstring)."""

    sigma_min: float
    sigma_max: float
    shape: tuple[int, ...]
    process: str

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **conditioning) -> torch.Tensor: ...


def unpickles(factory: Callable) -> Callable:
    """Decorator for a factory that unpickles a file: it then runs only with ``trust_pickle = true``."""
    factory.unpickles = True
    return factory


def file_sha256(path: str | os.PathLike) -> str:
    """Full sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def import_object(ref: str, what: str = "factory") -> Any:
    """``"package.module:attr"`` -> the object; PluginError if the reference is malformed or fails to import."""
    if not isinstance(ref, str) or ref.count(":") != 1 or not all(ref.split(":")):
        raise PluginError(f"{what} {ref!r} must be written \"package.module:function\"")
    module_name, attr = ref.split(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # the user's module: any error while importing it is theirs to see
        raise PluginError(f"{what} {ref!r}: module {module_name!r} cannot be imported "
                          f"({type(e).__name__}: {e}); is it on PYTHONPATH?") from None
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise PluginError(f"{what} {ref!r}: module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise PluginError(f"{what} {ref!r} is not callable (got {type(obj).__name__})")
    return obj


def _check_attributes(obj: Any, ref: str) -> tuple[float, float, tuple[int, ...], str]:
    where = f"plug-in model from {ref!r}"
    if not callable(obj):
        raise PluginError(f"{where}: the factory returned a {type(obj).__name__}, which is not callable; "
                          "expected a denoiser object with __call__(x, sigma, **conditioning)")
    for attr in ("sigma_min", "sigma_max", "shape", "process"):
        if not hasattr(obj, attr):
            raise PluginError(f"{where}: attribute {attr!r} is missing; expected "
                              + {"sigma_min": "a positive float (the smallest noise level it was trained on)",
                                 "sigma_max": "a float > sigma_min (the noise level of its prior)",
                                 "shape": "the data shape without the batch dimension, e.g. (3, 32, 32)",
                                 "process": f"one of {', '.join(PROCESSES)}"}[attr])
    smin, smax = obj.sigma_min, obj.sigma_max
    for attr, v in (("sigma_min", smin), ("sigma_max", smax)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise PluginError(f"{where}: attribute {attr!r} is {v!r}; expected a positive finite float")
    if not smin < smax:
        raise PluginError(f"{where}: attribute 'sigma_min' ({smin}) must be smaller than 'sigma_max' ({smax})")
    shape = obj.shape
    if isinstance(shape, torch.Size):
        shape = tuple(shape)
    if not isinstance(shape, (tuple, list)) or not shape or not all(
            isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape):
        raise PluginError(f"{where}: attribute 'shape' is {shape!r}; expected a tuple of positive ints "
                          "(the data shape without the batch dimension, e.g. (3, 32, 32))")
    process = getattr(obj.process, "kind", obj.process)
    if process not in PROCESSES:
        raise PluginError(f"{where}: attribute 'process' is {obj.process!r}; expected one of {', '.join(PROCESSES)}")
    nc = getattr(obj, "num_classes", None)
    if nc is not None and (isinstance(nc, bool) or not isinstance(nc, int) or nc < 0):
        raise PluginError(f"{where}: attribute 'num_classes' is {nc!r}; expected a non-negative int (0: unconditional)")
    prior = getattr(obj, "prior", None)
    if prior is not None and not callable(prior):
        raise PluginError(f"{where}: attribute 'prior' is not callable; expected prior(n, generator=None)")
    if prior is None and not process_kind(process).gaussian_prior:
        raise PluginError(f"{where}: a {process!r} process has no default prior; define prior(n, generator=None)")
    return float(smin), float(smax), tuple(int(s) for s in shape), str(process)


class PluginModel:
    """A user's denoiser, checked, with the toolkit's Model contract (prior, fingerprint, provenance)."""

    def __init__(self, obj: Any, ref: str, args: dict | None = None, *, name: str | None = None,
                 trust_pickle: bool = False):
        self.obj = obj
        self.factory = ref
        self.args = dict(args or {})
        self.sigma_min, self.sigma_max, self.shape, self.process = _check_attributes(obj, ref)
        self.name = name or getattr(obj, "name", None) or ref.split(":")[-1]
        self.num_classes = int(getattr(obj, "num_classes", 0) or 0)
        self.null_label = bool(getattr(obj, "null_label", False))
        self.description = getattr(obj, "description", "") or f"plug-in model {ref}"
        files = getattr(obj, "weight_files", None) or []
        if isinstance(files, (str, os.PathLike)):
            files = [files]
        self.weight_files: dict[str, str] = {}
        for f in files:
            if not Path(f).is_file():
                raise PluginError(f"plug-in model from {ref!r}: attribute 'weight_files' names {str(f)!r}, "
                                  "which is not a file; expected paths of the weight files the model reads")
            self.weight_files[str(f)] = file_sha256(f)
        self.trust_pickle = bool(trust_pickle)
        for attr in ("sample_data", "floor_data", "data_from_state", "distribution", "cld"):
            if getattr(obj, attr, None) is not None:
                setattr(self, attr, getattr(obj, attr))

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **conditioning) -> torch.Tensor:
        with network_grad_mode(x, sigma):  # gradients only when the caller asks for them (models/base.py)
            return self.obj(x, sigma, **conditioning)

    def prior(self, n: int, generator=None, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """The model's own prior, or sigma_max * N(0, I) with EDM's float32 per-sample draws."""
        own = getattr(self.obj, "prior", None)
        if own is not None:
            return own(n, generator=generator)
        return self.sigma_max * randn_like(torch.empty((n, *self.shape), dtype=dtype), generator)

    def provenance(self) -> dict[str, Any]:
        return {"factory": self.factory, "args": self.args, "weight_files": self.weight_files,
                "process": self.process, "sigma_min": self.sigma_min, "sigma_max": self.sigma_max,
                "shape": list(self.shape), "num_classes": self.num_classes, "trust_pickle": self.trust_pickle}

    def fingerprint(self) -> str:
        # the weights enter through their files' bytes: same factory + args, other weights -> another cell
        prov = {k: v for k, v in self.provenance().items() if k != "weight_files"}  # paths may move; bytes count
        return tensor_hash(extra={"plugin": prov, "weights": sorted(self.weight_files.values())})

    def __repr__(self) -> str:
        return f"<PluginModel {self.name!r} from {self.factory} shape={list(self.shape)}>"


def probe(model: PluginModel, device: str | torch.device = "cpu") -> None:
    """One call at sigma_max and sigma_min (batch of 2): output shape, floating dtype and finite values."""
    where = f"plug-in model from {model.factory!r}"
    gens = [torch.Generator().manual_seed(s) for s in (0, 1)]
    try:
        x = model.prior(2, generator=gens)
    except Exception as e:
        raise PluginError(f"{where}: prior(2, generator=[...]) raised {type(e).__name__}: {e}") from None
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise PluginError(f"{where}: prior(2) returned {type(x).__name__}; expected a floating torch.Tensor")
    x = x.to(device)
    sigma = torch.tensor([model.sigma_max, model.sigma_min], dtype=x.dtype, device=device)
    cond = {}
    if model.num_classes:
        cond["class_labels"] = torch.tensor([0, model.num_classes - 1], device=device)
    try:
        out = model(x, sigma, **cond)
    except Exception as e:
        raise PluginError(f"{where}: the probe call model(x, sigma{', class_labels=...' if cond else ''}) with "
                          f"x of shape {list(x.shape)} and sigma = [sigma_max, sigma_min] raised "
                          f"{type(e).__name__}: {e}") from None
    if not isinstance(out, torch.Tensor):
        raise PluginError(f"{where}: the denoiser returned {type(out).__name__}; expected a torch.Tensor")
    if tuple(out.shape) != tuple(x.shape):
        raise PluginError(f"{where}: the denoiser returned shape {list(out.shape)} for x of shape {list(x.shape)}; "
                          "expected the shape of x (E[x0 | x])")
    if not out.is_floating_point():
        raise PluginError(f"{where}: the denoiser returned dtype {out.dtype}; expected a floating dtype")
    if not torch.isfinite(out).all():
        raise PluginError(f"{where}: the denoiser returned NaN or inf at sigma in [{model.sigma_min}, {model.sigma_max}]; "
                          "expected finite values over the model's whole noise range")


def _accepts(fn: Callable, keyword: str) -> bool:
    try:
        return keyword in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def load_plugin(ref: str, args: dict | None = None, *, trust_pickle: bool = False, name: str | None = None,
                device: str | torch.device = "cpu") -> PluginModel:
    """Import ``ref`` ("module:factory"), call it with ``args``, check and probe what it returns."""
    factory = import_object(ref)
    kwargs = dict(args or {})
    if getattr(factory, "unpickles", False):
        if not trust_pickle:
            raise PluginError(f"factory {ref!r} unpickles a file, which can run arbitrary code; sampler-bench only "
                              "calls it when the spec says trust_pickle = true (do that only for files you trust)")
        kwargs["trust_pickle"] = True
    if "device" not in kwargs and _accepts(factory, "device"):
        kwargs["device"] = str(device)  # a factory that takes a device gets the spec's
    try:
        obj = factory(**kwargs)
    except PluginError:
        raise
    except Exception as e:
        raise PluginError(f"factory {ref!r} raised {type(e).__name__}: {e}") from None
    model = PluginModel(obj, ref, args, name=name, trust_pickle=trust_pickle)
    probe(model, device)
    return model


__all__ = ["DenoiserProtocol", "PluginModel", "PluginError", "load_plugin", "probe", "import_object", "unpickles",
           "file_sha256", "NULL_LABEL", "PROCESSES"]
