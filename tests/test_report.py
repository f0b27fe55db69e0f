"""Reports: sampler x NFE tables, fitted orders, Pareto fronts, sample pictures, provenance, writers.

The results are synthetic DataFrames that follow the results-store contract column for column
(sampler_bench/bench/store.py), with metric values built from known power laws so the fitted
orders and best cells have known answers. tests/test_report_store.py renders a real store.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import sys

import matplotlib
import numpy as np
import pandas as pd
import pytest
import torch

import sampler_bench as sb
from sampler_bench.report import build_document, render
from sampler_bench.report import plots, tables
from sampler_bench.bench import labels
from sampler_bench.report.document import Details, Figure, Table
from sampler_bench.report.build import _nfe_checks
from sampler_bench.report.html import write_html
from sampler_bench.report.markdown import to_markdown, write_markdown
from sampler_bench.solvers import registry

#: The results-store contract, column for column.
CELL_COLUMNS = (
    "cell_id", "sweep_id", "spec_name", "model", "model_hash", "process", "solver", "options", "stochastic",
    "declared_order", "schedule", "schedule_params", "sigma_min", "sigma_max", "ends_at_zero", "nfe_budget",
    "nfe_planned", "nfe_counted", "steps", "n_samples", "seed", "batch_size", "device", "precision",
    "wall_time_s", "samples_per_s", "denoiser_fraction", "status", "reason", "version", "created_at",
    "options_label", "requested_order",
)
METRIC_COLUMNS = ("cell_id", "metric", "key", "value", "lower_is_better", "feature_extractor", "reference_hash",
                  "provenance")
SWEEP_COLUMNS = ("sweep_id", "spec_name", "spec_toml", "command", "version", "hostname", "python", "torch",
                 "started_at", "finished_at")

BUDGETS = (4, 8, 16, 32)
SPEC_TOML = '[model]\nname = "gmm2d"\n\n[sweep]\nnfe = [4, 8, 16, 32]\nsamplers = ["euler", "heun"]\n'


class FakeResults:
    """Builds store-contract DataFrames cell by cell."""

    def __init__(self):
        self.cells, self.metrics, self.samples = [], [], {}

    def cell(self, model, solver, budget, *, options=None, stochastic=False, order=1, counted=None, planned=None,
             status="ok", reason="", schedule="karras", seed=0, n=64, created="2025-01-01T00:00:00+00:00",
             sweep="sw1", cost=0.01, dim=2, model_hash=None, label=None, requested_order=None):
        opts = json.dumps(options or {}, sort_keys=True)
        counted = budget if counted is None else counted
        cid = hashlib.sha256(f"{model}|{solver}|{opts}|{budget}|{schedule}|{seed}|{n}|{created}".encode()).hexdigest()[:16]
        ok = status == "ok"
        wall = cost * counted * n if ok else float("nan")
        self.cells.append({
            "cell_id": cid, "sweep_id": sweep, "spec_name": "synthetic", "model": model,
            "model_hash": model_hash or f"hash-{model}", "process": "gaussian", "solver": solver, "options": opts,
            "stochastic": stochastic, "declared_order": order, "schedule": schedule,
            "schedule_params": json.dumps({"rho": 7.0} if schedule == "karras" else {}), "sigma_min": 0.002,
            "sigma_max": 80.0, "ends_at_zero": True, "nfe_budget": budget,
            "nfe_planned": (counted if planned is None else planned) if ok else 0, "nfe_counted": counted if ok else 0,
            "steps": budget, "n_samples": n, "seed": seed, "batch_size": 64, "device": "cpu", "precision": "float64",
            "wall_time_s": wall, "samples_per_s": n / wall if ok else float("nan"), "denoiser_fraction": 0.8,
            "status": status, "reason": reason, "version": "0.1.0", "created_at": created,
            **({"options_label": label} if label is not None else {}),
            **({"requested_order": requested_order} if requested_order is not None else {}),
        })
        if ok:
            g = np.random.default_rng(int(cid[:8], 16))
            if dim == 2:
                angle = g.uniform(0, 2 * np.pi, 64)
                pts = np.stack([2 * np.cos(angle), 2 * np.sin(angle)], 1) + g.normal(0, 0.15 + 1.0 / budget, (64, 2))
            else:
                pts = g.normal(0, 1, (64, dim)) * np.linspace(3, 0.1, dim)
            self.samples[cid] = torch.tensor(pts, dtype=torch.float32)
        return cid

    def metric(self, cid, key, value, *, metric=None, lower=True, extractor="raw", ref="ref-abc123",
               prov=None):
        self.metrics.append({
            "cell_id": cid, "metric": metric or key, "key": key, "value": float(value), "lower_is_better": lower,
            "feature_extractor": extractor, "reference_hash": ref,
            "provenance": json.dumps(prov or {"reference": "exact mixture moments", "n": 64}, sort_keys=True),
        })

    def frames(self):
        cells = pd.DataFrame(self.cells, columns=CELL_COLUMNS)
        metrics = pd.DataFrame(self.metrics, columns=METRIC_COLUMNS)
        sweeps = pd.DataFrame([{
            "sweep_id": "sw1", "spec_name": "synthetic", "spec_toml": SPEC_TOML,
            "command": "sampler-bench sweep synthetic.toml --out out", "version": "0.1.0", "hostname": "testhost",
            "python": "3.11.7", "torch": "2.13.0", "started_at": "2025-01-01T00:00:00+00:00",
            "finished_at": "2025-01-01T00:01:00+00:00",
        }], columns=SWEEP_COLUMNS)
        return cells, metrics, self.samples.get, sweeps


UNIPC_BH2 = {"order": 2, "variant": "bh2"}


def heun_counted(budget: int) -> int:
    return budget if budget % 2 else budget - 1  # 2 NFE per step, one Euler step to sigma = 0


def synthetic() -> FakeResults:
    """gmm2d and gmm16 results with endpoint errors C * NFE^-p of the declared order p."""
    r = FakeResults()
    for model, dim in (("gmm2d", 2), ("gmm16", 16)):
        for b in BUDGETS:
            for solver, opts, p, counted, cost in (
                ("euler", {}, 1, b, 0.010), ("heun", {}, 2, heun_counted(b), 0.011),
                ("unipc", UNIPC_BH2, 2, b, 0.013),
            ):
                cid = r.cell(model, solver, b, options=opts, order=p, counted=counted, cost=cost, dim=dim)
                r.metric(cid, "endpoint_rmse", 3.0 * counted ** -p)
                r.metric(cid, "fd", 0.01 + 1.0 / counted ** p)
                if model == "gmm2d":
                    r.metric(cid, "precision", 1 - 0.5 / counted ** p, metric="precision_recall", lower=False)
            cid = r.cell(model, "euler_ancestral", b, stochastic=True, order=1, cost=0.012, dim=dim)
            r.metric(cid, "fd", 0.02 + 2.0 / b)
            if model == "gmm2d":
                r.metric(cid, "precision", 1 - 1.0 / b, metric="precision_recall", lower=False)
            # lms (order 4) cannot run at 4 NFE and failed at 8; it finished at 16 and 32.
            if b == 4:
                r.cell(model, "lms", b, order=4, status="skipped",
                       reason="solver 'lms': a budget of 4 NFE is too small; it needs at least 5 NFE", dim=dim)
            elif b == 8:
                r.cell(model, "lms", b, order=4, status="failed", reason="non-finite sample at step 3 (NFE 4)", dim=dim)
            else:
                cid = r.cell(model, "lms", b, order=4, dim=dim)
                r.metric(cid, "endpoint_rmse", 3.0 * b ** -4.0)
                r.metric(cid, "fd", 0.01 + 1.0 / b ** 4)
            r.cell(model, "cld_only", b, status="skipped", reason="applies to process 'cld', not 'gaussian'", dim=dim)
    return r


@pytest.fixture(scope="module")
def results():
    return synthetic().frames()


@pytest.fixture(scope="module")
def doc(results):
    return build_document(*results)


@pytest.fixture(scope="module")
def written(doc, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    md, figures = write_markdown(doc, out)
    return out, {"markdown": md, "html": write_html(doc, out), "figures": figures}


def model_table(frames, model: str, key: str) -> Table:
    """The sampler x NFE table of one key, straight from the table functions (no figures drawn)."""
    cells, metrics, _, _ = frames
    kept, _ = tables.deduplicate(tables.prepare_cells(cells))
    kept = kept[kept["model"] == model]
    values = metrics[metrics["key"] == key].merge(kept[["cell_id", "row", "nfe_budget"]], on="cell_id")
    return tables.metric_table(kept, values, bool(values["lower_is_better"].iloc[0]))


def table_after(doc, heading_text: str) -> Table:
    """The first table after the heading whose text is ``heading_text``."""
    blocks = doc.blocks
    start = next(i for i, b in enumerate(blocks) if getattr(b, "text", None) == heading_text)
    return next(b for b in blocks[start + 1:] if isinstance(b, Table))


def as_grid(table: Table) -> dict[str, dict[str, object]]:
    return {row[0].text: {col: cell for col, cell in zip(table.columns, row)} for row in table.rows}


def test_fixture_follows_the_results_store_contract_exactly(results):
    cells, metrics, _, sweeps = results
    assert tuple(cells.columns) == CELL_COLUMNS
    assert tuple(metrics.columns) == METRIC_COLUMNS
    assert tuple(sweeps.columns) == SWEEP_COLUMNS


# -- tables -------------------------------------------------------------------------------------


def test_best_value_per_column_is_the_minimum_when_lower_is_better(doc):
    grid = as_grid(table_after(doc, "gmm2d: fd"))
    for b in BUDGETS:
        col = str(b)
        texts = {row: cells[col] for row, cells in grid.items() if cells[col].text not in ("", tables.DASH)}
        best = [row for row, c in texts.items() if c.best]
        values = {row: float(c.text.split(" ")[0]) for row, c in texts.items()}
        assert best == [min(values, key=values.get)], (b, best, values)


def test_best_value_per_column_is_the_maximum_when_higher_is_better(doc):
    grid = as_grid(table_after(doc, "gmm2d: precision"))
    for b in BUDGETS:
        marked = [row for row, cells in grid.items() if cells[str(b)].best]
        # precision = 1 - 0.5/counted^p: unipc (p = 2, counted = budget) beats heun (p = 2, counted = budget - 1).
        assert marked == ["unipc (order 2, bh2)"], (b, marked)


def test_every_cell_tied_for_best_is_marked():
    r = FakeResults()
    for solver in ("euler", "heun", "ddim"):
        cid = r.cell("m", solver, 4)
        r.metric(cid, "fd", 0.5 if solver != "ddim" else 0.75)
    grid = as_grid(model_table(r.frames(), "m", "fd"))
    assert [row for row, cells in grid.items() if cells["4"].best] == ["euler", "heun"]


def test_table_cells_have_three_significant_digits_and_show_counted_nfe_where_it_differs(doc):
    grid = as_grid(table_after(doc, "gmm2d: endpoint_rmse"))
    assert grid["euler"]["8"].text == f"{3.0 / 8:.3g}"  # 0.375: counted NFE equals the budget, no parentheses
    assert grid["heun"]["8"].text == f"{3.0 / 7 ** 2:.3g} (7)"  # 0.0612 (7): heun spends 7 of the 8 NFE
    assert grid["heun"]["8"].text == "0.0612 (7)"


def test_skipped_and_failed_cells_show_a_dash_with_a_footnote_giving_the_reason(doc):
    table = table_after(doc, "gmm2d: endpoint_rmse")
    lms = as_grid(table)["lms"]
    assert lms["4"].text == tables.DASH and lms["8"].text == tables.DASH
    assert table.notes[lms["4"].note - 1].startswith("skipped: solver 'lms': a budget of 4 NFE is too small")
    assert table.notes[lms["8"].note - 1] == "failed: non-finite sample at step 3 (NFE 4)"
    assert lms["16"].note is None and not lms["16"].text.startswith(tables.DASH)


def test_stochastic_samplers_have_no_endpoint_error_row_and_never_run_samplers_are_listed_with_reasons(doc):
    rows = as_grid(table_after(doc, "gmm2d: endpoint_rmse"))
    assert "euler_ancestral" not in rows and "cld_only" not in rows
    assert "euler_ancestral" in as_grid(table_after(doc, "gmm2d: fd"))
    md = to_markdown(doc)
    assert "- cld_only: skipped: applies to process 'cld', not 'gaussian'\n" in md


def test_options_label_names_only_options_that_differ_from_the_registry_defaults():
    unipc = sb.solvers.info("unipc")
    defaults = {k: o.default for k, o in unipc.options.items()}
    assert labels.options_label(unipc, defaults) == ""
    other = next(c for c in unipc.options["variant"].choices if c != defaults["variant"])
    assert labels.options_label(unipc, {**defaults, "variant": other}) == other
    assert labels.options_text({"eta": 0.5, "fast": True}) == "eta 0.5, fast"


def test_options_the_budget_plan_added_do_not_split_a_sampler_into_one_row_per_budget():
    def steps_for_nfe(budget, ends_at_zero, opts):
        k = budget // 3 + 1
        return k, {"orders": [3] * (k - 1) + [budget - 3 * (k - 1)] if budget % 3 else [3] * (k - 1)}

    fake = dataclasses.replace(
        registry.info("euler"), name="fake_fast", order=3, nfe_per_step=3,
        options={"orders": registry.Option(None, "int_list", nullable=True), "r1": registry.Option(0.5, float)},
        nfe=lambda steps, end, opts: 3 * steps, steps_for_nfe=steps_for_nfe,
    )
    # the sweep names the configuration (labels.options_label) and stores the name with the cell
    got = {labels.options_label(fake, {**steps_for_nfe(b, True, {})[1], "r1": r1}, b) for b in (6, 7, 10)
           for r1 in (0.5, 0.25)}
    assert got == {"", "r1 0.25"}
    r = FakeResults()
    for b in (6, 7, 10):
        _, upd = steps_for_nfe(b, True, {})
        r.cell("m", "fake_fast", b, options={**upd, "r1": 0.5}, order=3, label=labels.options_label(fake, {**upd, "r1": 0.5}, b))
    cells = tables.prepare_cells(r.frames()[0])
    assert sorted(set(cells["row"])) == ["fake_fast"]


def test_a_setting_that_differs_between_cells_of_a_model_enters_the_row_label():
    r = FakeResults()
    for schedule in ("karras", "log_snr_uniform"):
        for b in (4, 8):
            r.cell("m", "euler", b, schedule=schedule)
    cells = tables.prepare_cells(r.frames()[0])
    assert sorted(set(cells["row"])) == ["euler [karras, rho=7.0]", "euler [log_snr_uniform, default schedule params]"]


def test_an_older_duplicate_cell_is_superseded_by_the_newer_one():
    r = FakeResults()
    old = r.cell("m", "euler", 4, created="2025-01-01T00:00:00+00:00")
    new = r.cell("m", "euler", 4, created="2025-02-01T00:00:00+00:00")
    r.metric(old, "fd", 9.0)
    r.metric(new, "fd", 1.0)
    kept, superseded = tables.deduplicate(tables.prepare_cells(r.frames()[0]))
    assert list(kept["cell_id"]) == [new] and list(superseded["cell_id"]) == [old]
    assert as_grid(model_table(r.frames(), "m", "fd"))["euler"]["4"].text == "1"


# -- fitted orders and Pareto fronts ------------------------------------------------------------


@pytest.mark.parametrize("p", [1.0, 2.0, 3.5])
def test_fit_order_recovers_the_exponent_of_an_exact_power_law(p):
    n = np.array([4, 6, 8, 12, 16, 24, 32])
    assert tables.fit_order(n, 0.7 * n ** -p) == pytest.approx(p, abs=1e-12)
    assert tables.fit_order(n, 0.7 * n ** -p, upper_half=True) == pytest.approx(p, abs=1e-12)


def test_upper_half_fit_ignores_the_pre_asymptotic_budgets():
    n = np.array([2, 3, 4, 8, 16, 32, 64, 128])
    err = np.where(n >= 16, 5.0 * n ** -3.0, 5.0 * 16.0 ** -3 * (16 / n))  # order 1 below 16 NFE, 3 beyond
    assert tables.fit_order(n, err, upper_half=True) == pytest.approx(3.0, abs=1e-12)
    assert tables.fit_order(n, err) < 2.5


def test_fit_order_is_nan_without_two_distinct_positive_points():
    assert math.isnan(tables.fit_order([8, 8], [0.1, 0.2]))
    assert math.isnan(tables.fit_order([4, 8], [0.0, float("nan")]))
    assert math.isnan(tables.fit_order([4, 8, 16], [1, 0.5, 0.25], upper_half=True))  # needs 4 points


def test_empirical_order_table_matches_the_declared_orders_of_exact_power_laws(doc):
    grid = as_grid(table_after(doc, "gmm2d: empirical order"))
    assert set(grid) == {"euler", "heun", "unipc (order 2, bh2)", "lms"}  # no stochastic sampler
    for row, p in (("euler", 1), ("heun", 2), ("unipc (order 2, bh2)", 2), ("lms", 4)):
        assert grid[row]["declared order"].text == str(p)
        assert float(grid[row]["fitted order (all)"].text) == p
    assert grid["heun"]["NFE range"].text == "3..31"  # counted, not asked, NFE
    assert grid["lms"]["fitted order (upper half)"].text == tables.DASH  # two points only


def test_pareto_front_is_exactly_the_set_of_non_dominated_points():
    g = np.random.default_rng(0)
    for lower in (True, False):
        for _ in range(20):
            cost, q = g.uniform(size=25), g.uniform(size=25)
            cost[3], q[3] = cost[5], q[5]  # an exact duplicate
            q[7] = np.nan
            mask = tables.pareto_front(cost, q, lower)
            qq = q if lower else -q
            for i in range(25):
                if np.isnan(q[i]):
                    assert not mask[i]
                    continue
                dominated = any(
                    j != i and not np.isnan(q[j]) and cost[j] <= cost[i] and qq[j] <= qq[i]
                    and (cost[j] < cost[i] or qq[j] < qq[i]) for j in range(25)
                )
                assert mask[i] == (not dominated and not (i == 5 and mask[3])), (lower, i)


def test_pareto_plot_uses_the_metric_every_sampler_has_not_the_endpoint_error(results):
    _, metrics, _, _ = results
    assert tables.headline_key(metrics) == ("fd", "fd")
    assert tables.headline_key(metrics[metrics["key"] == "endpoint_rmse"]) == ("endpoint_rmse", "endpoint_rmse")


def test_seconds_per_sample_prefers_the_recorded_rate():
    cells = pd.DataFrame({"samples_per_s": [100.0, float("nan"), 0.0], "wall_time_s": [9.0, 2.0, float("nan")],
                          "n_samples": [10, 4, 4]})
    out = tables.seconds_per_sample(cells)
    assert out[0] == pytest.approx(0.01) and out[1] == pytest.approx(0.5) and math.isnan(out[2])


# -- pictures -----------------------------------------------------------------------------------


def test_principal_coordinates_use_one_basis_ordered_by_variance():
    g = np.random.default_rng(1)
    q, _ = np.linalg.qr(g.normal(size=(6, 6)))
    a = (g.normal(size=(400, 6)) * np.array([5.0, 2.0, 0.3, 0.2, 0.1, 0.1])) @ q.T + 7.0
    pa, pb = plots.principal_coordinates([a[:200], a[200:]])
    pooled = np.concatenate([pa, pb])
    cov = np.cov(a.T)
    top = np.sort(np.linalg.eigvalsh(cov))[::-1][:2]
    assert np.var(pooled, axis=0, ddof=1) == pytest.approx(top, rel=1e-10)
    assert pooled.mean(axis=0) == pytest.approx([0, 0], abs=1e-10)


def test_principal_axes_fitted_on_converged_samples_ignore_a_diverged_cell():
    g = np.random.default_rng(3)
    converged = g.normal(size=(300, 4)) * np.array([3.0, 1.0, 0.1, 0.1])
    diverged = 80.0 * g.normal(size=(300, 4))
    pc_conv, pc_div = plots.principal_coordinates([converged, diverged], fit_on=[converged])
    alone = plots.principal_coordinates([converged])[0]
    assert np.allclose(pc_conv, alone)  # the diverged cell does not move the axes
    assert np.var(pc_div[:, 0]) > 100 * np.var(pc_conv[:, 1])
    (x0, x1), (y0, y1) = plots.view_limits([pc_conv])
    assert x0 < np.percentile(pc_conv[:, 0], 1) and x1 > np.percentile(pc_conv[:, 0], 99) and x1 - x0 < 40


def test_tile_images_puts_each_image_in_its_own_tile_mapped_from_minus_one_one_to_zero_one():
    imgs = np.stack([np.full((1, 2, 3), v) for v in (-1.0, 0.0, 1.0, 0.5, -0.5)])
    tiled = plots.tile_images(imgs, gap=1)
    assert tiled.shape == (2 * 2 + 1, 3 * 3 + 2, 3)  # 5 images -> 2 rows x 3 columns of 2x3 tiles, 1 px gaps
    tops = {(0, 0): 0.0, (0, 4): 0.5, (0, 8): 1.0, (3, 0): 0.75, (3, 4): 0.25}
    for (y, x), v in tops.items():
        assert (tiled[y:y + 2, x:x + 3] == v).all(), (y, x)
    assert (tiled[2, :] == 1.0).all() and (tiled[:, 3] == 1.0).all()  # white gaps
    assert (tiled[3:5, 8:11] == 1.0).all()  # the sixth tile is empty (white)


def test_sample_pictures_are_scatter_for_2d_principal_axes_for_16d_and_image_grids_for_images(doc):
    figs = {f.name: f for f in doc.figures()}
    assert "gmm2d-samples-1" in figs and "gmm16-samples-1" in figs
    assert "principal axes" in figs["gmm16-samples-1"].caption
    assert "principal axes" not in figs["gmm2d-samples-1"].caption
    assert "NFE 4, 16, 32" in figs["gmm2d-samples-1"].caption  # smallest, middle and largest budget

    r = FakeResults()
    g = np.random.default_rng(2)
    for solver in ("euler", "heun"):
        for b in (4, 8):
            cid = r.cell("digits8", solver, b)
            r.samples[cid] = torch.tensor(g.uniform(-1, 1, (20, 1, 8, 8)), dtype=torch.float32)
            r.metric(cid, "fd", 1.0 / b)
    img_doc = build_document(*r.frames(), sample_budgets=[8])
    names = [f.name for f in img_doc.figures() if "samples" in f.name]
    assert names == ["digits8-samples-euler", "digits8-samples-heun"]


def test_sample_budgets_that_a_model_lacks_are_named_in_a_note():
    r = FakeResults()
    for b in (4, 8):
        r.metric(r.cell("m", "euler", b), "fd", 1.0 / b)
    doc = build_document(*r.frames(), sample_budgets=[8, 12])
    assert "Requested budget(s) 12 have no finished cell for m; budgets present: 4, 8." in to_markdown(doc)
    assert [f.caption.split("(columns)")[0][-6:] for f in doc.figures() if "samples" in f.name] == ["NFE 8 "]


# -- the written report -------------------------------------------------------------------------


def test_report_writes_markdown_with_relative_figure_links_that_exist(written):
    out, paths = written
    assert paths["markdown"] == out / "report.md" and paths["html"] == out / "report.html"
    md = paths["markdown"].read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert links and sorted(links) == sorted(f"figures/{p.name}" for p in paths["figures"])
    for link in links:
        assert (out / link).is_file() and (out / link).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_html_report_is_self_contained(written):
    _, paths = written
    html = paths["html"].read_text()
    assert "<script" not in html and "<link" not in html and "@import" not in html
    assert not re.search(r"""(src|href)\s*=\s*["'](?!data:|#)""", html)  # only data URIs and in-page anchors
    assert html.count('src="data:image/png;base64,') == len(paths["figures"])


def test_markdown_and_html_mark_the_same_best_cells(written, doc):
    _, paths = written
    md, html = paths["markdown"].read_text(), paths["html"].read_text()
    best = [c.text for b in doc.blocks if isinstance(b, Table) for row in b.rows for c in row if c.best]
    assert best
    assert len(re.findall(r"\*\*[^*|]+\*\*", md)) == len(best)
    assert html.count('class="best"') == len(best)
    for text in set(best):
        assert f"**{text}**" in md and f'title="best in column">{text}<' in html


def test_provenance_lists_what_is_needed_to_reproduce_a_number(written, results):
    _, paths = written
    cells, _, _, _ = results
    for text in (paths["markdown"].read_text(), paths["html"].read_text()):
        for needle in ("hash-gmm2d", "ref-abc123", '"rho": 7.0', "float64", "sampler-bench sweep synthetic.toml",
                       "testhost", "2.13.0", "exact mixture moments"):
            assert needle in text, needle
        for cid in cells["cell_id"]:
            assert cid[:12] in text
    md = paths["markdown"].read_text()
    assert "```toml\n" + SPEC_TOML.rstrip("\n") + "\n```" in md
    assert "<summary>sweep spec synthetic (TOML)</summary>" in paths["html"].read_text()


def test_rendering_the_same_results_twice_writes_identical_files(tmp_path):
    r = FakeResults()
    for model, dim in (("gmm2d", 2), ("gmm16", 16)):
        for b in (4, 8):
            r.metric(r.cell(model, "euler", b, dim=dim), "fd", 1.0 / b)
    first, second = (render(*r.frames(), tmp_path / name) for name in ("a", "b"))
    assert first["markdown"].read_bytes() == second["markdown"].read_bytes()
    assert first["html"].read_bytes() == second["html"].read_bytes()
    assert [p.read_bytes() for p in first["figures"]] == [p.read_bytes() for p in second["figures"]]


def test_rendering_leaves_matplotlib_global_state_alone():
    r = FakeResults()
    for b in (4, 8):
        r.metric(r.cell("m", "euler", b), "fd", 1.0 / b)
    had_pyplot = "matplotlib.pyplot" in sys.modules
    # dict.items reads the raw values: rcParams["backend"] itself would resolve the backend via pyplot.
    rc = dict(dict.items(matplotlib.rcParams))
    build_document(*r.frames())
    assert dict(dict.items(matplotlib.rcParams)) == rc
    assert had_pyplot or "matplotlib.pyplot" not in sys.modules


def test_nfe_check_flags_a_cell_whose_counted_nfe_differs_from_its_planned_nfe():
    r = FakeResults()
    r.cell("m", "heun", 8, counted=8, planned=7)
    r.cell("m", "heun", 16, counted=15)
    r.cell("m", "heun", 4, status="skipped", reason="too small")
    assert _nfe_checks(tables.prepare_cells(r.frames()[0])) == ["heun at budget 8: planned 7, counted 8"]


# -- bad input ----------------------------------------------------------------------------------


def test_bad_input_stops_with_one_readable_value_error(results, tmp_path):
    cells, metrics, samples, sweeps = results
    with pytest.raises(ValueError, match="lacks column.*nfe_counted"):
        build_document(cells.drop(columns=["nfe_counted"]), metrics, samples, sweeps)
    with pytest.raises(ValueError, match="lacks column.*lower_is_better"):
        build_document(cells, metrics.drop(columns=["lower_is_better"]), samples, sweeps)
    with pytest.raises(ValueError, match="holds no cells; run `sampler-bench sweep`"):
        build_document(cells.iloc[0:0], metrics, samples, sweeps)
    with pytest.raises(ValueError, match="sample_budgets must be a non-empty list of positive integer"):
        build_document(cells, metrics, samples, sweeps, sample_budgets=[4, -1])
    with pytest.raises(ValueError, match=r"match no NFE budget.*budgets present: 4, 8, 16, 32"):
        build_document(cells, metrics, samples, sweeps, sample_budgets=[5])
    from sampler_bench.report import write_report

    with pytest.raises(ValueError, match="no results store at .*results.sqlite"):
        write_report(tmp_path / "missing.sqlite", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_every_block_type_renders_in_markdown(doc):
    kinds = {type(b) for b in doc.blocks}
    assert {Table, Figure, Details} <= kinds
    assert to_markdown(doc).count("<details>") == to_markdown(doc).count("</details>") > 0
