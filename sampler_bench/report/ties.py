"""Which samplers of a table column are tied with the best, and which sit inside the noise floor.

The rule (stated in every table caption, :data:`TIE_RULE`):

* the *best* cell of a column is the one with the best stored value;
* every other cell is compared with it by a two-sided test of equal population values at 95%:
  *paired* when both cells used the same seeds and sample count (replicate r of both reweights
  the same samples, :func:`sampler_bench.metrics.uncertainty.paired_test`), otherwise from the two
  replicate standard errors; the p-values of a column are Holm-corrected (family-wise 5%);
* a cell is *tied* with the best when the corrected test does not reject equality, or when both
  lie inside the noise floor (their intervals reach the exact samples' interval: neither can be
  told apart from exact sampling at this sample count);
* cells without replicates (stores written before intervals existed) are tied only with an exactly
  equal value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np
import pandas as pd

from ..metrics.uncertainty import holm, paired_test

TIE_RULE = ("Bold: the best value of the column and every sampler not significantly different from it "
            "(two-sided paired test on the shared seeds at 95%, Holm-corrected over the column), or, "
            "when the best is inside the noise floor, every sampler inside it too.")


@dataclass
class ColumnVerdict:
    best: str | None = None
    tied: set = field(default_factory=set)  # includes the best
    in_floor: set = field(default_factory=set)


def _finite(x) -> bool:
    try:
        return x is not None and math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def inside_floor(ci_low: float, ci_high: float, floor: Mapping | None, lower_is_better: bool) -> bool:
    """True when the cell's interval reaches the floor's: it cannot be told apart from exact samples."""
    if floor is None or not (_finite(floor.get("ci_low")) and _finite(floor.get("ci_high"))):
        return False
    if lower_is_better:
        return _finite(ci_low) and float(ci_low) <= float(floor["ci_high"])
    return _finite(ci_high) and float(ci_high) >= float(floor["ci_low"])


def column_verdict(column: pd.DataFrame, replicates: Mapping[str, np.ndarray], lower_is_better: bool,
                   floor: Mapping | None = None, alpha: float = 0.05) -> ColumnVerdict:
    """Ties in one column. ``column``: one row per sampler with ``row``, ``cell_id``, ``value`` and,
    when known, ``corrected``, ``ci_low``, ``ci_high``, ``seed``, ``n_samples``; ``replicates``:
    bootstrap replicate values per cell_id."""
    col = column[np.isfinite(column["value"].astype(float))]
    out = ColumnVerdict()
    if col.empty:
        return out
    best_ix = col["value"].astype(float).idxmin() if lower_is_better else col["value"].astype(float).idxmax()
    best = col.loc[best_ix]
    out.best = best["row"]
    out.tied.add(best["row"])

    def get(r, name):
        return r[name] if name in r.index and _finite(r[name]) else math.nan

    for _, r in col.iterrows():
        if inside_floor(get(r, "ci_low"), get(r, "ci_high"), floor, lower_is_better):
            out.in_floor.add(r["row"])
    others, pvals = [], []
    b_reps = replicates.get(best["cell_id"])
    for ix, r in col.iterrows():
        if ix == best_ix:
            continue
        reps = replicates.get(r["cell_id"])
        if b_reps is None or reps is None or len(reps) < 2 or len(b_reps) < 2:
            p = math.nan
        else:
            same = all(str(r.get(c)) == str(best.get(c)) for c in ("seed", "n_samples")) and len(reps) == len(b_reps)
            a_val = get(r, "corrected") if _finite(get(r, "corrected")) else float(r["value"])
            b_val = get(best, "corrected") if _finite(get(best, "corrected")) else float(best["value"])
            p = paired_test(a_val, reps, b_val, b_reps, paired=same).p_value
        others.append(r["row"])
        pvals.append(p)
    rejected = holm(pvals, alpha)
    best_in_floor = out.best in out.in_floor
    equal = set(col.loc[col["value"].astype(float) == float(best["value"]), "row"])  # exact ties need no test
    for row, p, rej in zip(others, pvals, rejected):
        if (_finite(p) and not rej) or (best_in_floor and row in out.in_floor) or row in equal:
            out.tied.add(row)
    return out
