"""Tables from stored results: row labels, sampler x NFE metric tables, fitted orders, Pareto fronts.

Everything here is a pure function of the results-store DataFrames (``ResultsStore.cells()`` and
``ResultsStore.metrics()``, columns documented in sampler_bench/bench/store.py), so it is tested
without a store, a model or a figure.
"""

from __future__ import annotations

import json
import math
from typing import Any, Mapping

import numpy as np
import pandas as pd

from ..bench.labels import options_text
from .document import Table, TableCell

#: Columns the report cannot do without; the other contract columns only feed provenance.
REQUIRED_CELL_COLUMNS = (
    "cell_id", "model", "solver", "options", "stochastic", "declared_order",
    "nfe_budget", "nfe_counted", "status", "reason",
)
REQUIRED_METRIC_COLUMNS = ("cell_id", "metric", "key", "value", "lower_is_better")

#: Cell columns that, when they differ between cells of one model, become part of the row label.
VARIANT_COLUMNS = (
    "model_hash", "schedule", "schedule_params", "sigma_min", "sigma_max", "ends_at_zero",
    "n_samples", "seed", "precision", "device",
)

#: The key used for empirical orders: RMSE of the endpoint against the reference ODE solution.
ORDER_KEY = "endpoint_rmse"

#: Headline metrics for the Pareto plot, most preferred first, when several cover as many cells.
HEADLINE_PREFERENCE = ("fid", "fd", "fd_dinov2", "kid_mean", "sliced_wasserstein", "swd", "gmm_nll")

DASH = "\u2013"  # en dash: a cell without a value
#: ``declared_order`` of a row whose store did not record the order of its requested configuration.
NOT_RECORDED = 0


def check_columns(frame: pd.DataFrame, required: tuple[str, ...], what: str) -> None:
    """ValueError naming the missing columns of a results-store DataFrame."""
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ValueError(
            f"the {what} table lacks column(s) {', '.join(missing)}; the report reads the results-store "
            f"contract of sampler_bench/bench/store.py (was the store written by an older sampler-bench?)"
        )


def format_value(value: float) -> str:
    """Three significant digits, the precision at which sampler comparisons are quoted."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "nan"
    return f"{float(value):.3g}"


def number(value: Any) -> str:
    """A setting such as sigma_max in the shortest form (``80``, ``0.002``); text as it is, '?' if missing."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return "?"
    try:
        return f"{float(value):g}"
    except (TypeError, ValueError):
        return str(value)


def parse_json(text: Any) -> dict:
    """A JSON-object column value (options, schedule_params, provenance) as a dict; {} when empty."""
    if isinstance(text, Mapping):
        return dict(text)
    if text is None or (isinstance(text, float) and math.isnan(text)) or str(text).strip() == "":
        return {}
    try:
        out = json.loads(text)
    except (TypeError, ValueError):
        return {"raw": str(text)}
    return out if isinstance(out, dict) else {"value": out}


def _variant_part(column: str, cell: pd.Series) -> str:
    value = cell[column]
    if column == "model_hash":
        return f"model {str(value)[:8]}"
    if column == "schedule_params":
        params = parse_json(value)
        return " ".join(f"{k}={v}" for k, v in sorted(params.items())) or "default schedule params"
    if column in ("sigma_min", "sigma_max"):
        return f"sigma {number(cell.get('sigma_min'))}..{number(cell.get('sigma_max'))}"
    if column == "ends_at_zero":
        return "to sigma=0" if bool(value) else "stops at sigma_min"
    if column == "n_samples":
        return f"n={int(value)}"
    if column == "seed":
        return f"seed {value}"
    return str(value)


def prepare_cells(cells: pd.DataFrame) -> pd.DataFrame:
    """Cells with typed columns and the display columns ``row`` (sampler label) and ``opts``.

    The row label is the solver, its non-default options in parentheses, and in brackets any cell
    setting (schedule, sample count, seed, model hash, ...) that differs between cells of the same
    model, so two differently configured runs of one sampler never share a row.
    """
    check_columns(cells, REQUIRED_CELL_COLUMNS, "cells")
    out = cells.copy()
    for col in ("stochastic", "ends_at_zero"):
        if col in out.columns:
            out[col] = out[col].fillna(False).astype(bool)
    if "ends_at_zero" not in out.columns:
        out["ends_at_zero"] = True
    for col in ("nfe_budget", "nfe_counted", "declared_order"):
        out[col] = pd.to_numeric(out[col], errors="coerce").fillna(0).astype(int)
    out["status"] = out["status"].fillna("failed").astype(str)
    out["reason"] = out["reason"].fillna("").astype(str)
    out["opts"] = [parse_json(o) for o in out["options"]]
    # Rows are labelled by the options the spec asked for, as the sweep named them (``options_label``),
    # not by those the budget plan filled in (DPM-Solver-fast's per-budget `orders`), so one
    # configuration is one row; its declared order is the one the sweep recorded for the requested
    # configuration (``requested_order``). Nothing is asked of today's registry: a store written
    # before these were recorded shows every requested option, and the cell's stored
    # ``declared_order`` where the plan left the requested options as they were ("not recorded" where
    # it changed them, or where the cells of a row disagree).
    labels, unrecorded = [], []
    for ix, cell in out.iterrows():
        asked = parse_json(cell.get("requested_options")) if isinstance(cell.get("requested_options"), str) else None
        label = cell.get("options_label")
        if isinstance(label, str):
            text = label
        else:
            text = options_text({k: v for k, v in (asked if asked is not None else cell["opts"]).items() if v is not None})
        labels.append(cell["solver"] + (f" ({text})" if text else ""))
        order = cell.get("requested_order")
        if order is not None and not pd.isna(order):
            out.at[ix, "declared_order"] = int(order)
        elif asked is not None and asked != cell["opts"]:
            out.at[ix, "declared_order"] = NOT_RECORDED  # the stored order is the plan's, not the request's
        else:
            unrecorded.append(ix)
    out["row"] = labels
    for _, idx in out.loc[unrecorded].groupby(["model", "row"], sort=False).groups.items():
        if out.loc[idx, "declared_order"].nunique() > 1:
            out.loc[idx, "declared_order"] = NOT_RECORDED
    for model, idx in out.groupby("model", sort=False).groups.items():
        sub = out.loc[idx]
        varying = []
        for col in VARIANT_COLUMNS:
            if col in sub.columns and sub[col].astype(str).nunique(dropna=False) > 1:
                if col == "sigma_max" and "sigma_min" in varying:
                    continue
                varying.append("sigma_min" if col == "sigma_max" else col)
        if varying:
            extra = [", ".join(_variant_part(c, cell) for c in varying) for _, cell in sub.iterrows()]
            out.loc[idx, "row"] = [f"{r} [{e}]" for r, e in zip(sub["row"], extra)]
    return out


def deduplicate(cells: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(kept, superseded): one cell per (model, row, budget); an ok cell beats a failed one, then the newest wins."""
    order = cells.assign(
        _ok=(cells["status"] == "ok").astype(int),
        _t=cells["created_at"].astype(str) if "created_at" in cells.columns else "",
    ).sort_values(["_ok", "_t", "cell_id"], ascending=[False, False, True], kind="stable")
    dup = order.duplicated(["model", "row", "nfe_budget"], keep="first")
    kept = order[~dup].drop(columns=["_ok", "_t"])
    return kept.sort_index(), order[dup].drop(columns=["_ok", "_t"])


def row_order(cells: pd.DataFrame) -> list[str]:
    """ODE samplers first, then SDE samplers, each alphabetical by solver and label."""
    first = cells.drop_duplicates("row")
    keyed = sorted(zip(first["stochastic"], first["solver"], first["row"]))
    return [r for _, _, r in keyed]


def declared_text(order: int) -> str:
    """A declared order as a table prints it ("not recorded" when the store lacks it)."""
    return "not recorded" if order == NOT_RECORDED else str(order)


def kind_label(stochastic: bool, order: int) -> str:
    return f"{'SDE' if stochastic else 'ODE'}, p={order}" if order > 0 else ("SDE" if stochastic else "ODE")


def format_interval(value: float, ci_low: Any = None, ci_high: Any = None) -> str:
    """``value ±h`` with h the half-width of the 95% interval (2 significant digits); the value alone
    when no interval is stored."""
    text = format_value(value)
    try:
        half = 0.5 * (float(ci_high) - float(ci_low))
    except (TypeError, ValueError):
        return text
    return f"{text} ±{half:.2g}" if math.isfinite(half) else text


def metric_table(cells: pd.DataFrame, values: pd.DataFrame, lower_is_better: bool,
                 replicates: Mapping[str, Any] | None = None, floor: Mapping[str, Any] | None = None) -> Table:
    """Sampler x NFE table of one metric key for one model.

    ``cells``: the model's (deduplicated) prepared cells; ``values``: the metric rows of this key
    joined with ``row`` and ``nfe_budget`` (and, when stored, ``ci_low``, ``ci_high``, ``corrected``,
    ``seed``, ``n_samples``). ``replicates``: bootstrap replicate values per cell_id; ``floor``: the
    noise floor of this metric (value, ci_low, ci_high, n_samples) or None. Rows are the samplers with
    at least one value; columns every budget of the model. Each value shows ± the half-width of its
    95% interval; the best value of each column and every value tied with it are marked
    (:mod:`.ties`); a value inside the noise floor says so; a cell whose counted NFE differs from the
    budget shows the count in parentheses; a skipped, failed or unmeasured cell shows a dash with a
    footnote saying why.
    """
    from .ties import TIE_RULE, column_verdict

    budgets = sorted(int(b) for b in cells["nfe_budget"].unique())
    rows = [r for r in row_order(cells) if r in set(values["row"])]
    by_cell = {(c.row, int(c.nfe_budget)): c for c in cells.itertuples(index=False)}
    by_value = {(v.row, int(v.nfe_budget)): v for v in values.itertuples(index=False)}
    replicates = replicates or {}
    verdicts = {b: column_verdict(values[values["nfe_budget"].astype(int) == b], replicates, lower_is_better, floor)
                for b in budgets}
    notes: list[str] = []

    def note_for(text: str) -> int:
        if text not in notes:
            notes.append(text)
        return notes.index(text) + 1

    out_rows = []
    for r in rows:
        some = next(c for (rr, _), c in by_cell.items() if rr == r)
        line = [TableCell(r), TableCell(kind_label(bool(some.stochastic), int(some.declared_order)))]
        for b in budgets:
            cell = by_cell.get((r, b))
            if (r, b) in by_value:
                rec = by_value[(r, b)]
                v = float(rec.value)
                text = format_interval(v, getattr(rec, "ci_low", None), getattr(rec, "ci_high", None))
                if cell is not None and int(cell.nfe_counted) != b:
                    text += f" ({int(cell.nfe_counted)})"
                if r in verdicts[b].in_floor:
                    text += " (floor)"
                line.append(TableCell(text, best=math.isfinite(v) and r in verdicts[b].tied))
            elif cell is None:
                line.append(TableCell(""))
            elif cell.status != "ok":
                reason = cell.reason.strip() or "no reason recorded"
                line.append(TableCell(DASH, note=note_for(f"{cell.status}: {reason}")))
            else:
                line.append(TableCell(DASH, note=note_for("the cell ran but recorded no value for this metric")))
        out_rows.append(tuple(line))
    columns = ("sampler", "kind", *[str(b) for b in budgets])
    direction = "lower" if lower_is_better else "higher"
    floor_text = ""
    if floor is not None:
        floor_text = (f" Noise floor: the same metric of {int(floor['n_samples'])} exact samples is "
                      f"{format_interval(floor['value'], floor.get('ci_low'), floor.get('ci_high'))}; '(floor)' marks a "
                      "value whose interval reaches the floor's (not distinguishable from exact sampling).")
    caption = (
        f"Columns: NFE budget ({direction} is better). Each value ± the half-width of its 95% interval for the "
        f"population value (bootstrap over samples; bias-corrected where the estimator is biased). {TIE_RULE}"
        f"{floor_text} A number in parentheses is the NFE actually counted where it differs from the budget. "
        "Kind: ODE or SDE sampler and its declared order p (weak order for SDE samplers)."
    )
    return Table(columns, tuple(out_rows), tuple(notes), caption, label_columns=2)


def replicate_summary(values, lower_is_better: bool, confidence: float = 0.95) -> tuple[float, float, float] | None:
    """(mean, half-width of its Student-t interval on K - 1 degrees of freedom, best over replicates) of
    the K finite values of one cell run on K disjoint seed ranges; the best is the minimum (maximum
    when higher is better), EDM's convention (Karras et al. 2022, arXiv:2206.00364, Sec. 5, report the
    minimum of three 50k-sample FIDs). None with fewer than 2 finite values."""
    from scipy import stats

    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if len(v) < 2:
        return None
    half = float(stats.t.ppf(0.5 + confidence / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))
    return float(v.mean()), half, float(v.min() if lower_is_better else v.max())


#: the caption text both the report and ``sampler-bench show`` give the minimum over replicates
EDM_CONVENTION = ("EDM's convention (Karras et al. 2022 report the minimum of three 50k-sample FIDs), optimistic by "
                  "construction; quote the mean with its interval for comparisons")


def replicate_table(cells: pd.DataFrame, first: pd.DataFrame, extra: pd.DataFrame, lower_is_better: bool,
                    confidence: float = 0.95) -> Table:
    """Sampler x NFE table over the K disjoint seed ranges of ``replicates = K``: the mean of the K
    values ± the half-width of its Student-t interval (K - 1 degrees of freedom), and the minimum
    (maximum when higher is better) over the replicates, EDM's convention (Karras et al. 2022,
    arXiv:2206.00364, report the minimum of three 50k-sample FIDs) so numbers can sit next to papers'.
    ``first``: the values of replicate 0 (the main table's); ``extra``: those of replicates 1..K-1."""
    budgets = sorted(int(b) for b in cells["nfe_budget"].unique())
    both = pd.concat([first[["row", "nfe_budget", "value"]], extra[["row", "nfe_budget", "value"]]])
    rows = [r for r in row_order(cells) if r in set(both["row"])]
    out_rows = []
    k_seen = set()
    for r in rows:
        line = [TableCell(r)]
        for b in budgets:
            v = both[(both["row"] == r) & (both["nfe_budget"].astype(int) == b)]["value"].astype(float).to_numpy()
            v = v[np.isfinite(v)]
            summary = replicate_summary(v, lower_is_better, confidence)
            if summary is None:
                line.append(TableCell(format_value(v[0]) if len(v) else DASH))
                continue
            k_seen.add(len(v))
            mean, half, edm = summary
            line.append(TableCell(f"{format_value(mean)} ±{half:.2g} · {'min' if lower_is_better else 'max'} "
                                  f"{format_value(edm)}"))
        out_rows.append(tuple(line))
    k_text = "/".join(str(k) for k in sorted(k_seen)) or "K"
    caption = (f"Replicates: each cell run on {k_text} disjoint seed ranges. Mean over the replicates ± the half-width "
               f"of its {confidence:.0%} Student-t interval, then the {'minimum' if lower_is_better else 'maximum'} over "
               f"replicates: {EDM_CONVENTION}.")
    return Table(("sampler", *[str(b) for b in budgets]), tuple(out_rows), (), caption, label_columns=1)


def fit_order(nfe, error, *, upper_half: bool = False) -> float:
    """Empirical convergence order: minus the least-squares slope of log(error) against log(NFE).

    ``upper_half`` fits only the larger half of the budgets (at least two points, used only when
    there are at least four), where the error is closest to its asymptotic regime.
    Non-positive or non-finite errors are dropped; fewer than two points left gives NaN.
    """
    n = np.asarray(nfe, dtype=np.float64)
    e = np.asarray(error, dtype=np.float64)
    keep = np.isfinite(e) & (e > 0) & (n > 0)
    n, e = n[keep], e[keep]
    order = np.argsort(n, kind="stable")
    n, e = n[order], e[order]
    if upper_half:
        if len(n) < 4:
            return float("nan")
        half = max(2, math.ceil(len(n) / 2))
        n, e = n[-half:], e[-half:]
    if len(np.unique(n)) < 2:
        return float("nan")
    slope = np.polyfit(np.log(n), np.log(e), 1)[0]
    return float(-slope)


def fitted_orders(cells: pd.DataFrame, values: pd.DataFrame) -> pd.DataFrame:
    """Per deterministic sampler row: declared order and fitted orders over all / the upper half of budgets.

    ``values``: the endpoint-error rows of one model joined with ``row``, ``nfe_counted``,
    ``nfe_budget`` and ``stochastic``. Stochastic samplers have no endpoint error and are left out.
    """
    records = []
    det = values[~values["stochastic"].astype(bool) & (values["nfe_counted"] > 0)]
    declared = cells.drop_duplicates("row").set_index("row")["declared_order"]
    for r in [r for r in row_order(cells) if r in set(det["row"])]:
        sub = det[det["row"] == r].sort_values("nfe_counted")
        usable = sub[np.isfinite(sub["value"]) & (sub["value"] > 0)]
        records.append({
            "row": r,
            "declared_order": int(declared.get(r, 0)),
            "order_all": fit_order(sub["nfe_counted"], sub["value"]),
            "order_upper": fit_order(sub["nfe_counted"], sub["value"], upper_half=True),
            "nfe_min": int(usable["nfe_counted"].min()) if len(usable) else 0,
            "nfe_max": int(usable["nfe_counted"].max()) if len(usable) else 0,
            "points": int(len(usable)),
        })
    return pd.DataFrame.from_records(
        records, columns=["row", "declared_order", "order_all", "order_upper", "nfe_min", "nfe_max", "points"]
    )


def order_table(orders: pd.DataFrame, key: str = ORDER_KEY) -> Table:
    def f(v: float) -> str:
        return DASH if not math.isfinite(v) else f"{v:.2f}"

    rows = tuple(
        (TableCell(o.row), TableCell(declared_text(o.declared_order)), TableCell(f(o.order_all)), TableCell(f(o.order_upper)),
         TableCell(f"{o.nfe_min}..{o.nfe_max}" if o.points else DASH), TableCell(str(o.points)))
        for o in orders.itertuples(index=False)
    )
    caption = (
        f"Fitted order = minus the least-squares slope of log({key}) against log(counted NFE); "
        "'upper half' fits only the larger half of the budgets (needs at least 4). A fit far below the "
        "declared order usually means the error is not yet asymptotic or has reached the reference's "
        "accuracy floor."
    )
    return Table(("sampler", "declared order", "fitted order (all)", "fitted order (upper half)", "NFE range", "points"),
                 rows, (), caption)


def seconds_per_sample(cells: pd.DataFrame) -> pd.Series:
    """Wall time per sample: 1/samples_per_s when recorded, else wall_time_s / n_samples (NaN if neither)."""
    nan = pd.Series(np.nan, index=cells.index)
    rate = pd.to_numeric(cells["samples_per_s"], errors="coerce") if "samples_per_s" in cells.columns else nan
    wall = pd.to_numeric(cells["wall_time_s"], errors="coerce") if "wall_time_s" in cells.columns else nan
    n = pd.to_numeric(cells["n_samples"], errors="coerce") if "n_samples" in cells.columns else nan
    out = (1.0 / rate).where(rate > 0, wall / n.where(n > 0))
    return out.where(np.isfinite(out) & (out > 0))


def pareto_front(cost, quality, lower_is_better: bool) -> np.ndarray:
    """Mask of the points no other point beats on both cost (lower is better) and quality.

    A point is on the front when every cheaper-or-equal point has strictly worse quality; among
    exact duplicates the first is kept. Non-finite points are never on the front.
    """
    c = np.asarray(cost, dtype=np.float64)
    q = np.asarray(quality, dtype=np.float64)
    q = q if lower_is_better else -q
    ok = np.isfinite(c) & np.isfinite(q)
    mask = np.zeros(len(c), dtype=bool)
    best = math.inf
    # Sort by cost, then quality, so the first point of a cost tie is its best one.
    for i in np.lexsort((q, c)):
        if ok[i] and q[i] < best:
            mask[i] = True
            best = q[i]
    return mask


def headline_key(values: pd.DataFrame) -> tuple[str, str] | None:
    """The (metric, key) with finite values in the most cells: the quality axis of the Pareto plot.

    Distribution metrics cover ODE and SDE samplers alike, so they beat the endpoint error, which
    only ODE samplers have; ties go to HEADLINE_PREFERENCE, then to the name.
    """
    finite = values[np.isfinite(values["value"].astype(float))]
    finite = finite[finite["metric"] != "trajectory_geometry"]  # a shape of the path, not a quality
    if finite.empty:
        return None
    counts = finite.groupby(["metric", "key"])["cell_id"].nunique()

    def rank(mk):
        metric, key = mk
        pref = HEADLINE_PREFERENCE.index(key) if key in HEADLINE_PREFERENCE else len(HEADLINE_PREFERENCE)
        return (-int(counts[mk]), key == ORDER_KEY, pref, key, metric)

    return min(counts.index, key=rank)
