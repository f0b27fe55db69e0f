"""Assemble the report from a results store: ``render`` (pure: DataFrames in, files out) and ``write_report``.

Layout: a summary, then per model a section with, per metric key, the sampler x NFE table and the
metric-vs-NFE plot (the endpoint error also gets the fitted-order table), the resampling events of
weighted samplers (:mod:`.resampling`), the trajectory geometry, the quality-vs-wall-time
Pareto plot and sample pictures at a few budgets; last, the provenance of every number.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from . import plots
from .drawing import Drawing, draw_all, later
from .drawing import pool as drawing_pool
from .anchors import anchor_blocks
from .geometry import geometry_blocks
from .document import Bullets, Document, Figure, Heading, Paragraph, slug
from .html import write_html
from .markdown import write_markdown
from .provenance import model_blocks, sweeps_blocks
from .resampling import resampling_blocks
from .schedules import schedule_blocks
from .tables import (
    ORDER_KEY, REQUIRED_METRIC_COLUMNS, check_columns, declared_text, deduplicate, fitted_orders, format_value,
    headline_key, metric_table, number, order_table, pareto_front, prepare_cells, replicate_table, row_order,
    seconds_per_sample,
)

SamplesFn = Callable[[str], "object | None"]

#: Sample scatter figures hold at most this many samplers (rows) each, to stay readable.
ROWS_PER_SAMPLE_FIGURE = 8
#: Image samples shown per sampler and budget.
IMAGES_PER_PANEL = 16


def write_report(store_or_path, out_dir, *, title: str | None = None,
                 sample_budgets: Sequence[int] | None = None, workers: int | None = None) -> dict:
    """Write ``report.md`` (+ ``figures/*.png``) and a self-contained ``report.html`` into ``out_dir``.

    ``store_or_path``: a :class:`sampler_bench.bench.store.ResultsStore`, the path of its SQLite
    file, or a sweep output directory holding ``results.sqlite``. ``sample_budgets``: the NFE
    budgets whose samples are pictured (default: the smallest, a middle and the largest). ``workers``:
    processes that draw the figures (default: the usable cores, or $SAMPLER_BENCH_REPORT_WORKERS).
    Returns ``{"markdown": Path, "html": Path, "figures": [Path, ...]}``.
    """
    store, opened = _open_store(store_or_path)
    try:
        replicates = store.replicates() if hasattr(store, "replicates") else None
        floors = store.floors() if hasattr(store, "floors") else None
        return render(store.cells(), store.metrics(), store.samples, store.sweeps(), out_dir,
                      title=title, sample_budgets=sample_budgets, replicates=replicates, floors=floors,
                      workers=workers)
    finally:
        if opened and hasattr(store, "close"):
            store.close()


def _open_store(store_or_path):
    if all(hasattr(store_or_path, name) for name in ("cells", "metrics", "samples", "sweeps")):
        return store_or_path, False
    path = Path(store_or_path)
    if path.is_dir():
        path = path / "results.sqlite"
    if not path.is_file():
        raise ValueError(
            f"no results store at {path}; pass the results.sqlite written by `sampler-bench sweep --out DIR` "
            "(or that DIR)"
        )
    from ..bench.store import ResultsStore

    return ResultsStore(path, read_only=True), True  # a report never writes to the store


def render(cells: pd.DataFrame, metrics: pd.DataFrame, samples: SamplesFn | None, sweeps: pd.DataFrame | None,
           out_dir, *, title: str | None = None, sample_budgets: Sequence[int] | None = None,
           replicates=None, floors: pd.DataFrame | None = None, workers: int | None = None) -> dict:
    """Write the report of the given store tables into ``out_dir``; returns the written paths.

    ``samples(cell_id)`` returns the stored samples of a cell (a tensor or array) or ``None``;
    ``replicates`` (``ResultsStore.replicates()``) and ``floors`` (``ResultsStore.floors()``) feed
    the ties and the noise floor; without them the tables only mark the best value.
    """
    doc = build_document(cells, metrics, samples, sweeps, title=title, sample_budgets=sample_budgets,
                         replicates=replicates, floors=floors, workers=workers)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md, figures = write_markdown(doc, out)
    return {"markdown": md, "html": write_html(doc, out), "figures": figures}


def _check_budgets(sample_budgets) -> list[int] | None:
    if sample_budgets is None:
        return None
    if isinstance(sample_budgets, (int, str)) or not all(
        isinstance(b, (int, np.integer)) and not isinstance(b, bool) and b > 0 for b in sample_budgets
    ) or len(sample_budgets) == 0:
        raise ValueError(f"sample_budgets must be a non-empty list of positive integer NFE budgets, got {sample_budgets!r}")
    return sorted({int(b) for b in sample_budgets})


class _Names:
    """Unique figure names and heading anchors."""

    def __init__(self):
        self.used: set[str] = set()

    def __call__(self, *parts: str) -> str:
        base = slug("-".join(parts))
        name, k = base, 2
        while name in self.used:
            name, k = f"{base}-{k}", k + 1
        self.used.add(name)
        return name


def _floor_lookup(floors: pd.DataFrame | None):
    """(model, metric, key, n_samples, seed) -> the stored noise-floor row as a dict."""
    if floors is None or len(floors) == 0:
        return {}
    return {(str(f["model"]), str(f["metric"]), str(f["key"]), int(f["n_samples"]), int(f["seed"])): dict(f)
            for _, f in floors.iterrows()}


def build_document(cells, metrics, samples, sweeps, *, title=None, sample_budgets=None, replicates=None,
                   floors=None, workers: int | None = None) -> Document:
    """The report content (see :mod:`sampler_bench.report.document`) from the store tables; ``workers``:
    processes drawing the figures (default: :func:`.drawing.default_workers`)."""
    with drawing_pool(workers, _figures_expected(cells, metrics)):
        return draw_figures(_assemble(cells, metrics, samples, sweeps, title=title, sample_budgets=sample_budgets,
                                      replicates=replicates, floors=floors))


def _figures_expected(cells, metrics) -> int:
    """About how many figures the report will hold (a plot and a Pareto plot per model and metric key, and
    sample pictures), to decide whether a pool of drawing processes pays for itself."""
    try:
        return 3 * int(cells["model"].nunique()) * max(1, int(metrics["key"].nunique()))
    except (KeyError, TypeError, AttributeError):
        return 0  # malformed tables: _assemble says what is wrong


def _assemble(cells, metrics, samples, sweeps, *, title, sample_budgets, replicates, floors) -> Document:
    budgets_asked = _check_budgets(sample_budgets)
    if cells is None or len(cells) == 0:
        raise ValueError("the results store holds no cells; run `sampler-bench sweep` before asking for a report")
    check_columns(metrics, REQUIRED_METRIC_COLUMNS, "metrics")
    replicate_of = _replicate_index(metrics)
    if replicate_of:  # replicate k > 0 of a cell: same row label as replicate 0 (its seed is set back)
        cells = cells.copy()
        for cid, (k, base_seed) in replicate_of.items():
            cells.loc[cells["cell_id"] == cid, "seed"] = base_seed
    prepared_all = prepare_cells(cells)
    extra_replicates = prepared_all[prepared_all["cell_id"].isin([c for c, (k, _) in replicate_of.items() if k > 0])]
    prepared = prepared_all[~prepared_all["cell_id"].isin(extra_replicates["cell_id"])]
    kept, superseded = deduplicate(prepared)
    values = metrics.copy()
    values["value"] = pd.to_numeric(values["value"], errors="coerce").astype(float)
    values["lower_is_better"] = values["lower_is_better"].fillna(True).astype(bool)
    for c in ("ci_low", "ci_high", "corrected"):
        values[c] = pd.to_numeric(values[c], errors="coerce").astype(float) if c in values.columns else np.nan
    extra = [c for c in ("seed", "n_samples") if c in kept.columns]
    joined = values.merge(
        kept[["cell_id", "model", "row", "solver", "nfe_budget", "nfe_counted", "stochastic", "declared_order", "status",
              *extra]],
        on="cell_id", how="inner",
    )
    reps = {}
    for (cid, metric, key), arr in (replicates or {}).items():
        reps.setdefault((metric, key), {})[cid] = arr
    floor_of = _floor_lookup(floors)
    sweeps = sweeps if sweeps is not None else pd.DataFrame(columns=["sweep_id"])

    if budgets_asked is not None:
        present = set(kept.loc[kept["status"] == "ok", "nfe_budget"])
        if not present & set(budgets_asked):
            raise ValueError(
                f"sample_budgets {budgets_asked} match no NFE budget of the results; budgets present: "
                f"{', '.join(map(str, sorted(present))) or 'none (no finished cell)'}"
            )

    models = list(dict.fromkeys(cells["model"].astype(str)))  # the order the sweeps ran them in
    spec_names = sorted({str(s) for s in kept.get("spec_name", pd.Series(dtype=str)).dropna()})
    doc = Document(title or "sampler-bench report" + (f": {', '.join(spec_names)}" if spec_names else ""))
    names = _Names()
    doc.add(Heading(1, doc.title))
    doc.add(Heading(2, "Summary", names("summary")))
    status = kept["status"].value_counts()
    summary = [
        f"models: {', '.join(models)}",
        f"cells: {len(kept)} ({int(status.get('ok', 0))} ok, {int(status.get('skipped', 0))} skipped, "
        f"{int(status.get('failed', 0))} failed)",
        f"NFE budgets: {', '.join(map(str, sorted(kept['nfe_budget'].unique())))}",
        f"samplers: {kept['row'].nunique()}",
    ]
    if "sweep_id" in kept.columns:
        summary.append(f"sweeps: {', '.join(sorted(map(str, kept['sweep_id'].dropna().unique())))}")
    if len(superseded):
        summary.append(f"{len(superseded)} older cell(s) with the same sampler, settings and budget as a newer one "
                       "are left out (listed in the provenance cell index)")
    orphans = int((~values["cell_id"].isin(prepared["cell_id"])).sum())
    if orphans:
        summary.append(f"{orphans} metric value(s) belong to no stored cell and are left out")
    doc.add(Bullets(tuple(summary)))
    doc.add(Paragraph(
        "NFE is the number of denoiser evaluations, counted by wrapping the denoiser; for a classifier-free guided "
        "model one guided evaluation counts once (its network evaluations, two per guided one, are in each value's "
        "provenance under 'evaluations'). Tables show 3 significant "
        "digits; the provenance section at the end lists everything needed to reproduce each number."
    ))

    for model in models:
        m_cells = kept[kept["model"].astype(str) == model]
        m_values = joined[(joined["model"].astype(str) == model) & (joined["status"] == "ok")]
        m_rep = extra_replicates[extra_replicates["model"].astype(str) == model]
        rep_values = values.merge(m_rep[["cell_id", "row", "nfe_budget", "status"]], on="cell_id", how="inner")
        _model_section(doc, names, model, m_cells, m_values, samples, budgets_asked, reps, floor_of,
                       rep_values[rep_values["status"] == "ok"])

    doc.add(Heading(2, "Provenance", names("provenance")))
    sweep_ids = sorted(kept["sweep_id"].dropna().unique(), key=str) if "sweep_id" in kept.columns else []
    doc.add(*sweeps_blocks(sweeps, sweep_ids))
    for model in models:
        m_all = pd.concat([kept, superseded.assign(status=superseded["status"] + " (superseded)")])
        m_all = m_all[m_all["model"].astype(str) == model]
        doc.add(*model_blocks(model, m_all, joined[joined["model"].astype(str) == model]))
    return doc


def draw_figures(doc: Document) -> Document:
    """``doc`` with every figure drawn (or its drawing by a worker process waited for, see :mod:`.drawing`)."""
    pending = [b for b in doc.blocks if isinstance(b, Figure) and isinstance(b.png, Drawing)]
    drawn = dict(zip(map(id, pending), draw_all([b.png for b in pending])))
    doc.blocks = [dataclasses.replace(b, png=drawn[id(b)]) if id(b) in drawn else b for b in doc.blocks]
    return doc


def _floor_for(floor_of, model, metric, key, sub) -> dict | None:
    """The noise floor of one table: that of the sample count and seed most of its cells used."""
    if not floor_of or "n_samples" not in sub.columns or sub.empty:
        return None
    n = pd.to_numeric(sub["n_samples"], errors="coerce").mode()
    seed = pd.to_numeric(sub["seed"], errors="coerce").mode() if "seed" in sub.columns else pd.Series([0])
    if n.empty or seed.empty:
        return None
    return floor_of.get((str(model), str(metric), str(key), int(n.iloc[0]), int(seed.iloc[0])))


def _replicate_index(metrics: pd.DataFrame) -> dict[str, tuple[int, int]]:
    """cell_id -> (replicate index, base seed) for cells of a sweep with ``replicates = K > 1``."""
    from .tables import parse_json

    out = {}
    if "provenance" not in metrics.columns:
        return out
    for cid, prov in zip(metrics["cell_id"], metrics["provenance"]):
        rep = parse_json(prov).get("replicate")
        if isinstance(rep, dict) and "index" in rep:
            out[cid] = (int(rep["index"]), int(rep.get("base_seed", 0)))
    return out


def _model_section(doc, names, model, cells, values, samples, budgets_asked, reps=None, floor_of=None,
                   rep_values=None) -> None:
    doc.add(Heading(2, f"Model {model}", names("model", model)))
    facts = []
    for col, label in (("process", "process"), ("model_hash", "hash")):
        if col in cells.columns:
            facts.append(f"{label}: {', '.join(sorted(map(str, cells[col].dropna().unique())))}")
    if "sigma_min" in cells.columns and "sigma_max" in cells.columns:
        ranges = sorted({f"{number(a)}..{number(b)}" for a, b in zip(cells["sigma_min"], cells["sigma_max"])})
        facts.append(f"sigma range: {', '.join(ranges)}")
    facts.append(f"cells: {len(cells)}, samplers: {cells['row'].nunique()}")
    doc.add(Bullets(tuple(facts)))

    checks = _nfe_checks(cells)
    if checks:
        doc.add(Paragraph("NFE check failed: the counted NFE differs from the NFE the solver's law planned in these cells "
                          "(the solver's declared NFE law is wrong):"), Bullets(tuple(checks)))
    not_run = _not_run(cells)
    if not_run:
        doc.add(Paragraph("Samplers without a finished cell:"), Bullets(tuple(not_run)))

    style = plots.palette(row_order(cells))
    keys = sorted({(m, k) for m, k in zip(values["metric"], values["key"])})
    head = headline_key(values) if len(values) else None
    if head is not None:
        keys.remove(head)
        keys.insert(0, head)
    key_count = pd.Series([k for _, k in keys]).value_counts() if keys else pd.Series(dtype=int)
    for metric, key in keys:
        sub = values[(values["metric"] == metric) & (values["key"] == key)]
        name = key if key_count.get(key, 0) == 1 else f"{metric}: {key}"
        lower = bool(sub["lower_is_better"].iloc[0])
        doc.add(Heading(3, f"{model}: {name}", names(model, metric, key)))
        floor = _floor_for(floor_of, model, metric, key, sub)
        doc.add(metric_table(cells, sub, lower, (reps or {}).get((metric, key), {}), floor))
        orders = fitted_orders(cells, sub) if key == ORDER_KEY else None
        doc.add(_metric_figure(names, model, name, sub, orders, style, lower, sorted(cells["nfe_budget"].unique()),
                               floor))
        if rep_values is not None and len(rep_values):
            extra = rep_values[(rep_values["metric"] == metric) & (rep_values["key"] == key)]
            if len(extra):
                doc.add(replicate_table(cells, sub, extra, lower))
        if orders is not None and len(orders):
            doc.add(Heading(3, f"{model}: empirical order", names(model, "order")))
            doc.add(order_table(orders, key))

    resampled = resampling_blocks(cells, values)
    if resampled:
        doc.add(Heading(3, f"{model}: resampling", names(model, "resampling")))
        doc.add(*resampled)

    geometry = geometry_blocks(names, model, values, style)
    if geometry:
        doc.add(Heading(3, f"{model}: trajectory geometry", names(model, "geometry")))
        doc.add(*geometry)

    if head is not None:  # fixed vs optimised schedules: the headline and the endpoint error
        chosen = [head] + [k for k in keys if k[1] == "endpoint_mean_l2" and k != head]
        doc.add(*schedule_blocks(names, model, cells, values, reps or {},
                                 lambda metric, key, sub: _floor_for(floor_of, model, metric, key, sub), chosen))

    published = anchor_blocks(cells, values)
    if published:
        doc.add(Heading(3, f"{model}: published anchors", names(model, "anchors")))
        doc.add(*published)

    if head is not None:
        doc.add(Heading(3, f"{model}: quality vs wall time", names(model, "pareto")))
        doc.add(*_pareto_blocks(names, model, cells, values, head, style))
    doc.add(Heading(3, f"{model}: samples", names(model, "samples")))
    doc.add(*_sample_blocks(names, model, cells, samples, budgets_asked))


def _nfe_checks(cells) -> list[str]:
    if "nfe_planned" not in cells.columns:
        return []
    ok = cells[(cells["status"] == "ok")]
    planned = pd.to_numeric(ok["nfe_planned"], errors="coerce").astype(float)
    bad = ok[planned.notna() & (planned != ok["nfe_counted"])]
    return [f"{c.row} at budget {c.nfe_budget}: planned {int(c.nfe_planned)}, counted {c.nfe_counted}"
            for c in bad.itertuples(index=False)]


def _not_run(cells) -> list[str]:
    out = []
    for row in row_order(cells):
        sub = cells[cells["row"] == row]
        if (sub["status"] != "ok").all():
            reasons = sorted({f"{s}: {r.strip() or 'no reason recorded'}" for s, r in zip(sub["status"], sub["reason"])})
            out.append(f"{row}: " + "; ".join(reasons))
    return out


def _metric_figure(names, model, name, sub, orders, style, lower, budgets, floor=None) -> Figure:
    fitted = {}
    if orders is not None:
        for o in orders.itertuples(index=False):
            fit = o.order_upper if math.isfinite(o.order_upper) else o.order_all
            fitted[o.row] = (o.declared_order, fit)
    series = []
    for row in [r for r in style if r in set(sub["row"])]:
        s = sub[sub["row"] == row]
        label = row
        if row in fitted:
            declared, fit = fitted[row]
            declared = declared_text(declared)
            label += f": p={declared}, fit {fit:.2f}" if math.isfinite(fit) else f": p={declared}"
        series.append({"row": row, "label": label, "nfe": s["nfe_counted"].to_numpy(), "value": s["value"].to_numpy(),
                       "ci_low": s["ci_low"].to_numpy() if "ci_low" in s else None,
                       "ci_high": s["ci_high"].to_numpy() if "ci_high" in s else None,
                       "stochastic": bool(s["stochastic"].iloc[0]), "family": _family(s["solver"].iloc[0])})
    direction = "lower" if lower else "higher"
    fig = later(plots.metric_vs_nfe, series, title=f"{model}: {name} vs NFE", ylabel=f"{name} ({direction} is better)",
                style=style, budgets=budgets, floor=floor)
    caption = (f"{name} against counted NFE (log x; log y when the values span a decade or more), one panel per "
               "sampler family with shared axes; shaded bands are the 95% intervals, dashed lines stochastic samplers.")
    if floor is not None:
        caption += (f" Grey band: the noise floor, i.e. {name} of {int(floor['n_samples'])} exact samples with its "
                    "interval (dotted: its value); a sampler inside it cannot be told apart from exact sampling.")
    if orders is not None:
        caption += " Legend: declared order p and fitted order (upper half of the budgets where possible)."
    return Figure(names(model, name, "vs-nfe"), fig, caption, alt=f"{model} {name} vs NFE")


def _family(solver: str) -> str:
    """The family (solver module) a sampler belongs to: the panel of its line."""
    from ..solvers.registry import info

    try:
        return str(getattr(info(str(solver)), "family", "") or "other").replace("_", " ")
    except ValueError:
        return "other"


def _pareto_blocks(names, model, cells, values, head, style) -> list:
    metric, key = head
    sub = values[(values["metric"] == metric) & (values["key"] == key)]
    cost = seconds_per_sample(cells).rename("cost")
    points = sub.merge(cells[["cell_id"]].join(cost), on="cell_id")
    points = points[np.isfinite(points["value"]) & points["cost"].notna()].reset_index(drop=True)
    if points.empty:
        return [Paragraph(f"No wall-time records for {key}; no Pareto plot.")]
    lower = bool(sub["lower_is_better"].iloc[0])
    points["front"] = pareto_front(points["cost"], points["value"], lower)
    fig = later(plots.pareto_plot, points, title=f"{model}: {key} vs wall time per sample",
                ylabel=f"{key} ({'lower' if lower else 'higher'} is better)", style=style)
    front = points[points["front"]].sort_values("cost", kind="stable")
    listing = "; ".join(f"{k}: {p.row} at NFE {p.nfe_budget} ({key} {format_value(p.value)}, {p.cost:.3g} s)"
                        for k, p in enumerate(front.itertuples(index=False), 1))
    return [
        Figure(names(model, key, "pareto"), fig,
               f"{key} against wall time per sample (1 / samples per second) for every finished cell; circled, "
               "numbered points joined by the black line form the Pareto front (no other cell is both faster and "
               "better by value), listed below; the front compares values, not tested differences: the tables mark "
               "which samplers are statistically tied. "
               "Wall time depends on the device and its load: compare cells of one sweep.",
               alt=f"{model} Pareto plot"),
        Paragraph(f"Pareto front: {listing}."),
    ]


def _as_array(t):
    if t is None:
        return None
    if hasattr(t, "detach"):
        t = t.detach().cpu().double().numpy()
    return np.asarray(t, dtype=np.float64)


def _sample_blocks(names, model, cells, samples, budgets_asked) -> list:
    ok = cells[cells["status"] == "ok"]
    present = sorted(int(b) for b in ok["nfe_budget"].unique())
    if samples is None or not present:
        return [Paragraph("No samples stored for this model.")]
    if budgets_asked is None:
        budgets = sorted({present[0], present[len(present) // 2], present[-1]})
        missing = []
    else:
        budgets = [b for b in budgets_asked if b in present]
        missing = [b for b in budgets_asked if b not in present]
    blocks = []
    if missing:
        blocks.append(Paragraph(f"Requested budget(s) {', '.join(map(str, missing))} have no finished cell for "
                                f"{model}; budgets present: {', '.join(map(str, present))}."))
    if not budgets:
        return blocks
    rows = row_order(ok)
    panels = {}
    for cell in cells[cells["nfe_budget"].isin(budgets) & cells["row"].isin(rows)].itertuples(index=False):
        key = (cell.row, int(cell.nfe_budget))
        if cell.status != "ok":
            panels[key] = cell.status
        else:
            array = _as_array(samples(cell.cell_id))
            panels[key] = array if array is not None else "no samples stored"
    shapes = {a.shape[1:] for a in panels.values() if isinstance(a, np.ndarray)}
    if not shapes:
        return blocks + [Paragraph("No samples stored for this model.")]
    shape = sorted(shapes)[0]
    if len(shapes) > 1:
        return blocks + [Paragraph(f"Stored samples have different shapes {sorted(shapes)}; no sample pictures.")]
    if len(shape) == 3 and shape[0] in (1, 3):
        for row in rows:
            own = {b: panels.get((row, b), "not run") for b in budgets}
            fig = later(plots.image_grid, row, budgets, {b: p[:IMAGES_PER_PANEL] if isinstance(p, np.ndarray) else p
                                                         for b, p in own.items()}, title=model)
            blocks.append(Figure(names(model, "samples", row), fig,
                                 f"{row}: the first {IMAGES_PER_PANEL} stored samples at NFE "
                                 f"{', '.join(map(str, budgets))} (values in [-1, 1] shown as [0, 1]).",
                                 alt=f"{model} {row} samples"))
        return blocks
    if len(shape) != 1:
        return blocks + [Paragraph(f"Samples of shape {list(shape)} have no picture (2-D points, vectors and "
                                   "[C, H, W] images with 1 or 3 channels do).")]
    axis_labels = ("x1", "x2")
    note = ""
    if shape[0] > 2:
        keys = [k for k, a in panels.items() if isinstance(a, np.ndarray)]
        last = [panels[k] for k in keys if k[1] == budgets[-1]]
        panels.update(zip(keys, plots.principal_coordinates([panels[k] for k in keys], fit_on=last or None)))
        axis_labels = ("PC1", "PC2")
        note = (f" The {shape[0]}-D samples are shown on the first two principal axes of the NFE {budgets[-1]} "
                "samples pooled (one basis for every panel).")
    for start in range(0, len(rows), ROWS_PER_SAMPLE_FIGURE):
        chunk = rows[start:start + ROWS_PER_SAMPLE_FIGURE]
        # every panel, not only this chunk's: the view limits are shared by all the model's sample figures
        fig = later(plots.scatter_grid, chunk, budgets, panels, title=f"{model}: samples", axis_labels=axis_labels)
        blocks.append(Figure(
            names(model, "samples", str(start // ROWS_PER_SAMPLE_FIGURE + 1)), fig,
            f"Stored samples per sampler (rows) at NFE {', '.join(map(str, budgets))} (columns); the shared axes "
            f"cover the central 99% of the NFE {budgets[-1]} samples, padded.{note}",
            alt=f"{model} samples",
        ))
    return blocks
