"""What the results store keeps of a computed cell: its row (definition, plan, counted NFE, timings,
status), next to the metric rows of :func:`.compute.finish_cell`."""

from __future__ import annotations

import json
import platform
import socket

import torch

from ..version import __version__
from .cells import Cell
from .compute import Outcome
from .labels import options_label, requested_order


def environment() -> dict[str, str]:
    """Software and host recorded with every sweep."""
    return {
        "version": __version__, "hostname": socket.gethostname(), "python": platform.python_version(),
        "torch": torch.__version__,
    }


def _json(value) -> str:
    return json.dumps(value, sort_keys=True, default=list)


def cell_row(cell: Cell, sweep_id: str, outcome: Outcome) -> dict:
    """The store row of ``cell`` as computed in sweep ``sweep_id``: a cell that ran records its plan
    (validated options, NFE the solver's law promises, steps); an ok cell also its counted NFE and
    timings. ``reason`` is why it was skipped or failed, or the notes of an ok cell. ``options_label``
    and ``requested_order`` are what a report prints about the requested configuration
    (:mod:`.labels`), stored so that the report never asks a later registry."""
    spec, plan = cell.spec, cell.plan
    asked = {k: v for k, v in cell.sampler.options.items() if v is not None}
    try:
        order = requested_order(cell.solver, asked)
    except ValueError:
        order = None
    row = {
        "cell_id": cell.cell_id, "sweep_id": sweep_id, "spec_name": spec.name, "model": cell.model.label,
        "model_hash": cell.model.hash, "process": cell.model.process, "solver": cell.sampler.name,
        "options": _json(cell.options), "requested_options": _json(cell.sampler.options),
        "options_label": options_label(cell.solver, asked, cell.nfe_budget, cell.schedule.ends_at_zero),
        "stochastic": cell.solver.stochastic, "declared_order": cell.declared_order, "requested_order": order,
        "schedule": cell.schedule.name,
        "schedule_params": json.dumps(cell.schedule.params, sort_keys=True), "sigma_min": cell.sigma_min,
        "sigma_max": cell.sigma_max, "ends_at_zero": cell.schedule.ends_at_zero, "nfe_budget": cell.nfe_budget,
        "nfe_planned": plan.nfe if plan is not None else None, "nfe_counted": outcome.nfe_counted,
        "steps": plan.steps if plan is not None else None, "n_samples": spec.n_samples, "seed": spec.seed,
        "batch_size": spec.batch_size, "device": spec.device, "precision": spec.precision, "wall_time_s": None,
        "samples_per_s": None, "denoiser_fraction": None, "metric_time_s": None, "status": outcome.status,
        "reason": outcome.reason, "version": __version__,
    }
    shard = outcome.shard
    if outcome.status == "ok" and shard is not None:
        wall = shard.sampling_s
        row.update(wall_time_s=wall, samples_per_s=spec.n_samples / wall if wall > 0 else None,
                   denoiser_fraction=shard.denoiser_s / wall if wall > 0 else None, metric_time_s=shard.metric_s)
    return row
