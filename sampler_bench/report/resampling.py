"""Report table of what a resampling sampler did in each cell (``yukawa_smc``; GenPhys, Liu et al., arXiv 2304.02637).

A weighted sampler of the Yukawa flow carries one log-weight per particle (the birth/death term) and resamples a
population when its effective sample size (ESS) drops below a fraction of its size. How often it did so, and how
low the ESS fell, say how much of a cell's population is copies: a user reading an FD next to the NFE must see
it. The sweep stores the record in every value's provenance under ``resampling``
(``sampler_bench.bench.compute.resampling_summary``); this module only lays it out.
"""

from __future__ import annotations

import pandas as pd

from .document import Paragraph, Table, TableCell
from .tables import parse_json, row_order


def _record(values: pd.DataFrame, cell_id: str) -> dict | None:
    """The resampling record of a cell (the same in every metric value of the cell), or None."""
    for prov in values.loc[values["cell_id"] == cell_id, "provenance"]:
        rec = parse_json(prov).get("resampling")
        if isinstance(rec, dict) and "events" in rec:
            return rec
    return None


def _text(rec: dict, budget: int, counted) -> str:
    batches = rec.get("batches") or []
    populations = sum(int(b.get("populations", 1)) for b in batches) or 1
    zs = sorted({round(float(s["z"]), 3) for b in batches for s in b.get("steps", []) if "z" in s}, reverse=True)
    text = f"{int(rec['events'])} in {populations} pop., ESS ≥ {float(rec['min_ess_fraction']):.2f}"
    if zs:
        text += f", z = {', '.join(f'{z:.3g}' for z in zs[:4])}" + (", …" if len(zs) > 4 else "")
    if pd.notna(counted) and int(counted) != int(budget):
        text += f" ({int(counted)} NFE)"
    return text


def resampling_blocks(cells: pd.DataFrame, values: pd.DataFrame) -> list:
    """A paragraph and a sampler x NFE table of resampling events, or [] when no cell resampled.

    ``cells``: the model's kept cells; ``values``: its metric values joined with their cells (``provenance``).
    Rows are the samplers whose finished cells carry a resampling record (unweighted runs carry none).
    """
    if "provenance" not in values.columns or values.empty:
        return []
    ok = cells[cells["status"] == "ok"]
    records = {cid: rec for cid in ok["cell_id"] if (rec := _record(values, cid)) is not None}
    if not records:
        return []
    budgets = sorted(int(b) for b in ok.loc[ok["cell_id"].isin(records), "nfe_budget"].unique())
    rows = []
    for row in row_order(ok[ok["cell_id"].isin(records)]):
        sub = ok[ok["row"] == row]
        line = [TableCell(row)]
        for b in budgets:
            cell = sub[sub["nfe_budget"] == b]
            rec = records.get(cell["cell_id"].iloc[0]) if len(cell) else None
            line.append(TableCell(_text(rec, b, cell["nfe_counted"].iloc[0]) if rec is not None else "–"))
        rows.append(tuple(line))
    sizes = sorted({int(b["population_size"]) for r in records.values() for b in r.get("batches", [])
                    if "population_size" in b})
    thresholds = sorted({float(b["threshold"]) for r in records.values() for b in r.get("batches", [])
                         if "threshold" in b})
    caption = (
        "Columns: NFE budget. Each cell: resampling events during the run, summed over its populations "
        f"(a population is {' or '.join(map(str, sizes)) or 'a batch of'} samples resampled together), the smallest "
        "effective-sample-size fraction any population reached, and the levels z at which events happened "
        "(largest first). Every population is also resampled once at the end, which is not counted. "
        "A number in parentheses is the NFE actually counted where it differs from the budget."
    )
    intro = (
        "The weighted sampler carries the birth/death weights of the Yukawa flow and resamples a population when "
        f"its ESS fraction drops below {' / '.join(f'{t:g}' for t in thresholds) or 'its threshold'}; resampled "
        "particles are copies, which the deterministic flow does not separate again. Samplers run without weights "
        "(weighted = false) never resample and are not listed."
    )
    return [Paragraph(intro), Table(("sampler", *map(str, budgets)), tuple(rows), caption=caption)]
