"""EDM network pickles (NVlabs/edm ``network-snapshot-*.pkl``; Karras et al., arXiv 2206.00364) as models.

EDM's networks are preconditioned denoisers already: ``net(x, sigma, class_labels)`` returns D(x, sigma)
in the toolkit's own parameterisation (``EDMPrecond``, ``VPPrecond``, ``VEPrecond``, ``iDDPMPrecond``), with
``sigma_min``, ``sigma_max``, ``img_channels``, ``img_resolution`` and ``label_dim`` as attributes; a
class-conditional network takes one-hot ``class_labels`` [B, label_dim]. EDM pickles them through its
``torch_utils.persistence`` (the pickle names EDM's own modules), so opening one runs code from the
file and needs EDM's repository on ``PYTHONPATH``. EDM's code is CC BY-NC-SA and is never copied or
bundled here.

Two ways in:

* :func:`sampler_bench.models.edm_import.import_pickle` (``sampler-bench import edm NETWORK.pkl --out DIR
  --trust-pickle``), once:
  unpickle through EDM's code, then write ``NAME.safetensors`` (the state dict) + ``NAME.json`` (class
  name, constructor arguments, noise range, shape, labels). Afterwards ``sb.load_model`` rebuilds
  the network by *constructing* the class from EDM's module (``training.networks`` by default, on
  ``PYTHONPATH``) and loading the tensors with safetensors: benchmarks never unpickle.
* :func:`from_pickle`, a plug-in factory (``python = "sampler_bench.models.edm:from_pickle"``) that
  unpickles at every load; it runs only with ``trust_pickle = true`` in the spec.
"""

from __future__ import annotations

import importlib
import pickle
from pathlib import Path
from typing import Any

import torch

from .base import network_grad_mode
from .plugin import unpickles

#: attributes every EDM preconditioned network has (training/networks.py of NVlabs/edm)
EDM_ATTRIBUTES = ("img_resolution", "img_channels", "label_dim", "sigma_min", "sigma_max")
DEFAULT_MODULE = "training.networks"
EDM_SIGMA_MIN, EDM_SIGMA_MAX = 0.002, 80.0


class EDMImportError(ValueError):
    """An EDM pickle or converted checkpoint that cannot be used; the message says why."""


def unpickle_network(path: Path) -> Any:
    try:
        with open(path, "rb") as f:
            data = pickle.load(f)
    except FileNotFoundError:
        raise EDMImportError(f"{path}: no such file") from None
    except ModuleNotFoundError as e:
        raise EDMImportError(f"{path}: unpickling needs module {e.name!r} from EDM's code; put a checkout of "
                             "NVlabs/edm (its torch_utils/, dnnlib/, training/) on PYTHONPATH") from None
    except Exception as e:
        raise EDMImportError(f"{path} is not a readable network pickle ({type(e).__name__}: {e})") from None
    net = data.get("ema") if isinstance(data, dict) else data
    if not isinstance(net, torch.nn.Module):
        what = f"a dict with keys {sorted(data)}" if isinstance(data, dict) else type(data).__name__
        raise EDMImportError(f"{path}: expected an EDM snapshot (a dict with an 'ema' network), got {what}")
    missing = [a for a in EDM_ATTRIBUTES if not hasattr(net, a)]
    if missing:
        raise EDMImportError(f"{path}: the network lacks EDM's attribute(s) {', '.join(missing)}; "
                             "is this an NVlabs/edm network pickle?")
    return net.eval().requires_grad_(False)


def class_name_of(net: torch.nn.Module) -> str:
    """The network's class name as EDM's module defines it (persistence keeps it as ``_orig_class_name``)."""
    return str(getattr(net, "_orig_class_name", type(net).__name__))


class EDMNetworkModel:
    """An EDM network as a (plug-in protocol) model: D(x, sigma, class_labels) with integer labels."""

    process = "gaussian"

    def __init__(self, net: torch.nn.Module, name: str = "edm", weight_files=(), null_label: bool = False):
        self.net = net.eval()
        self.name = name
        # EDM's generate.py clamps the network's range to its sampler defaults [0.002, 80]
        # (EDMPrecond declares sigma_min = 0, sigma_max = inf)
        self.sigma_min = max(float(net.sigma_min), EDM_SIGMA_MIN)
        self.sigma_max = min(float(net.sigma_max), EDM_SIGMA_MAX)
        self.shape = (int(net.img_channels), int(net.img_resolution), int(net.img_resolution))
        self.num_classes = int(net.label_dim)
        # EDM's conditional networks see an all-zero label vector only if trained with label dropout
        self.null_label = bool(null_label)
        self.weight_files = [str(f) for f in weight_files]

    @property
    def device(self) -> torch.device:
        p = next(self.net.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    def one_hot(self, class_labels: torch.Tensor | None, batch: int) -> torch.Tensor | None:
        """Integer labels (-1: none) -> EDM's one-hot rows (all zeros for none); None when unconditional."""
        if not self.num_classes:
            return None
        out = torch.zeros(batch, self.num_classes, device=self.device)
        if class_labels is not None:
            labels = torch.as_tensor(class_labels, device=self.device).long()
            rows = torch.nonzero(labels >= 0).flatten()
            out[rows, labels[rows]] = 1
        return out

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        with network_grad_mode(x, sigma):  # gradients only when the caller asks for them (models/base.py)
            out = self.net(x.to(self.device), torch.as_tensor(sigma).to(self.device),
                           self.one_hot(class_labels, x.shape[0]))
        return out.to(device=x.device, dtype=x.dtype)


def build_network(config: dict[str, Any]) -> torch.nn.Module:
    """Construct the converted network's class from EDM's module on PYTHONPATH (weights not loaded)."""
    edm = config["edm"]
    try:
        module = importlib.import_module(edm["module"])
    except Exception as e:
        raise EDMImportError(f"the converted EDM checkpoint needs EDM's module {edm['module']!r} on PYTHONPATH "
                             f"to build {edm['class_name']} ({type(e).__name__}: {e})") from None
    cls = getattr(module, edm["class_name"], None)
    if cls is None:
        raise EDMImportError(f"module {edm['module']!r} has no class {edm['class_name']!r}")
    try:
        return cls(*edm.get("init_args", []), **edm["init_kwargs"])
    except Exception as e:
        raise EDMImportError(f"{edm['module']}.{edm['class_name']}(**init_kwargs) failed ({type(e).__name__}: {e})") from None


def checked_model(tensors: dict, config: dict, weights_path: Path, load_weights, device="cpu"):
    """``sb.load_model`` of a converted checkpoint: the network, probed like any plug-in model.

    ``load_weights(module, tensors, where)`` is the checkpoint loader's own checked weight loading.
    """
    from .plugin import PluginModel, probe

    net = build_network(config)
    load_weights(net, tensors, str(weights_path))
    inner = EDMNetworkModel(net.to(device), name=config.get("name", "edm"), weight_files=[weights_path])
    model = PluginModel(inner, "sampler_bench.models.edm:converted", {}, name=config.get("name"))
    model.config = config
    probe(model, device)
    return model


@unpickles
def from_pickle(path: str, trust_pickle: bool = False, device: str = "cpu", null_label: bool = False) -> EDMNetworkModel:
    """Plug-in factory: an EDM network pickle, unpickled at every load (``trust_pickle = true`` in the spec)."""
    if not trust_pickle:
        raise EDMImportError("from_pickle unpickles a file; the spec must say trust_pickle = true")
    p = Path(path).expanduser()
    return EDMNetworkModel(unpickle_network(p).to(device), name=p.stem, weight_files=[p], null_label=null_label)


__all__ = ["EDMNetworkModel", "EDMImportError", "build_network", "checked_model", "from_pickle", "class_name_of",
           "unpickle_network"]
