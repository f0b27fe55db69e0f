"""One-time conversion of an EDM network pickle into sampler-bench's checkpoint format.

See :mod:`sampler_bench.models.edm` for the format and why: after the conversion the network is
rebuilt by constructing EDM's class (its code on ``PYTHONPATH``) and loading safetensors weights, so
benchmarks never unpickle.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from .edm import (DEFAULT_MODULE, EDM_SIGMA_MAX, EDM_SIGMA_MIN, EDMImportError, EDMNetworkModel, build_network,
                  class_name_of, unpickle_network)
from .plugin import file_sha256


def _jsonable(value: Any, where: str) -> Any:
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError):
        raise EDMImportError(f"{where} is not JSON-serialisable ({value!r:.200}); this network cannot be converted, "
                             "use the from_pickle plug-in with trust_pickle = true instead") from None


def import_pickle(path: str | Path, out_dir: str | Path, *, trust_pickle: bool = False, name: str | None = None,
                  module: str = DEFAULT_MODULE) -> tuple[Path, Path]:
    """Convert an EDM network pickle to ``out_dir/NAME.safetensors`` + ``NAME.json``; needs ``trust_pickle``."""
    from .checkpoint import save_checkpoint

    path = Path(path).expanduser()
    if not trust_pickle:
        raise EDMImportError(f"{path}: opening a pickle runs code stored in it; pass --trust-pickle if you trust "
                             "this file (the converted checkpoint is then read without unpickling)")
    if not path.is_file():
        raise EDMImportError(f"{path}: no such file")
    net = unpickle_network(path)
    init_kwargs = getattr(net, "init_kwargs", None)
    init_args = list(getattr(net, "init_args", ()) or ())
    if init_kwargs is None:
        raise EDMImportError(f"{path}: the network has no init_kwargs (EDM's persistence records them); "
                             "cannot rebuild it without unpickling")
    name = name or path.stem
    config = {
        "name": name, "adapter": "edm", "description": f"EDM network imported from {path.name}",
        "process": {"name": "gaussian", "sigma_min": max(float(net.sigma_min), EDM_SIGMA_MIN),
                    "sigma_max": min(float(net.sigma_max), EDM_SIGMA_MAX)},
        "shape": [int(net.img_channels), int(net.img_resolution), int(net.img_resolution)],
        "num_classes": int(net.label_dim),
        "edm": {"module": module, "class_name": class_name_of(net),
                "init_args": _jsonable(init_args, "the network's init_args"),
                "init_kwargs": _jsonable(dict(init_kwargs), "the network's init_kwargs"),
                "source_pickle": path.name, "source_sha256": file_sha256(path)},
    }
    out = Path(out_dir).expanduser()
    return save_checkpoint(out / name, net.state_dict(), config)


def load_converted(path: str | Path, device: str | torch.device = "cpu", null_label: bool = False) -> EDMNetworkModel:
    """A converted EDM checkpoint (from :func:`import_pickle`) as a model, without unpickling anything."""
    from .checkpoint import checkpoint_paths, load_weights, read_checkpoint

    tensors, config = read_checkpoint(path)
    if config.get("adapter") != "edm":
        raise EDMImportError(f"{path} is not a converted EDM checkpoint (its config has no \"adapter\": \"edm\")")
    net = build_network(config)
    weights_path, _ = checkpoint_paths(path)
    load_weights(net, tensors, str(weights_path))
    return EDMNetworkModel(net.to(device), name=config.get("name", "edm"), weight_files=[weights_path],
                           null_label=null_label)


def converted(path: str, device: str = "cpu", null_label: bool = False) -> EDMNetworkModel:
    """Plug-in factory for a converted checkpoint (``python = "sampler_bench.models.edm_import:converted"``)."""
    return load_converted(path, device=device, null_label=null_label)


__all__ = ["import_pickle", "load_converted", "converted"]
