"""Published FID-vs-NFE anchors next to the report's own numbers.

The anchors are a committed table, ``benchmarks/anchors/anchors.toml`` (documented in that folder's
README): a paper's value with everything needed to say whether one of our cells measured the same
thing -- the checkpoint, the sampler and its options in sampler-bench's names (``sb_solver``,
``sb_options``), the schedule (``sb_schedule``, ``sb_schedule_params``, ``sigma_min``/``sigma_max``,
``ends_at_zero``) and the NFE under the paper's convention.

A cell matches an anchor when all of these agree: the model's name is the anchor's ``checkpoint`` (or
its fingerprint is the anchor's ``checkpoint_sha256``), the solver is ``sb_solver`` with at least the
anchor's options, the schedule and its parameters are the anchor's, the *counted* NFE equals the
anchor's NFE, the grid ends where the paper's does, and the value is a Fréchet distance in Inception
space (FID). An anchor without ``sb_schedule`` (a schedule sampler-bench does not reproduce) matches
nothing.
"""

from __future__ import annotations

import json
import math
import tomllib
from pathlib import Path
from typing import Any

import pandas as pd

from .document import Paragraph, Table, TableCell
from .tables import format_value

#: the committed table in a source checkout (an installed package passes its own path)
ANCHORS_FILE = Path(__file__).resolve().parents[2] / "benchmarks" / "anchors" / "anchors.toml"
FID_EXTRACTOR = "inception-v3-compat"
REQUIRED = ("id", "value", "paper", "arxiv", "checkpoint", "sampler", "sb_solver", "sb_schedule", "nfe", "ends_at_zero",
            "fid_implementation")


def load_anchors(path: str | Path | None = None) -> list[dict[str, Any]]:
    """The anchors of a TOML file of ``[[anchor]]`` tables ([] when the default file is absent)."""
    p = Path(path) if path is not None else ANCHORS_FILE
    if not p.is_file():
        if path is None:
            return []
        raise ValueError(f"anchors file {p} does not exist")
    try:
        anchors = tomllib.loads(p.read_text()).get("anchor", [])
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"anchors file {p}: malformed TOML: {e}") from None
    for k, a in enumerate(anchors, 1):
        missing = [key for key in REQUIRED if key not in a]
        if missing:
            raise ValueError(f"anchors file {p}: [[anchor]] #{k} lacks {', '.join(missing)}")
    return anchors


def _json(text) -> dict:
    if isinstance(text, dict):
        return text
    try:
        return json.loads(text) if isinstance(text, str) and text else {}
    except json.JSONDecodeError:
        return {}


def _same(a, b) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def matches(anchor: dict, cell) -> bool:
    """Whether a stored cell (a row of ``store.cells()``) measured what ``anchor`` reports."""
    if not anchor.get("sb_schedule"):
        return False
    names = {str(anchor["checkpoint"])}
    if anchor.get("checkpoint_sha256"):
        names.add(str(anchor["checkpoint_sha256"]))
    if str(cell.model) not in names and str(getattr(cell, "model_hash", "")) not in names:
        return False
    if cell.solver != anchor["sb_solver"] or cell.schedule != anchor["sb_schedule"]:
        return False
    options, params = _json(cell.options), _json(cell.schedule_params)
    if any(k not in options or not _same(options[k], v) for k, v in anchor.get("sb_options", {}).items()):
        return False
    if any(k not in params or not _same(params[k], v) for k, v in anchor.get("sb_schedule_params", {}).items()):
        return False
    for key in ("sigma_min", "sigma_max"):
        if anchor.get(key) and not math.isclose(float(getattr(cell, key)), float(anchor[key]), rel_tol=1e-6):
            return False
    if cell.nfe_counted is None or pd.isna(cell.nfe_counted) or int(cell.nfe_counted) != int(anchor["nfe"]):
        return False
    return bool(cell.ends_at_zero) == bool(anchor["ends_at_zero"])


def matched(cells: pd.DataFrame, values: pd.DataFrame, anchors: list[dict]) -> list[tuple[dict, Any, float]]:
    """(anchor, cell, our FID) for every finished cell with an Inception FD value that matches an anchor."""
    if not anchors or not len(cells) or not len(values):
        return []
    fid = values[(values["metric"] == "fd") & (values["key"] == "fd")]
    if "feature_extractor" in fid.columns:
        fid = fid[fid["feature_extractor"].astype(str) == FID_EXTRACTOR]
    ours = dict(zip(fid["cell_id"], fid["value"].astype(float)))
    out = []
    for cell in cells.itertuples(index=False):
        if getattr(cell, "status", "ok") != "ok" or cell.cell_id not in ours:
            continue
        out += [(a, cell, ours[cell.cell_id]) for a in anchors if matches(a, cell)]
    return out


def anchor_blocks(cells: pd.DataFrame, values: pd.DataFrame, anchors: list[dict] | None = None) -> list:
    """A table of the paper's value beside ours for the matching cells ([] when none match)."""
    found = matched(cells, values, load_anchors() if anchors is None else anchors)
    if not found:
        return []
    rows = []
    for a, cell, v in sorted(found, key=lambda t: (t[0]["sb_solver"], int(t[0]["nfe"]))):
        rows.append((TableCell(a["sampler"]), TableCell(str(a["nfe"])), TableCell(format_value(float(a["value"]))),
                     TableCell(format_value(v)), TableCell(f"{a['paper'].split(',')[0]}, arXiv {a['arxiv']}"),
                     TableCell(a["fid_implementation"])))
    table = Table(("sampler", "NFE", "paper FID", "our FID", "source", "paper's FID protocol"), tuple(rows),
                  caption="Published anchors (benchmarks/anchors/anchors.toml) for the cells that match them: same checkpoint, "
                          "sampler, schedule, counted NFE and final step", label_columns=2)
    return [Paragraph("A paper's number and ours differ by the FID implementation, reference statistics, seeds and sample "
                      "count as well as by the sampler; the last column says what the paper used."), table]


__all__ = ["load_anchors", "matches", "matched", "anchor_blocks", "ANCHORS_FILE"]
