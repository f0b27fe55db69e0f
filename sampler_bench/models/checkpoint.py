"""Checkpoint I/O: a safetensors file of weights plus a JSON config, and ``load_model``.

A checkpoint ``NAME`` is the pair ``NAME.safetensors`` + ``NAME.json``. The JSON says everything
needed to rebuild and trust the model::

    {
      "format": "sampler-bench-checkpoint", "format_version": 1,
      "process": {"name": "pfgmpp", "D": 128, "sigma_min": 0.002, "sigma_max": 80.0, ...},
      "network": {"type": "unet", "channels": 32, ...},
      "precond": {"type": "edm", "sigma_data": 0.57},
      "dataset": {"name": "digits"},  "shape": [1, 8, 8],  "sigma_data": 0.57,
      "training": {"steps": 20000, "batch": 256, "ema": {...}, "seconds": 812.4, "spec": {...}, ...},
      "weights_sha256": "<sha256 over the tensors, in key order>"
    }

Loading refuses anything that is not such a pair (no pickle is ever opened: the principle "no pickles
from outside" of DESIGN.md), and a config that does not match its weights (wrong hash, missing or
unexpected tensors, wrong shapes), each with one message that says what is wrong.

``load_model(path)`` returns a :class:`TrainedModel` that satisfies the
:class:`~sampler_bench.models.base.Model` contract: a denoiser ``model(x, sigma)``, its data
``shape``, ``sigma_min``/``sigma_max``, ``process`` ('gaussian' or 'pfgmpp'), ``prior(n, generator)``
and ``sample_data(n, generator)`` (the dataset's held-out split, for reference statistics).
A CLD checkpoint (``process.name == "cld"``, ``precond.type == "cld"``) is the CLD model contract of
:mod:`sampler_bench.processes.cld` instead: ``model(u, t)`` returns eps of the state u = (x, v),
``prior(n)`` has shape [n, 2, *shape], ``model.process_def`` is its process and ``data_from_state(u)`` = u[:, 0].
A diffusers ``UNet2DModel`` folder is loaded through :mod:`sampler_bench.models.adapters`.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..processes.base import Process
from ..processes.catalog import process_from_config
from .base import tensor_hash
from .networks import build_cld_network, build_network
from .precond import build_precond
from .trained import CheckpointError, TrainedModel  # noqa: F401  re-exported

FORMAT = "sampler-bench-checkpoint"
FORMAT_VERSION = 1
PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".bin")


def weights_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over key names, dtypes, shapes and bytes of every tensor, in sorted key order."""
    h = hashlib.sha256()
    for key in sorted(tensors):
        t = tensors[key].detach().contiguous().cpu()
        h.update(f"{key}|{t.dtype}|{list(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def checkpoint_paths(path: str | Path) -> tuple[Path, Path]:
    """(weights, config) paths of a checkpoint given as ``NAME``, ``NAME.safetensors`` or ``NAME.json``."""
    p = Path(path).expanduser()
    if p.suffix.lower() in PICKLE_SUFFIXES:
        raise CheckpointError(f"{p}: sampler-bench loads no pickled checkpoints ({', '.join(PICKLE_SUFFIXES)}); "
                              "a checkpoint is a NAME.safetensors + NAME.json pair (see checkpoints/README.md)")
    if p.suffix in (".safetensors", ".json"):
        stem = p.with_suffix("")
    else:
        stem = p
    return stem.with_name(stem.name + ".safetensors"), stem.with_name(stem.name + ".json")


def save_checkpoint(path: str | Path, model: nn.Module | dict[str, torch.Tensor], config: dict[str, Any]) -> tuple[Path, Path]:
    """Write ``model``'s state dict (or a state dict) and ``config`` (plus format and hash) as a pair."""
    from safetensors.torch import save_file

    weights_path, config_path = checkpoint_paths(path)
    state = model.state_dict() if isinstance(model, nn.Module) else model
    tensors = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    full = {"format": FORMAT, "format_version": FORMAT_VERSION, **config, "weights_sha256": weights_sha256(tensors)}
    weights_path.parent.mkdir(parents=True, exist_ok=True)
    tmp_w, tmp_c = weights_path.with_suffix(".safetensors.tmp"), config_path.with_suffix(".json.tmp")
    save_file(tensors, str(tmp_w), metadata={"format": FORMAT, "weights_sha256": full["weights_sha256"]})
    tmp_c.write_text(json.dumps(full, indent=2, sort_keys=False) + "\n")
    tmp_w.replace(weights_path)  # the pair appears only complete (a crash mid-write leaves the old pair)
    tmp_c.replace(config_path)
    return weights_path, config_path


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, config) of a checkpoint pair, with format and hash checked."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    weights_path, config_path = checkpoint_paths(path)
    for p, what in ((weights_path, "weights"), (config_path, "config")):
        if not p.exists():
            raise CheckpointError(f"checkpoint {what} file {p} not found; a checkpoint is a NAME.safetensors + NAME.json pair")
    try:
        config = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{config_path} is not valid JSON: {e}") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise CheckpointError(f"{config_path} is not a sampler-bench checkpoint config (its 'format' is not {FORMAT!r})")
    if config.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(f"{config_path} has format_version {config['format_version']}; this sampler-bench reads "
                              f"up to {FORMAT_VERSION}: upgrade sampler-bench")
    try:
        tensors = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{weights_path} is not a readable safetensors file: {e}") from None
    digest = weights_sha256(tensors)
    if config.get("weights_sha256") != digest:
        raise CheckpointError(f"{weights_path} does not match its config {config_path.name}: the weights hash is {digest[:16]}..., "
                              f"the config expects {str(config.get('weights_sha256'))[:16]}...; the pair was mixed up or modified")
    return tensors, config


def build_denoiser(config: dict[str, Any]) -> nn.Module:
    """The preconditioned network a config describes (weights not loaded); for CLD, the eps network."""
    shape = tuple(config["shape"])
    if config["process"].get("name") == "cld":
        return build_cld_network(config["network"], config.get("precond", {"type": "cld"}),
                                 process_from_config(config["process"]), shape)
    net = build_network(config["network"], shape)
    return build_precond(config.get("precond", {"type": "edm", "sigma_data": config.get("sigma_data", 0.5)}), net)


def load_weights(module: nn.Module, tensors: dict[str, torch.Tensor], where: str) -> None:
    """Load ``tensors`` into ``module`` or raise one CheckpointError listing what does not match."""
    own = module.state_dict()
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    wrong = sorted(k for k in set(own) & set(tensors) if tuple(own[k].shape) != tuple(tensors[k].shape))
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if wrong:
            k = wrong[0]
            parts.append(f"{len(wrong)} with other shapes (e.g. {k}: config {list(own[k].shape)}, file {list(tensors[k].shape)})")
        raise CheckpointError(f"{where}: the weights do not fit the network its config describes: " + "; ".join(parts))
    module.load_state_dict(tensors)


def load_model(path: str | Path, device: str | torch.device = "cpu") -> TrainedModel:
    """Load a checkpoint pair (``NAME``, ``NAME.safetensors`` or ``NAME.json``) as a model.

    A directory holding a diffusers ``UNet2DModel`` (``config.json`` + ``scheduler/``) is loaded with
    :func:`sampler_bench.models.adapters.load_diffusers`.
    """
    p = Path(path).expanduser()
    if p.is_dir():
        from .adapters import is_diffusers_dir, load_diffusers

        if is_diffusers_dir(p):
            return load_diffusers(p, device=device)
        raise CheckpointError(f"{p} is a directory; give the checkpoint's NAME.safetensors (or NAME.json) inside it, "
                              "or a diffusers UNet2DModel folder")
    tensors, config = read_checkpoint(p)
    weights_path, _ = checkpoint_paths(p)
    try:
        process = process_from_config(config["process"])
        denoiser = build_denoiser(config)
    except KeyError as e:
        raise CheckpointError(f"{weights_path.with_suffix('.json')}: the config has no {e.args[0]!r} entry") from None
    except ValueError as e:
        raise CheckpointError(f"{weights_path.with_suffix('.json')}: {e}") from None
    load_weights(denoiser, tensors, str(weights_path))
    name = config.get("name") or weights_path.stem
    model = TrainedModel(denoiser, process, config["shape"], config, name=name,
                         fingerprint=tensor_hash(extra={"weights_sha256": config["weights_sha256"], "process": process.config()}))
    return model.to(device)


def model_config(*, process: Process, network: dict, precond: dict, dataset: dict, shape, sigma_data: float,
                 training: dict | None = None, name: str | None = None, description: str = "") -> dict[str, Any]:
    """The JSON config of a checkpoint (without format and hash, which ``save_checkpoint`` adds)."""
    if not math.isfinite(sigma_data) or sigma_data <= 0:
        raise ValueError(f"sigma_data must be positive, got {sigma_data}")
    cfg = {"name": name, "description": description, "process": process.config(), "kind": process.kind,
           "network": network, "precond": precond, "dataset": dataset, "shape": list(shape), "sigma_data": sigma_data,
           "training": training or {}}
    return {k: v for k, v in cfg.items() if v is not None}
