"""Optimised schedules of a sweep: found once per input, kept on disk, stored with every cell that uses them.

An optimised schedule (:mod:`sampler_bench.solvers.optimised`) depends on the model (its hash), the
sampler and its validated options, the NFE budget (and so the step count), the sigma range and ending,
the method and its parameters (the optimisation seeds among them), and the device type and precision
the warm-up runs in. :func:`schedule_key` hashes exactly these, so a change of any one finds a new
entry; the entry ``<cache>/schedules/<key>.json`` holds the levels (float64; JSON writes the shortest repr, so
they read back bit for bit), the cost counted when they were found, and the inputs.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch

from ..solvers import budget as _budget
from ..solvers import optimised as _optimised

#: Bumped when the meaning of a cached schedule changes (an optimiser's algorithm, the key's fields).
SCHEDULE_CACHE_FORMAT = 1


@dataclass(frozen=True)
class ScheduleRequest:
    """What a cell asks of an optimiser (everything in its cache key)."""

    method: str
    params: Mapping[str, Any]
    model_hash: str
    solver: str
    options: Mapping[str, Any]
    nfe_budget: int
    steps: int
    sigma_min: float
    sigma_max: float
    ends_at_zero: bool
    device_type: str
    precision: str

    def key_fields(self) -> dict:
        """The key's inputs; a method whose levels do not depend on the sampler (``uses_solver`` False) is
        keyed without it, so the cells of every sampler with the same step count share its result."""
        known = _optimised.is_optimiser(self.method)
        uses_solver = _optimised.get(self.method).uses_solver if known else True
        return {"format": SCHEDULE_CACHE_FORMAT, "method": self.method, "params": dict(self.params),
                "version": _optimised.get(self.method).version if known else None,
                "model_hash": self.model_hash, "solver": self.solver if uses_solver else None,
                "options": dict(self.options) if uses_solver else None,
                "nfe_budget": self.nfe_budget, "steps": self.steps, "sigma_min": self.sigma_min,
                "sigma_max": self.sigma_max, "ends_at_zero": self.ends_at_zero, "device_type": self.device_type,
                "precision": self.precision}


def schedule_key(request: ScheduleRequest) -> str:
    return hashlib.sha256(json.dumps(request.key_fields(), sort_keys=True, default=list).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class OptimisedSchedule:
    """A found schedule: the levels, what finding them cost (``cost``: :meth:`Cost.as_dict`), its key,
    and whether this run read it from the cache (the cost is always the one counted when it was found)."""

    sigmas: torch.Tensor
    cost: dict
    key: str
    method: str
    params: dict
    from_cache: bool = False

    def provenance(self) -> dict:
        return {"method": self.method, "params": self.params, "sigmas": self.sigmas.tolist(), "cost": self.cost,
                "cache_key": self.key}


class ScheduleCache:
    """``<directory>/<key>.json`` per optimised schedule; without a directory, memory only."""

    def __init__(self, directory: str | Path | None):
        self.directory = Path(directory) if directory is not None else None
        self._memory: dict[str, OptimisedSchedule] = {}

    def path(self, key: str) -> Path | None:
        return None if self.directory is None else self.directory / f"{key}.json"

    def get(self, request: ScheduleRequest, model, device: str = "cpu", dtype=torch.float64) -> OptimisedSchedule:
        """The schedule of ``request``: from memory, from disk, or found now (and written)."""
        key = schedule_key(request)
        if key in self._memory:
            return self._memory[key]
        path = self.path(key)
        if path is not None and path.exists():
            entry = json.loads(path.read_text())
            found = OptimisedSchedule(torch.tensor(entry["sigmas"], dtype=torch.float64), entry["cost"], key,
                                      entry["method"], entry["params"], from_cache=True)
        else:
            problem = _optimised.Problem(model, request.solver, dict(request.options), request.steps,
                                         request.sigma_min, request.sigma_max, request.ends_at_zero, device, dtype)
            sigmas, cost = _optimised.run(_optimised.get(request.method), problem, dict(request.params))
            found = OptimisedSchedule(sigmas, cost.as_dict(), key, request.method, dict(request.params))
            if path is not None:
                self._write(path, {**request.key_fields(), "sigmas": [float(v) for v in sigmas],
                                   "cost": found.cost})
        self._memory[key] = found
        return found

    @staticmethod
    def _write(path: Path, entry: dict) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(entry, f, indent=1, sort_keys=True)
        os.replace(tmp, path)  # atomic: a concurrent sweep reads the whole entry or none


def steps_for(solver: str, budget: int, ends_at_zero: bool, options: Mapping[str, Any]) -> tuple[int, dict, str]:
    """(steps, option updates, note) an optimised schedule of ``solver`` gets for ``budget`` NFE, or a
    ValueError saying why the solver cannot take one (its budget is too small, it places its own grid)."""
    from ..solvers.registry import SolverOptionError, info as solver_info

    meta = solver_info(solver)
    if meta.adaptive or meta.plan_grid is not None:
        raise SolverOptionError(
            f"solver {solver!r} places its own grid ({'adaptive steps' if meta.adaptive else 'its reference time grid'}), "
            "so an optimised schedule cannot be given to it; use a fixed schedule or another solver")
    return _budget.steps_for_budget(solver, budget, ends_at_zero, **dict(options))
