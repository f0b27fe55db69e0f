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
from outside" of the project's rules: no pickles from outside), and a config that does not match its weights (wrong hash, missing or
unexpected tensors, wrong shapes), each with one message that says what is wrong.

``load_model(path)`` returns a :class:`TrainedModel` that satisfies the
:class:`~sampler_bench.models.base.Model` contract: a denoiser ``model(x, sigma)``, its data
``shape``, ``sigma_min``/``sigma_max``, ``process`` ('gaussian' or 'pfgmpp'), ``prior(n, generator)``
and ``sample_data(n, generator)`` (the dataset's held-out split, for reference statistics).
A CLD checkpoint (``process.name == "cld"``, ``precond.type == "cld"``) is the CLD model contract of
:mod:`sampler_bench.processes.cld` instead: ``model(u, t)`` returns eps of the state u = (x, v),
``prior(n)`` has shape [n, 2, *shape], ``model.process_def`` is its process and ``data_from_state(u)`` = u[:, 0].
A BDM checkpoint (``process.name == "bdm"``, ``precond.type == "bdm"``) likewise returns eps: ``model(z, t)``
on the image state z (:mod:`sampler_bench.processes.bdm`).
A Yukawa checkpoint (``process.name == "yukawa"``, ``precond.type == "yukawa"``) is a denoiser in z, ``model(x, z)``,
with a birth/death-rate head: ``model.denoise_with_rate(x, z)`` returns (D, kappa) from one evaluation
(:mod:`sampler_bench.processes.yukawa`).
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
from .networks import build_bdm_network, build_cld_network, build_network, build_yukawa_network
from .precond import build_precond
from .trained import CheckpointError, TrainedModel  # noqa: F401  re-exported

FORMAT = "sampler-bench-checkpoint"
#: 2: ``content_sha256`` covers the config as well as the weights (format 1 hashed only the weights, so an
#: edited ``process`` or ``sigma_data`` went unnoticed); upgrade a trusted format-1 pair with
#: ``python -m sampler_bench.models.upgrade NAME``.
FORMAT_VERSION = 2
PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".bin")
#: Config keys that describe a checkpoint without changing what it computes; every other key (process,
#: kind, network, precond, dataset, shape, sigma_data, reference_split, adapter, ...) is hashed.
DESCRIPTIVE_KEYS = ("format", "format_version", "name", "description", "training", "weights_sha256", "content_sha256",
                    "field_sha256")
#: Largest config file read (a config is a few KB of JSON).
MAX_CONFIG_BYTES = 4 << 20
#: Environment variable naming the folders (os.pathsep-separated) that dataset paths in a checkpoint config
#: may point into; default :data:`DEFAULT_DATA_ROOT`. A relative path resolves against the first folder.
DATA_ROOT_ENV = "SAMPLER_BENCH_DATA_ROOT"
DEFAULT_DATA_ROOT = "~/.cache/sampler-bench"
#: Keys of a dataset config that name a file or folder.
DATASET_PATH_KEYS = ("path", "root")


def content_fields(config: dict[str, Any]) -> dict[str, Any]:
    """The part of a config that changes what the model computes (everything but :data:`DESCRIPTIVE_KEYS`)."""
    return {k: v for k, v in config.items() if k not in DESCRIPTIVE_KEYS}


def content_sha256(weights_digest: str, config: dict[str, Any]) -> str:
    """sha256 over the weights hash and the canonical JSON of :func:`content_fields`: the checkpoint's content."""
    payload = json.dumps({"weights_sha256": weights_digest, "config": content_fields(config)},
                         sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(payload.encode()).hexdigest()


def _leaves(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_leaves(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: value}


def field_hashes(config: dict[str, Any]) -> dict[str, str]:
    """A short hash per hashed field (dotted path, e.g. ``process.sigma_max``), so that a config edit is
    reported by the name of the field that changed."""
    return {k: hashlib.sha256(json.dumps(v, sort_keys=True).encode()).hexdigest()[:12]
            for k, v in sorted(_leaves(content_fields(config)).items())}


def changed_fields(recorded: dict[str, str], config: dict[str, Any]) -> list[str]:
    """Dotted paths whose value is not the one recorded in ``field_sha256`` (changed, added or removed)."""
    now = field_hashes(config)
    out = []
    for key in sorted(set(recorded) | set(now)):
        if key not in now:
            out.append(f"{key} (removed)")
        elif key not in recorded:
            out.append(f"{key} = {_leaves(content_fields(config))[key]!r} (added)")
        elif recorded[key] != now[key]:
            out.append(f"{key} (now {_leaves(content_fields(config))[key]!r})")
    return out


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


def _hashed(config: dict[str, Any], digest: str) -> dict[str, Any]:
    """``config`` with format, weights hash, content hash and per-field hashes (what is written as JSON)."""
    body = {k: v for k, v in config.items() if k not in ("format", "format_version", "weights_sha256",
                                                          "content_sha256", "field_sha256")}
    return {"format": FORMAT, "format_version": FORMAT_VERSION, **body, "weights_sha256": digest,
            "content_sha256": content_sha256(digest, body), "field_sha256": field_hashes(body)}


def save_checkpoint(path: str | Path, model: nn.Module | dict[str, torch.Tensor], config: dict[str, Any]) -> tuple[Path, Path]:
    """Write ``model``'s state dict (or a state dict) and ``config`` (plus format and hash) as a pair."""
    from safetensors.torch import save_file

    weights_path, config_path = checkpoint_paths(path)
    state = model.state_dict() if isinstance(model, nn.Module) else model
    tensors = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    digest = weights_sha256(tensors)
    full = _hashed(config, digest)
    weights_path.parent.mkdir(parents=True, exist_ok=True)
    tmp_w, tmp_c = weights_path.with_suffix(".safetensors.tmp"), config_path.with_suffix(".json.tmp")
    save_file(tensors, str(tmp_w), metadata={"format": FORMAT, "weights_sha256": digest})
    tmp_c.write_text(json.dumps(full, indent=2, sort_keys=False) + "\n")
    tmp_w.replace(weights_path)  # the pair appears only complete (a crash mid-write leaves the old pair)
    tmp_c.replace(config_path)
    return weights_path, config_path


def read_config(config_path: Path) -> dict[str, Any]:
    """The JSON config of a checkpoint, parsed and typed; CheckpointError for anything else."""
    try:
        with open(config_path, "rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as e:
        raise CheckpointError(f"{config_path} cannot be read: {e.strerror}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise CheckpointError(f"{config_path} is larger than {MAX_CONFIG_BYTES >> 20} MiB; it is not a checkpoint config")

    def no_constant(name):
        raise CheckpointError(f"{config_path} holds {name}, which is not JSON a checkpoint config may hold")

    try:
        config = json.loads(data.decode("utf-8"), parse_constant=no_constant)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{config_path} is not valid JSON: {e}") from None
    except RecursionError:
        raise CheckpointError(f"{config_path} is nested too deeply to be a checkpoint config") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise CheckpointError(f"{config_path} is not a sampler-bench checkpoint config (its 'format' is not {FORMAT!r})")
    version = config.get("format_version", 0)
    if isinstance(version, bool) or not isinstance(version, int):
        raise CheckpointError(f"{config_path}: format_version must be an integer, got {version!r}")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{config_path} has format_version {version}; this sampler-bench reads "
                              f"up to {FORMAT_VERSION}: upgrade sampler-bench")
    if version < FORMAT_VERSION:
        raise CheckpointError(
            f"{config_path} has format_version {version}, whose hash covers only the weights, so an edit of its "
            "config (process, sigma_max, sigma_data, ...) could not be detected. If you trust this config, upgrade "
            f"it with `python -m sampler_bench.models.upgrade {config_path.with_suffix('')}`")
    shape = config.get("shape")
    if not isinstance(shape, list) or not shape or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in shape):
        raise CheckpointError(f"{config_path}: shape must be a list of positive integers, got {shape!r:.80}")
    return config


def _header(weights_path: Path) -> tuple[dict[str, list[int]], dict[str, str]]:
    """(tensor name -> shape, metadata) from the safetensors header, without reading any tensor."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(weights_path), framework="pt") as f:
            return {k: list(f.get_slice(k).get_shape()) for k in f.keys()}, dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{weights_path} is not a readable safetensors file: {e}") from None


def _check_content(config: dict[str, Any], config_path: Path, metadata: dict[str, str]) -> None:
    """Refuse a config whose hashed content is not what was saved, naming the fields that changed."""
    claimed = config.get("weights_sha256")
    if not isinstance(claimed, str) or content_sha256(claimed, config) != config.get("content_sha256"):
        recorded = config.get("field_sha256")
        fields = changed_fields(recorded, config) if isinstance(recorded, dict) else []
        detail = ("changed: " + "; ".join(fields[:6]) + (f"; and {len(fields) - 6} more" if len(fields) > 6 else "")
                  if fields else "its content hash does not match (process, network, precond, dataset, shape, "
                                 "sigma_data or content_sha256 was edited)")
        raise CheckpointError(f"{config_path} was modified after the checkpoint was saved: {detail}; restore the "
                              "original config or re-save the model (an edited config would be silently wrong)")


def data_roots() -> list[Path]:
    """The folders dataset paths in a checkpoint config may point into (``$SAMPLER_BENCH_DATA_ROOT``)."""
    import os

    raw = os.environ.get(DATA_ROOT_ENV) or DEFAULT_DATA_ROOT
    return [Path(r).expanduser().resolve() for r in raw.split(os.pathsep) if r]


def _confine_dataset_paths(config: dict[str, Any], config_path: Path) -> None:
    """Resolve the dataset's file/folder paths inside :func:`data_roots` (in place), or refuse them."""
    dataset = config.get("dataset")
    if not isinstance(dataset, dict):
        return
    roots = data_roots()
    for key in DATASET_PATH_KEYS:
        value = dataset.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            raise CheckpointError(f"{config_path}: dataset {key} must be a string path, got {value!r:.60}")
        p = Path(value).expanduser()
        resolved = (p if p.is_absolute() else roots[0] / p).resolve()
        if not any(resolved == r or r in resolved.parents for r in roots):
            raise CheckpointError(
                f"{config_path}: dataset {key} {value!r} resolves to {str(resolved)!r}, outside the data root(s) "
                f"{', '.join(map(str, roots))}; a checkpoint may only read data there. Set {DATA_ROOT_ENV} to the "
                "folder that holds your datasets")
        dataset[key] = str(resolved)


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, config) of a checkpoint pair, with format, content hash, shapes and weights hash checked.

    Everything that needs no tensor is checked first (the config, its content hash, its dataset paths
    and, for a network config, every parameter shape against the safetensors header), so a hostile
    config cannot make the loader allocate what its weights do not hold.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    weights_path, config_path = checkpoint_paths(path)
    for p, what in ((weights_path, "weights"), (config_path, "config")):
        if not p.exists():
            raise CheckpointError(f"checkpoint {what} file {p} not found; a checkpoint is a NAME.safetensors + NAME.json pair")
    config = read_config(config_path)
    shapes, metadata = _header(weights_path)
    _check_content(config, config_path, metadata)
    _confine_dataset_paths(config, config_path)
    if config.get("adapter") is None:
        _check_shapes_before_loading(config, shapes, config_path, weights_path)
    try:
        tensors = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{weights_path} is not a readable safetensors file: {e}") from None
    digest = weights_sha256(tensors)
    if config.get("weights_sha256") != digest:
        raise CheckpointError(f"{weights_path} does not match its config {config_path.name}: the weights hash is {digest[:16]}..., "
                              f"the config expects {str(config.get('weights_sha256'))[:16]}...; the pair was mixed up or modified")
    return tensors, config


def _check_shapes_before_loading(config: dict[str, Any], shapes: dict[str, list[int]], config_path: Path,
                                 weights_path: Path) -> None:
    """Build the config's network on the 'meta' device (no memory) and compare every parameter shape with
    the safetensors header; CheckpointError naming the first difference."""
    try:
        with torch.device("meta"):
            module = build_denoiser(config)
    except KeyError as e:
        raise CheckpointError(f"{config_path}: the config has no {e.args[0]!r} entry") from None
    except (ValueError, TypeError, RuntimeError, AttributeError, OverflowError) as e:
        raise CheckpointError(f"{config_path}: the network it describes cannot be built: {e}") from None
    parts = _shape_mismatches({k: list(v.shape) for k, v in module.state_dict().items()}, shapes)
    if parts:
        raise CheckpointError(f"{weights_path}: the weights do not fit the network its config describes "
                              "(compared before loading anything): " + "; ".join(parts))


def _shape_mismatches(expected: dict[str, list], found: dict[str, list]) -> list[str]:
    """What differs between the parameter shapes a config describes and those a file holds (empty: none)."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    wrong = sorted(k for k in set(expected) & set(found) if expected[k] != found[k])
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
    if wrong:
        k = wrong[0]
        parts.append(f"{len(wrong)} with other shapes (e.g. {k}: config {expected[k]}, file {found[k]})")
    return parts


def build_denoiser(config: dict[str, Any]) -> nn.Module:
    """The preconditioned network a config describes (weights not loaded); for CLD and BDM, the eps network."""
    shape = tuple(config["shape"])
    if config["process"].get("name") == "cld":
        return build_cld_network(config["network"], config.get("precond", {"type": "cld"}),
                                 process_from_config(config["process"]), shape)
    if config["process"].get("name") == "bdm":
        return build_bdm_network(config["network"], config.get("precond", {"type": "bdm"}),
                                 process_from_config(config["process"]), shape)
    if config["process"].get("name") == "yukawa":
        return build_yukawa_network(config["network"], config.get("precond", {"type": "yukawa"}),
                                    process_from_config(config["process"]), shape)
    net = build_network(config["network"], shape)
    return build_precond(config.get("precond", {"type": "edm", "sigma_data": config.get("sigma_data", 0.5)}), net)


def load_weights(module: nn.Module, tensors: dict[str, torch.Tensor], where: str) -> None:
    """Load ``tensors`` into ``module`` or raise one CheckpointError listing what does not match."""
    parts = _shape_mismatches({k: list(v.shape) for k, v in module.state_dict().items()},
                              {k: list(v.shape) for k, v in tensors.items()})
    if parts:
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
    if config.get("adapter") == "edm":  # converted by `sampler-bench import edm`: EDM's class + these weights
        from .edm import checked_model

        return checked_model(tensors, config, weights_path, load_weights, device)
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
                         fingerprint=tensor_hash(extra={"content_sha256": config["content_sha256"]}))
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


def upgrade(path: str | Path) -> Path:
    """Rewrite a trusted format-1 config as format 2 (adds ``content_sha256``; the weights are untouched).

    Run it only on a config you trust: the point of format 2 is that later edits are detected.
    """
    weights_path, config_path = checkpoint_paths(path)
    config = json.loads(config_path.read_text())
    if config.get("format") != FORMAT:
        raise CheckpointError(f"{config_path} is not a sampler-bench checkpoint config")
    from safetensors.torch import load_file

    digest = weights_sha256(load_file(str(weights_path)))
    if config.get("weights_sha256") != digest:
        raise CheckpointError(f"{weights_path} does not match the weights hash of {config_path.name}; not upgrading")
    full = _hashed(config, digest)
    tmp = config_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(full, indent=2, sort_keys=False) + "\n")
    tmp.replace(config_path)
    return config_path
