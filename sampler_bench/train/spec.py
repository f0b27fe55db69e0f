"""Training specs: a TOML file that says what to train, on what, for how long.

Example (``benchmarks/train_digits_edm.toml``)::

    name = "digits-edm"
    description = "8x8 digits, EDM (Gaussian, D = inf)"

    [data]                    # sampler_bench.data.load_dataset
    name = "digits"

    [process]                 # sampler_bench.processes.catalog.process_from_config
    name = "edm"              # edm | ve | vp | pfgmpp (with D = 128, or D = "inf") | cld

    [network]                 # sampler_bench.models.networks.build_network
    type = "unet"
    channels = 32
    channel_mult = [1, 2, 2]

    [precond]                 # optional; default EDM with sigma_data measured on the training set
    type = "edm"              # CLD: "cld" (sampler_bench.models.networks.CLDEpsNetwork)

    [train]
    steps = 20000             # optimizer steps
    batch = 256               # global batch (split over ranks under torchrun)
    lr = 2e-3                 # AdamW peak learning rate
    ...                       # see TRAIN_DEFAULTS

Every key is checked before training starts; a mistake stops with one ValueError naming the table,
the key and what is allowed.
"""

from __future__ import annotations

import copy
import hashlib
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..options import closest

TOP_KEYS = ("name", "description", "data", "process", "network", "precond", "train")

#: [train] keys and their defaults
TRAIN_DEFAULTS: dict[str, Any] = {
    "steps": 10000,             # optimizer steps in total
    "batch": 256,               # global batch size
    "lr": 1e-3,                 # peak learning rate (AdamW)
    "betas": [0.9, 0.999],      # AdamW betas
    "weight_decay": 0.0,        # AdamW decoupled weight decay
    "warmup_steps": 200,        # linear learning-rate warm-up
    "lr_decay": "cosine",       # "cosine" (to lr_min at the last step) or "none"
    "lr_min": 0.0,              # final learning rate of the cosine decay
    "grad_clip": 1.0,           # max global gradient norm (0 disables)
    "ema_halflife_samples": 50000,
    "ema_rampup_ratio": 0.05,   # EDM's ramp-up; 0 disables
    "checkpoint_every": 1000,   # steps between checkpoints (model + resumable state)
    "log_every": 50,            # steps between log lines / progress updates
    "seed": 0,
    "amp": True,                # bfloat16 autocast when training on CUDA (ignored on the CPU)
    "device": "auto",           # "auto" (cuda if available), "cpu", "cuda", "cuda:N"
    "threads": 0,               # torch CPU threads (0: leave torch's default)
}
#: keys that may change between an interrupted run and its resumption (the run stays the same run)
RESUMABLE_CHANGES = ("steps", "checkpoint_every", "log_every", "device", "threads", "amp")


@dataclass
class TrainSpec:
    name: str
    data: dict[str, Any]
    process: dict[str, Any]
    network: dict[str, Any]
    precond: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=lambda: dict(TRAIN_DEFAULTS))
    description: str = ""
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "data": self.data, "process": self.process,
                "network": self.network, "precond": self.precond, "train": self.train}

    def run_hash(self) -> str:
        """Identifies the run: everything except the keys that may change on resume."""
        d = copy.deepcopy(self.to_dict())
        for k in RESUMABLE_CHANGES:
            d["train"].pop(k, None)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def _table(raw: dict, key: str, where: str) -> dict:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        raise ValueError(f"{where}: [{key}] must be a table, got {value!r}")
    return dict(value)


def _check_train(train: dict, where: str) -> dict:
    out = dict(TRAIN_DEFAULTS)
    for key, value in train.items():
        if key not in TRAIN_DEFAULTS:
            raise ValueError(f"{where}: unknown key [train].{key}{closest(key, list(TRAIN_DEFAULTS))}; "
                             f"allowed: {', '.join(TRAIN_DEFAULTS)}")
        default = TRAIN_DEFAULTS[key]
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, int):
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif isinstance(default, float):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        elif isinstance(default, list):
            ok = isinstance(value, list) and len(value) == len(default) and all(isinstance(v, (int, float)) for v in value)
        else:
            ok = isinstance(value, type(default))
        if not ok:
            raise ValueError(f"{where}: [train].{key} = {value!r} has the wrong type; expected something like {default!r}")
        out[key] = value
    positive = ("steps", "batch", "lr", "ema_halflife_samples", "checkpoint_every", "log_every")
    for key in positive:
        if not out[key] > 0:
            raise ValueError(f"{where}: [train].{key} must be positive, got {out[key]!r}")
    for key in ("warmup_steps", "weight_decay", "grad_clip", "lr_min", "ema_rampup_ratio", "threads"):
        if out[key] < 0:
            raise ValueError(f"{where}: [train].{key} must be >= 0, got {out[key]!r}")
    if out["lr_decay"] not in ("cosine", "none"):
        raise ValueError(f"{where}: [train].lr_decay must be 'cosine' or 'none', got {out['lr_decay']!r}")
    if not all(0 <= b < 1 for b in out["betas"]):
        raise ValueError(f"{where}: [train].betas must lie in [0, 1), got {out['betas']!r}")
    return out


def parse_spec(raw: dict[str, Any], source: str = "", where: str = "train spec") -> TrainSpec:
    """Validate a parsed TOML table (data/process/network are checked by building them)."""
    from ..data import DATASETS
    from ..models.networks import NETWORKS

    for key in raw:
        if key not in TOP_KEYS:
            raise ValueError(f"{where}: unknown key {key!r}{closest(key, TOP_KEYS)}; allowed: {', '.join(TOP_KEYS)}")
    for key in ("data", "process", "network"):
        if key not in raw:
            raise ValueError(f"{where}: the [{key}] table is missing")
    data, process, network = _table(raw, "data", where), _table(raw, "process", where), _table(raw, "network", where)
    if data.get("name") not in DATASETS:
        raise ValueError(f"{where}: [data].name {data.get('name')!r} is not a dataset{closest(str(data.get('name')), list(DATASETS))}; "
                         f"available: {', '.join(sorted(DATASETS))}")
    if network.get("type") not in NETWORKS:
        raise ValueError(f"{where}: [network].type {network.get('type')!r} is not a network"
                         f"{closest(str(network.get('type')), list(NETWORKS))}; available: {', '.join(NETWORKS)}")
    from ..processes.catalog import process_from_config

    try:
        process_from_config(process)
    except ValueError as e:
        raise ValueError(f"{where}: [process]: {e}") from None
    precond = _table(raw, "precond", where)
    if process.get("name") == "cld":  # CLD networks predict eps of u = (x, v): their own input scaling only
        if precond.get("type", "cld") != "cld":
            raise ValueError(f"{where}: a CLD model takes [precond].type = 'cld' (or no [precond]), "
                             f"got {precond.get('type')!r}")
        extra = sorted(set(precond) - {"type", "sigma_data", "skip"})
        if extra:
            raise ValueError(f"{where}: unknown key [precond].{extra[0]} for a CLD model; allowed: type, sigma_data, skip")
        if not isinstance(precond.get("skip", True), bool):
            raise ValueError(f"{where}: [precond].skip must be true or false, got {precond['skip']!r}")
    elif process.get("name") == "bdm":  # BDM networks predict eps of the image state: their own scaling only
        if precond.get("type", "bdm") != "bdm":
            raise ValueError(f"{where}: a BDM model takes [precond].type = 'bdm' (or no [precond]), "
                             f"got {precond.get('type')!r}")
        extra = sorted(set(precond) - {"type", "sigma_data", "skip"})
        if extra:
            raise ValueError(f"{where}: unknown key [precond].{extra[0]} for a BDM model; allowed: type, sigma_data, skip")
        if not isinstance(precond.get("skip", True), bool):
            raise ValueError(f"{where}: [precond].skip must be true or false, got {precond['skip']!r}")
    elif process.get("name") == "yukawa":  # a denoiser on sigma(z) = z/sqrt(1 + m z) plus a birth/death-rate head
        if precond.get("type", "yukawa") != "yukawa":
            raise ValueError(f"{where}: a Yukawa model takes [precond].type = 'yukawa' (or no [precond]), "
                             f"got {precond.get('type')!r}")
        extra = sorted(set(precond) - {"type", "sigma_data", "rate_hidden", "rate_depth"})
        if extra:
            raise ValueError(f"{where}: unknown key [precond].{extra[0]} for a Yukawa model; "
                             "allowed: type, sigma_data, rate_hidden, rate_depth")
        for key in ("rate_hidden", "rate_depth"):
            v = precond.get(key, 1)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{where}: [precond].{key} must be a positive integer, got {v!r}")
    elif precond.get("type", "edm") not in ("edm", "ve", "vp"):
        raise ValueError(f"{where}: [precond].type must be edm, ve or vp, got {precond.get('type')!r}"
                         + (" ('cld' is for [process] name = 'cld')" if precond.get("type") == "cld" else ""))
    name = raw.get("name", "model")
    if not isinstance(name, str) or not name or any(c in name for c in "/\\ "):
        raise ValueError(f"{where}: name must be a non-empty string without spaces or slashes, got {name!r}")
    return TrainSpec(name=name, description=str(raw.get("description", "")), data=data, process=process, network=network,
                     precond=precond, train=_check_train(_table(raw, "train", where), where), source=source)


def load_spec(path: str | Path) -> TrainSpec:
    p = Path(path)
    if not p.exists():
        raise ValueError(f"train spec {str(p)!r} not found")
    text = p.read_text()
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{p}: not valid TOML: {e}") from None
    return parse_spec(raw, source=text, where=str(p))
