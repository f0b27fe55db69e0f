"""The provenance section: everything needed to reproduce any number of the report.

Per sweep: the spec TOML, the command, the package/Python/torch versions, the host and the run
times. Per model: its name, content hash, process and noise range; the schedule and its
parameters, seeds, sample counts, batch size, device and precision; per metric the feature
extractor, the reference-statistics hash, sample counts and the metric's own provenance record;
and an index of every cell with its exact options and NFE (asked, planned, counted).
"""

from __future__ import annotations

import json
import math
from typing import Any

import pandas as pd

from .document import Bullets, Details, Heading, Paragraph, Table, TableCell, slug
from .tables import DASH, parse_json

SWEEP_FIELDS = ("spec_name", "command", "version", "hostname", "python", "torch", "started_at", "finished_at")
SETTING_COLUMNS = (
    ("model_hash", "model hash"), ("process", "process"), ("sigma_min", "sigma_min"), ("sigma_max", "sigma_max"),
    ("ends_at_zero", "ends at sigma=0"), ("schedule", "schedule"), ("schedule_params", "schedule parameters"),
    ("seed", "seed"), ("n_samples", "samples per cell"), ("batch_size", "batch size"),
    ("device", "device"), ("precision", "precision"), ("version", "sampler-bench version"),
    ("sweep_id", "sweep"),
)
CELL_INDEX_COLUMNS = (
    ("cell_id", "cell"), ("row", "sampler"), ("options", "options (as passed)"), ("nfe_budget", "NFE asked"),
    ("nfe_planned", "planned"), ("nfe_counted", "counted"), ("steps", "steps"), ("schedule", "schedule"),
    ("seed", "seed"), ("n_samples", "n"), ("wall_time_s", "wall s"), ("denoiser_fraction", "in denoiser"),
    ("status", "status"), ("reason", "reason / plan note"),
)


def _text(value: Any) -> str:
    if value is None or (not isinstance(value, (str, bytes, list, dict, tuple)) and pd.isna(value)):
        return DASH
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _distinct(series: pd.Series) -> str:
    values = sorted({_text(v) for v in series}, key=str)
    return "; ".join(values) if values else DASH


def sweeps_blocks(sweeps: pd.DataFrame, sweep_ids: list) -> list:
    """One subsection per sweep that produced cells of this report."""
    blocks: list = [Heading(3, "Sweeps", "provenance-sweeps")]
    known = sweeps[sweeps["sweep_id"].isin(sweep_ids)] if "sweep_id" in sweeps.columns else sweeps.iloc[0:0]
    missing = [s for s in sweep_ids if s not in set(known.get("sweep_id", []))]
    for sw in known.sort_values("sweep_id", key=lambda s: s.astype(str)).itertuples(index=False):
        sw = sw._asdict()
        items = [f"sweep id: {sw['sweep_id']}"] + [f"{f}: {_text(sw.get(f))}" for f in SWEEP_FIELDS if f in sw]
        blocks.append(Bullets(tuple(items)))
        toml = sw.get("spec_toml")
        if isinstance(toml, str) and toml.strip():
            blocks.append(Details(f"sweep spec {_text(sw.get('spec_name'))} (TOML)", toml.rstrip("\n"), "toml"))
    if missing:
        blocks.append(Paragraph(
            "No sweep record for sweep id(s) " + ", ".join(map(str, missing)) + " (cells written without a sweep run)."
        ))
    return blocks


def model_blocks(model: str, cells: pd.DataFrame, metrics: pd.DataFrame) -> list:
    """Settings, metric provenance and the cell index of one model."""
    anchor = f"provenance-{slug(model)}"
    blocks: list = [Heading(3, f"Model {model}", anchor)]
    rows = []
    for col, name in SETTING_COLUMNS:
        if col in cells.columns:
            rows.append((TableCell(name), TableCell(_distinct(cells[col]))))
    blocks.append(Table(("setting", "value(s) over the model's cells"), tuple(rows),
                        caption="Several values are separated by semicolons; the cell index says which cell used which.",
                        label_columns=2))

    if len(metrics):
        mrows = []
        for (metric, key), sub in metrics.groupby(["metric", "key"], sort=True):
            n = _distinct(cells[cells["cell_id"].isin(sub["cell_id"])]["n_samples"]) if "n_samples" in cells else DASH
            mrows.append((
                TableCell(f"{metric} / {key}"),
                TableCell("lower" if bool(sub["lower_is_better"].iloc[0]) else "higher"),
                TableCell(_distinct(sub["feature_extractor"]) if "feature_extractor" in sub else DASH),
                TableCell(_distinct(sub["reference_hash"]) if "reference_hash" in sub else DASH),
                TableCell(n),
                TableCell(_provenance_summary(sub["provenance"]) if "provenance" in sub else DASH),
            ))
        blocks.append(Table(
            ("metric / key", "better", "feature extractor", "reference statistics hash", "samples", "metric provenance"),
            tuple(mrows),
            caption="Metric provenance lists the fields shared by every cell; fields that differ between cells "
                    "are named with their number of distinct values.",
            label_columns=6,
        ))

    index_cols = [(c, n) for c, n in CELL_INDEX_COLUMNS if c in cells.columns]
    ordered = cells.sort_values(["row", "nfe_budget"], kind="stable")
    index_rows = tuple(
        tuple(TableCell(_cell_text(col, cell[col])) for col, _ in index_cols) for _, cell in ordered.iterrows()
    )
    blocks.append(Details(
        f"Cell index of {model} ({len(cells)} cells): exact options, NFE asked / planned / counted, seeds, status",
        table=Table(tuple(n for _, n in index_cols), index_rows, label_columns=len(index_cols)),
    ))
    return blocks


def _cell_text(column: str, value: Any) -> str:
    if column == "cell_id":
        return str(value)[:12]
    if column == "denoiser_fraction" and isinstance(value, (int, float)) and math.isfinite(value):
        return f"{100 * value:.0f}%"
    return _text(value)


def _provenance_summary(records: pd.Series) -> str:
    """Fields equal in every record as ``k=v``; fields that differ as ``k: N values``."""
    parsed = [parse_json(r) for r in records]
    keys = sorted({k for p in parsed for k in p})
    parts = []
    for k in keys:
        values = {json.dumps(p.get(k), sort_keys=True, default=str) for p in parsed}
        if len(values) == 1:
            parts.append(f"{k}={_short(next(iter(values)))}")
        else:
            parts.append(f"{k}: {len(values)} values")
    return ", ".join(parts) if parts else DASH


def _short(json_text: str, limit: int = 80) -> str:
    text = json_text.strip('"')
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"
