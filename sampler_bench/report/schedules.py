"""The report's "fixed vs optimised schedules" section of a model (docs/schedule_optimisers.md).

Shown when some cell of the model used an optimised schedule (its values carry ``optimised_schedule``
in their provenance). Per sampler: the schedule x NFE table of each chosen metric key, with the
intervals and ties of every other table (:func:`.tables.metric_table`); a verdict per budget (does the
best optimised schedule beat every fixed one, i.e. is it the best and no fixed schedule tied with it);
the optimisers' own cost next to the sampling NFE; and the chosen levels on the sigma axis.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd
from matplotlib.figure import Figure as MplFigure

from .document import Bullets, Figure, Heading, Paragraph, Table, TableCell
from .plots import palette, to_png
from .tables import format_interval, metric_table, parse_json
from .ties import column_verdict


def optimised_of(values: pd.DataFrame) -> dict[str, dict]:
    """cell_id -> its ``optimised_schedule`` provenance (levels, cost, method, params)."""
    out = {}
    if "provenance" not in values.columns:
        return out
    for cid, prov in zip(values["cell_id"], values["provenance"]):
        opt = parse_json(prov).get("optimised_schedule")
        if isinstance(opt, dict) and cid not in out:
            out[cid] = opt
    return out


def _sampler(row: str) -> str:
    return row.split(" [", 1)[0]


def _configuration(row: str) -> str:
    """The bracketed settings of a row label ('gits, n_warmup=64'), or the label itself."""
    return row.split(" [", 1)[1].rstrip("]") if " [" in row else row


def verdicts(cells: pd.DataFrame, sub: pd.DataFrame, optimised: set[str], lower: bool, replicates: Mapping,
             floor) -> list[str]:
    """One line per budget: best optimised vs best fixed schedule, by the report's tie rule."""
    lines = []
    kind = cells.set_index("cell_id")["schedule"].astype(str).to_dict()
    for b in sorted(int(x) for x in sub["nfe_budget"].unique()):
        col = sub[sub["nfe_budget"].astype(int) == b]
        col = col[np.isfinite(col["value"].to_numpy(dtype=float))]
        if col.empty:
            continue
        is_opt = col["cell_id"].isin(optimised)
        if not is_opt.any() or is_opt.all():
            continue
        v = column_verdict(col, replicates, lower, floor)
        pick = (lambda s: s.loc[s["value"].idxmin()]) if lower else (lambda s: s.loc[s["value"].idxmax()])
        bo, bf = pick(col[is_opt]), pick(col[~is_opt])
        fixed_tied = [kind.get(c, "?") for c, r in zip(col.loc[~is_opt, "cell_id"], col.loc[~is_opt, "row"]) if r in v.tied]
        text = (f"NFE {b}: best optimised {kind.get(bo.cell_id, '?')} "
                f"{format_interval(bo.value, getattr(bo, 'ci_low', None), getattr(bo, 'ci_high', None))} vs best fixed "
                f"{kind.get(bf.cell_id, '?')} {format_interval(bf.value, getattr(bf, 'ci_low', None), getattr(bf, 'ci_high', None))}: ")
        if v.best is not None and v.best in set(col.loc[is_opt, "row"]) and not fixed_tied:
            text += "optimised beats every fixed schedule"
        elif v.best is not None and v.best in set(col.loc[is_opt, "row"]):
            text += f"optimised best, tied with fixed {', '.join(sorted(set(fixed_tied)))}"
        elif v.best is not None and v.best in v.tied and bo.row in v.tied:
            text += f"tied (the best is fixed {kind.get(bf.cell_id, '?')})"
        else:
            text += "a fixed schedule is better"
        lines.append(text)
    return lines


def optimiser_table(cells: pd.DataFrame, sub: pd.DataFrame, optimised: set[str], lower: bool, replicates: Mapping,
                    floor) -> Table | None:
    """Optimised schedule x NFE: does it beat every fixed schedule ('beats'), tie with the best fixed one
    ('tied') or lose to one ('worse')? Each verdict applies the tie rule to that optimiser and the fixed
    schedules alone, so one optimiser's result does not depend on another's."""
    kind = cells.set_index("cell_id")["schedule"].astype(str).to_dict()
    budgets = sorted(int(x) for x in sub["nfe_budget"].unique())
    finite = sub[np.isfinite(sub["value"].to_numpy(dtype=float))]
    fixed = finite[~finite["cell_id"].isin(optimised)]
    # one line per optimised configuration (a row label: the same optimiser with other parameters is another)
    labels = list(dict.fromkeys(finite.loc[finite["cell_id"].isin(optimised), "row"]))
    if not labels or fixed.empty:
        return None
    rows = []
    for label in labels:
        line = [TableCell(_configuration(label))]
        for b in budgets:
            mine = finite[(finite["nfe_budget"].astype(int) == b) & (finite["row"] == label)]
            others = fixed[fixed["nfe_budget"].astype(int) == b]
            if mine.empty or others.empty:
                line.append(TableCell("–"))
                continue
            v = column_verdict(pd.concat([mine, others]), replicates, lower, floor)
            if v.best == label:
                text = "beats" if len(v.tied - {label}) == 0 else "tied"
            elif label in v.tied:
                text = "tied"
            else:
                winner = others.loc[others["row"] == v.best, "cell_id"]
                text = f"worse ({kind.get(winner.iloc[0], '?') if len(winner) else '?'})"
            line.append(TableCell(text, best=text == "beats"))
        rows.append(tuple(line))
    return Table(("optimiser", *[f"NFE {b}" for b in budgets]), tuple(rows), caption=(
        "Each optimised schedule against every fixed schedule of this sampler, by the tie rule of the tables: "
        "'beats' (best, and no fixed schedule tied with it), 'tied' (not significantly different from the best "
        "of the two groups), 'worse (X)' (the fixed schedule X is significantly better)."))


def cost_table(cells: pd.DataFrame, optimised: Mapping[str, dict]) -> Table:
    """Optimised configuration x NFE: the optimiser's denoiser calls, warm-up samples and seconds (one line
    per configuration, as in :func:`optimiser_table`: two parameter sets of one optimiser cost differently)."""
    rows_of = {}
    for c in cells.itertuples(index=False):
        opt = optimised.get(c.cell_id)
        if opt is not None:
            rows_of.setdefault(_configuration(str(c.row)), {})[int(c.nfe_budget)] = opt["cost"]
    budgets = sorted({b for d in rows_of.values() for b in d})
    rows = []
    for name in sorted(rows_of):
        line = [TableCell(name)]
        for b in budgets:
            cost = rows_of[name].get(b)
            line.append(TableCell("" if cost is None else
                                  f"{cost['nfe']} × {cost['samples']} ({cost['wall_s']:.3g} s)"))
        rows.append(tuple(line))
    return Table(("optimiser", *[f"NFE {b}" for b in budgets]), tuple(rows), caption=(
        "Cost of finding each optimised schedule, paid once per model, sampler and budget (cached): denoiser calls "
        "× warm-up samples (their seeds are disjoint from the evaluation seeds) and wall time. The sampling itself "
        "spends the NFE of the column per sample."))


def skipped_lines(cells: pd.DataFrame, optimisers: set[str]) -> list[str]:
    """One line per (optimised configuration, reason) of the skipped cells of one sampler: an optimiser
    that cannot serve this sampler (ld3 without a differentiable transcription of it) says why here, next
    to the table it is missing from."""
    if not {"status", "reason", "schedule"} <= set(cells.columns):
        return []
    skipped = cells[(cells["status"] == "skipped") & (cells["schedule"].astype(str).isin(optimisers)
                                                       | cells["reason"].astype(str).str.startswith("optimised schedule"))]
    groups: dict[tuple[str, str], list[int]] = {}
    for c in skipped.itertuples(index=False):
        groups.setdefault((_configuration(str(c.row)), str(c.reason)), []).append(int(c.nfe_budget))
    return [f"{config}: skipped at NFE {', '.join(map(str, sorted(budgets)))}: {reason}"
            for (config, reason), budgets in sorted(groups.items())]


def levels_figure(name: str, title: str, cells: pd.DataFrame, optimised: Mapping[str, dict]) -> Figure | None:
    """The positive levels each optimised schedule chose, one line of markers per (schedule, NFE)."""
    entries = []
    for c in cells.sort_values(["schedule", "row", "nfe_budget"]).itertuples(index=False):
        opt = optimised.get(c.cell_id)
        if opt is not None:
            entries.append((f"{_configuration(str(c.row))} · NFE {int(c.nfe_budget)}", str(c.schedule),
                            [s for s in opt["sigmas"] if s > 0]))
    if not entries:
        return None
    style = palette(sorted({e[1] for e in entries}))
    fig = MplFigure(figsize=(8.5, 0.9 + 0.28 * len(entries)), layout="constrained")
    ax = fig.add_subplot()
    for y, (label, schedule, sigmas) in enumerate(entries):
        colour, marker = style[schedule]
        ax.scatter(sigmas, [y] * len(sigmas), color=colour, marker=marker, s=18)
    ax.set_xscale("log")
    ax.set_yticks(range(len(entries)), [e[0] for e in entries], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("sigma (log)")
    ax.set_title(title, fontsize=9)
    ax.grid(True, axis="x", alpha=0.3)
    return Figure(name, to_png(fig), f"{title}: the positive noise levels each optimised schedule chose "
                  "(a sampler ending at 0 takes one more step, to 0).", alt=title)


def schedule_blocks(names, model: str, cells: pd.DataFrame, values: pd.DataFrame, reps: Mapping, floor_of,
                    keys: list[tuple[str, str]]) -> list:
    """The section's blocks, or [] when no cell of the model used an optimised schedule."""
    optimised = optimised_of(values)
    if not optimised or "schedule" not in cells.columns:
        return []
    blocks = [Heading(3, f"{model}: fixed vs optimised schedules", names(model, "schedules")), Paragraph(
        "Per sampler, every schedule at each budget, with the intervals and ties of the tables above; a verdict "
        "per budget says whether the best optimised schedule beats every fixed one (it is the best and no fixed "
        "schedule is tied with it). Optimisers use warm-up samples whose seeds never meet the evaluation seeds.")]
    optimisers = set(cells.loc[cells["cell_id"].isin(list(optimised)), "schedule"].astype(str))
    for sampler in sorted({_sampler(r) for r in cells["row"]}):
        s_cells = cells[[_sampler(r) == sampler for r in cells["row"]]]
        if not s_cells["cell_id"].isin(list(optimised)).any():
            continue
        blocks.append(Heading(4, f"{model} · {sampler}", names(model, sampler, "schedules")))
        skipped = skipped_lines(s_cells, optimisers)
        if skipped:
            blocks.append(Bullets(tuple(skipped)))
        for metric, key in keys:
            sub = values[(values["metric"] == metric) & (values["key"] == key) & values["cell_id"].isin(s_cells["cell_id"])]
            if sub.empty:
                continue
            lower = bool(sub["lower_is_better"].iloc[0])
            floor = floor_of(metric, key, sub) if callable(floor_of) else None
            blocks.append(Paragraph(f"{key}:"))
            blocks.append(metric_table(s_cells, sub, lower, reps.get((metric, key), {}), floor))
            lines = verdicts(s_cells, sub, set(optimised), lower, reps.get((metric, key), {}), floor)
            if lines:
                blocks.append(Bullets(tuple(lines)))
            table = optimiser_table(s_cells, sub, set(optimised), lower, reps.get((metric, key), {}), floor)
            if table is not None:
                blocks.append(table)
        blocks.append(cost_table(s_cells, optimised))
        fig = levels_figure(names(model, sampler, "levels"), f"{model} · {sampler}: chosen levels", s_cells, optimised)
        if fig is not None:
            blocks.append(fig)
    return blocks

