"""Report figures: metric vs NFE (log-log), quality vs wall time with its Pareto front, sample pictures.

Figures are built on ``matplotlib.figure.Figure`` directly and written with the Agg canvas, so
rendering a report never switches the backend, imports pyplot or touches ``rcParams`` of a user
who imported sampler-bench in a notebook.
"""

from __future__ import annotations

import io
import math
from typing import Mapping, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator

DPI = 96
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "*")


def to_png(fig: Figure) -> bytes:
    """PNG bytes of a figure (no timestamp in the metadata, so equal figures give equal bytes)."""
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def palette(labels: Sequence[str]) -> dict[str, tuple]:
    """A (colour, marker) per label, stable for a given label list so every plot of a model agrees."""
    # tab20 holds pairs of a dark and a light shade: all dark shades first keeps neighbours distinct.
    tab20 = list(colormaps["tab20"].colors)
    colours = tab20[0::2] + tab20[1::2] + list(colormaps["tab20b"].colors)
    return {label: (colours[i % len(colours)], MARKERS[(i // 2) % len(MARKERS)]) for i, label in enumerate(labels)}


def _log_if_positive(ax, values) -> None:
    """Log y when every value is positive and they span at least a decade; linear y reads better otherwise."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if len(v) and (v > 0).all() and v.max() >= 10 * v.min():
        ax.set_yscale("log")


def _legend(fig: Figure, entries: int) -> None:
    """Legend outside the axes on the right; a second column once one would run off the figure."""
    fig.legend(loc="outside right upper", fontsize=7, frameon=False, ncols=1 if entries <= 30 else 2)


def _nfe_ticks(ax, nfe: Sequence[float], most: int = 12) -> None:
    """Label the NFE axis with the NFE budgets themselves (plain integers, not powers of ten)."""
    ticks = sorted({int(n) for n in nfe if n > 0})
    if not ticks:
        return
    while len(ticks) > most:  # thin out, keeping the smallest and the largest
        ticks = ticks[::2] + ([ticks[-1]] if len(ticks) % 2 == 0 else [])
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.set_xticks([], minor=True)


def _fixed_margins(fig: Figure, *, left: float, right: float, top: float, bottom: float,
                   wspace: float = 0.0, hspace: float = 0.0) -> None:
    """Margins in inches, set once: grids of panels sharing axes need no layout engine, which would
    measure every tick label of every panel again (half of a report's drawing time)."""
    w, h = fig.get_size_inches()
    fig.subplots_adjust(left=left / w, right=1.0 - right / w, top=1.0 - top / h, bottom=bottom / h,
                        wspace=wspace, hspace=hspace)


#: Small-multiple panels per row of a metric-vs-NFE figure.
PANEL_COLUMNS = 3


def _floor_band(ax, floor: Mapping | None) -> None:
    """The noise floor (the metric of exact samples of the same size): a grey band over its interval."""
    if not floor:
        return
    lo, hi, v = (float(floor.get(k, math.nan)) for k in ("ci_low", "ci_high", "value"))
    if math.isfinite(hi):
        ax.axhspan(lo if math.isfinite(lo) else 0.0, hi, color="0.5", alpha=0.18, linewidth=0, zorder=0)
    if math.isfinite(v):
        ax.axhline(v, color="0.4", linestyle=":", linewidth=1.0, zorder=0)


def _padded(lo: float, hi: float, log: bool, pad: float = 0.05) -> tuple[float, float]:
    """(lo, hi) widened by ``pad`` of the span on each side (in log space for a log axis)."""
    if log:
        lo, hi = math.log10(lo), math.log10(hi)
    span = hi - lo if hi > lo else (abs(hi) * 0.1 if hi else 1.0)
    lo, hi = lo - pad * span, hi + pad * span
    return (10 ** lo, 10 ** hi) if log else (lo, hi)


def _set_limits(ax, series: Sequence[Mapping], floor: Mapping | None) -> None:
    """Log x over the counted NFE; y log (values and bands positive, spanning a decade) or linear, each
    padded by 5% of its span as matplotlib's autoscale would; the floor's band is kept in view."""
    ax.set_xscale("log")
    nfe, values, bands = [], [], []
    for s in series:
        nfe.extend(np.asarray(s["nfe"], dtype=np.float64).tolist())
        values.extend(np.asarray(s["value"], dtype=np.float64).tolist())
        for k in ("ci_low", "ci_high"):
            if s.get(k) is not None:
                bands.extend(np.asarray(s[k], dtype=np.float64).tolist())
    if floor:
        bands.extend(float(floor.get(k, math.nan)) for k in ("value", "ci_low", "ci_high"))
    x = np.asarray([v for v in nfe if math.isfinite(v) and v > 0])
    if len(x):
        ax.set_xlim(*_padded(float(x.min()), float(x.max()), log=True))
    y = np.asarray([v for v in values + bands if math.isfinite(v)])
    if not len(y):
        return
    _log_if_positive(ax, [v for v in values if math.isfinite(v)] + [v for v in bands if math.isfinite(v) and v > 0])
    if ax.get_yscale() == "log":
        positive = y[y > 0]
        # bands reaching below 0 (an interval of a value near 0) are cut at half the smallest positive value
        ax.set_ylim(0.5 * float(positive.min()), _padded(0.5 * float(positive.min()), float(positive.max()), log=True)[1])
    else:
        ax.set_ylim(*_padded(float(y.min()), float(y.max()), log=False))


def metric_vs_nfe(series: Sequence[Mapping], *, title: str, ylabel: str, style: Mapping[str, tuple],
                  budgets: Sequence[int] = (), floor: Mapping | None = None) -> Figure:
    """Small multiples, one panel per sampler family: metric value against counted NFE (log x).

    ``series`` items: ``label`` (legend text), ``row`` (palette key), ``nfe``, ``value``, optional
    ``ci_low``/``ci_high`` (drawn as a band), ``family`` (panel; default one panel), ``stochastic``
    (dashed line). ``floor``: the noise floor (value, ci_low, ci_high), a grey band in every panel.
    Panels share both axes, so heights compare across panels; y is log when every value and band is
    positive and they span a decade or more.
    """
    families = list(dict.fromkeys(s.get("family", "") for s in series)) or [""]
    ncols = min(PANEL_COLUMNS, len(families))
    nrows = math.ceil(len(families) / ncols)
    fig = Figure(figsize=(4.2 * ncols + 0.6, 3.1 * nrows + 0.8))
    axes = fig.subplots(nrows, ncols, sharex=True, sharey=True, squeeze=False)
    _fixed_margins(fig, left=0.85, right=0.15, top=0.75, bottom=0.6, wspace=0.06, hspace=0.22)
    # Limits set before anything is drawn turn autoscaling off: with it on, every band added to a panel
    # re-runs the autoscale of all the panels sharing its axes (a quadratic cost in the panels).
    _set_limits(axes[0][0], series, floor)
    for k, family in enumerate(families):
        ax = axes[k // ncols][k % ncols]
        for s in [s for s in series if s.get("family", "") == family]:
            nfe = np.asarray(s["nfe"], dtype=np.float64)
            val = np.asarray(s["value"], dtype=np.float64)
            order = np.argsort(nfe, kind="stable")
            colour, marker = style[s["row"]]
            ax.plot(nfe[order], val[order], marker=marker, markersize=3.5, linewidth=1.2, color=colour,
                    linestyle="--" if s.get("stochastic") else "-", label=s["label"])
            lo, hi = s.get("ci_low"), s.get("ci_high")
            if lo is not None and hi is not None:
                lo, hi = np.asarray(lo, dtype=np.float64)[order], np.asarray(hi, dtype=np.float64)[order]
                ok = np.isfinite(lo) & np.isfinite(hi)
                if ok.any():
                    ax.fill_between(nfe[order][ok], lo[ok], hi[ok], color=colour, alpha=0.15, linewidth=0)
        _floor_band(ax, floor)
        # A fixed title height and legend corner: matplotlib's automatic ones measure every tick label
        # and every plotted point of the panel again (most of a report's drawing time). Values fall
        # with NFE, so the upper right corner is the emptiest one.
        ax.set_title(family or title, fontsize=9, y=1.0, pad=3)
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=6, frameon=False, loc="upper right")
    for k in range(len(families), nrows * ncols):
        axes[k // ncols][k % ncols].set_visible(False)
    ax0 = axes[0][0]
    _nfe_ticks(ax0, list(budgets) or [n for s in series for n in np.asarray(s["nfe"]).tolist()])
    if ax0.get_yscale() == "log":
        # Minor ticks of a log axis spanning many decades are hundreds of tick objects per panel,
        # drawn in every panel: the major decades and their grid lines carry the reading.
        ax0.yaxis.set_minor_locator(NullLocator())
    fig.supxlabel("NFE (counted)", fontsize=9)
    fig.supylabel(ylabel, fontsize=9)
    fig.suptitle(title, fontsize=11)
    return fig


def pareto_plot(points, *, title: str, ylabel: str, style: Mapping[str, tuple]) -> Figure:
    """Quality against wall time per sample; the Pareto front drawn as a step line, numbered by cost.

    ``points``: DataFrame with ``row``, ``cost`` (seconds per sample), ``value``, ``nfe_budget``
    and ``front`` (bool).
    """
    fig = Figure(figsize=(9.5, 5.2))
    ax = fig.add_subplot()
    # fixed margins, the legend in the right one: a layout engine would measure the figure twice
    entries = points["row"].nunique() + 1  # a legend line per sampler and the front
    _fixed_margins(fig, left=0.8, right=2.1 if entries <= 30 else 3.3, top=0.45, bottom=0.6)
    for row in [r for r in style if r in set(points["row"])]:
        sub = points[points["row"] == row]
        colour, marker = style[row]
        ax.scatter(sub["cost"], sub["value"], s=22, color=colour, marker=marker, label=row, alpha=0.85, linewidths=0)
    front = points[points["front"]].sort_values("cost", kind="stable")
    if len(front):
        ax.step(front["cost"], front["value"], where="post", color="black", linewidth=1.0, alpha=0.7,
                label="Pareto front")
        ax.scatter(front["cost"], front["value"], s=60, facecolors="none", edgecolors="black", linewidths=1.2)
        # Numbers, not names: names of neighbouring front points overlap; the caption lists them.
        for k, p in enumerate(front.itertuples(index=False), 1):
            ax.annotate(str(k), (p.cost, p.value), fontsize=7, xytext=(3, 4), textcoords="offset points")
    ax.set_xscale("log")
    _log_if_positive(ax, points["value"])
    ax.set_xlabel("wall time per sample (s)")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=11, y=1.0, pad=4)
    ax.grid(True, which="both", alpha=0.3)
    if len(points):
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False,
                  ncols=1 if entries <= 30 else 2, borderaxespad=0.0)
    return fig


def principal_coordinates(arrays: Sequence[np.ndarray], fit_on: Sequence[np.ndarray] | None = None) -> list[np.ndarray]:
    """Project [N, D] arrays on the first two principal axes of ``fit_on`` pooled (default: ``arrays``).

    One basis for every panel, so the panels of a model can be compared with each other; fit it on
    the best-converged samples (the largest budget) so a diverged cell does not choose the axes.
    """
    source = [a for a in (fit_on if fit_on is not None else arrays) if a is not None and len(a)]
    pooled = np.concatenate(source, axis=0) if source else np.empty((0, arrays[0].shape[1]))
    finite = pooled[np.isfinite(pooled).all(axis=1)]
    if len(finite) < 2:  # nothing to fit a basis on (all samples diverged): the first two coordinates
        return [None if a is None else a[:, :2] for a in arrays]
    mean = finite.mean(axis=0)
    _, _, vt = np.linalg.svd(finite - mean, full_matrices=False)
    basis = vt[:2].T.copy()
    # SVD's signs are arbitrary: make each axis's largest loading positive so reruns agree.
    for k in range(basis.shape[1]):
        if basis[np.abs(basis[:, k]).argmax(), k] < 0:
            basis[:, k] *= -1.0
    return [None if a is None else (a - mean) @ basis for a in arrays]


def view_limits(arrays: Sequence[np.ndarray]) -> tuple[tuple[float, float], tuple[float, float]] | None:
    """Axis limits covering the central 99% of the pooled 2-D points, padded by a quarter of the range."""
    pooled = [a[np.isfinite(a).all(axis=1)] for a in arrays if a is not None and len(a)]
    p = np.concatenate(pooled, axis=0) if pooled else np.empty((0, 2))
    if not len(p):
        return None
    lo, hi = np.percentile(p, 0.5, axis=0), np.percentile(p, 99.5, axis=0)
    pad = 0.25 * np.maximum(hi - lo, 1e-9)
    return (lo[0] - pad[0], hi[0] + pad[0]), (lo[1] - pad[1], hi[1] + pad[1])


def _outside(data: np.ndarray, limits) -> float:
    (x0, x1), (y0, y1) = limits
    inside = (data[:, 0] >= x0) & (data[:, 0] <= x1) & (data[:, 1] >= y0) & (data[:, 1] <= y1)
    return 1.0 - inside.mean()


def _empty_panel(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=7, color="0.4", transform=ax.transAxes, wrap=True)


#: Width of one scatter panel in pixels (at DPI, about the 2.1 inches of an axes-per-panel figure).
SCATTER_PANEL_PX = 180
_BLUE = np.array(colormaps["tab10"].colors[0])  # tab:blue
_SCATTER_ALPHA = 0.6


def scatter_raster(points: np.ndarray, limits, shape: tuple[int, int]) -> np.ndarray:
    """[H, W, 3] picture of 2-D points (white ground): each point covers a 2 x 2 pixel dot of
    tab:blue at alpha 0.6 and dots compose as overlapping transparent markers do (1 - 0.4^k for k of
    them), as a scatter plot with markers of that size would draw them, at a fraction of the cost of
    drawing each marker."""
    (x0, x1), (y0, y1) = limits
    h, w = shape
    p = points[np.isfinite(points).all(axis=1)]
    counts, _, _ = np.histogram2d(p[:, 1], p[:, 0], bins=(h, w), range=((y0, y1), (x0, x1)))
    counts = counts[::-1]  # image rows run from the top: y decreases downwards
    dots = counts.copy()
    dots[1:, :] += counts[:-1, :]
    dots[:, 1:] += dots[:, :-1].copy()
    cover = 1.0 - (1.0 - _SCATTER_ALPHA) ** dots
    return 1.0 - cover[..., None] * (1.0 - _BLUE[None, None, :])


def _tick_text(v: float) -> str:
    return f"{v:.3g}"


def scatter_grid(rows: Sequence[str], budgets: Sequence[int], panels: Mapping[tuple[str, int], np.ndarray | str],
                 *, title: str, axis_labels: tuple[str, str] = ("x1", "x2")) -> Figure:
    """Samples as scatter plots (or histograms for 1-D data): one row per sampler, one column per budget.

    A panel is an [N, 2] (or [N, 1]) array, or a short text saying why there is none. Every panel
    shares the axis limits, fitted to the samples of the largest budget (the best converged), so a
    sampler that spreads its mass wider shows it, and a panel says which fraction of its points
    falls outside the view (a diverged cell); the shared limits are written on the outer panels.

    2-D panels are drawn as one picture (:func:`scatter_raster` per panel, equal scales on both axes)
    in a single axes: a grid of axes with thousands of markers took seconds per figure, most of a
    report's time.
    """
    arrays = [a for a in panels.values() if isinstance(a, np.ndarray)]
    one_d = {a.shape[1] for a in arrays} == {1}
    last = [a for (_, b), a in panels.items() if b == budgets[-1] and isinstance(a, np.ndarray)]
    limits = None if one_d else view_limits(last or arrays)
    if limits is not None:
        return _raster_scatter_grid(rows, budgets, panels, limits, title=title, axis_labels=axis_labels)
    fig = Figure(figsize=(1.0 + 2.1 * len(budgets), 0.6 + 2.0 * len(rows)))
    axes = fig.subplots(len(rows), len(budgets), squeeze=False)
    _fixed_margins(fig, left=0.75, right=0.1, top=0.55, bottom=0.45, wspace=0.08, hspace=0.12)
    for i, row in enumerate(rows):
        for j, budget in enumerate(budgets):
            ax = axes[i][j]
            data = panels.get((row, budget), "not run")
            if not isinstance(data, np.ndarray) or not len(data):
                _empty_panel(ax, data if isinstance(data, str) else "no samples stored")
            elif one_d:
                ax.hist(data[:, 0][np.isfinite(data[:, 0])], bins=30, color="tab:blue", alpha=0.8)
            else:
                ax.scatter(data[:, 0], data[:, 1], s=2, alpha=0.6, color="tab:blue", linewidths=0, rasterized=True)
                away = _outside(data, limits) if limits is not None else 0.0
                if away > 0.005:
                    ax.text(0.03, 0.97, f"{100 * away:.0f}% outside view", transform=ax.transAxes, fontsize=6,
                            va="top", color="tab:red", bbox={"facecolor": "white", "alpha": 0.8, "linewidth": 0})
            if limits is not None:
                ax.set_xlim(*limits[0])
                ax.set_ylim(*limits[1])
                ax.set_aspect("equal", adjustable="box")
                # Shared limits: ticks on the outer panels say it all (and inner ticks cost half the render).
                if i != len(rows) - 1:
                    ax.set_xticks([])
                if j != 0:
                    ax.set_yticks([])
            ax.tick_params(labelsize=6)
            if i == 0:
                ax.set_title(f"NFE {budget}", fontsize=8)
            if j == 0:
                ax.set_ylabel(row, fontsize=7)
    fig.suptitle(title, fontsize=10)
    if not one_d:
        fig.supxlabel(f"{axis_labels[0]} (x), {axis_labels[1]} (y)", fontsize=7)
    return fig


def _raster_scatter_grid(rows, budgets, panels, limits, *, title: str, axis_labels: tuple[str, str]) -> Figure:
    (x0, x1), (y0, y1) = limits
    w = SCATTER_PANEL_PX
    h = int(round(min(max(w * (y1 - y0) / (x1 - x0), w / 3), 2 * w)))  # square pixels: equal aspect
    gap = 8
    n_r, n_c = len(rows), len(budgets)
    mosaic = np.ones((n_r * (h + gap) - gap, n_c * (w + gap) - gap, 3))
    notes = []  # (row, column, text, colour, centred)
    for i, row in enumerate(rows):
        for j, budget in enumerate(budgets):
            top, left = i * (h + gap), j * (w + gap)
            tile = mosaic[top:top + h, left:left + w]
            data = panels.get((row, budget), "not run")
            if not isinstance(data, np.ndarray) or not len(data):
                notes.append((i, j, data if isinstance(data, str) else "no samples stored", "0.4", True))
            else:
                tile[:] = scatter_raster(data, limits, (h, w))
                away = _outside(data, limits)
                if away > 0.005:
                    notes.append((i, j, f"{100 * away:.0f}% outside view", "tab:red", False))
            tile[[0, -1], :] = 0.8  # a light frame around every panel
            tile[:, [0, -1]] = 0.8
    dpi_in = 1.0 / DPI
    left_in, right_in, top_in, bottom_in = 0.9, 0.15, 0.7, 0.55
    width_px, height_px = mosaic.shape[1], mosaic.shape[0]
    fig = Figure(figsize=(left_in + right_in + width_px * dpi_in, top_in + bottom_in + height_px * dpi_in))
    fw, fh = fig.get_size_inches()
    ax = fig.add_axes((left_in / fw, bottom_in / fh, width_px * dpi_in / fw, height_px * dpi_in / fh))
    ax.imshow(mosaic, interpolation="nearest", extent=(0, width_px, height_px, 0))
    ax.set_axis_off()
    for i, j, text, colour, centred in notes:
        x, y = j * (w + gap), i * (h + gap)
        if centred:
            ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=7, color=colour, wrap=True)
        else:
            ax.text(x + 4, y + 4, text, ha="left", va="top", fontsize=6, color=colour,
                    bbox={"facecolor": "white", "alpha": 0.8, "linewidth": 0})
    for j, budget in enumerate(budgets):
        ax.text(j * (w + gap) + w / 2, -6, f"NFE {budget}", ha="center", va="bottom", fontsize=8)
        bottom = n_r * (h + gap) - gap
        ax.text(j * (w + gap), bottom + 3, _tick_text(x0), ha="left", va="top", fontsize=6)
        ax.text(j * (w + gap) + w, bottom + 3, _tick_text(x1), ha="right", va="top", fontsize=6)
    for i, row in enumerate(rows):
        y = i * (h + gap)
        ax.text(-30, y + h / 2, row, ha="right", va="center", fontsize=7)
        ax.text(-3, y, _tick_text(y1), ha="right", va="top", fontsize=6)
        ax.text(-3, y + h, _tick_text(y0), ha="right", va="bottom", fontsize=6)
    fig.suptitle(title, fontsize=10, y=1.0 - 0.1 / fh, va="top")  # above the column titles
    fig.supxlabel(f"{axis_labels[0]} (x), {axis_labels[1]} (y); shared limits on the outer panels", fontsize=7)
    return fig


def tile_images(images: np.ndarray, max_images: int = 16, gap: int = 1) -> np.ndarray:
    """[N, C, H, W] in [-1, 1] -> one [rows, cols] mosaic in [0, 1] (RGB, white ``gap`` pixels between tiles)."""
    x = images[:max_images]
    n, c, h, w = x.shape
    if c == 1:
        x = np.repeat(x, 3, axis=1)
    x = np.clip((np.nan_to_num(x, nan=0.0) + 1.0) / 2.0, 0.0, 1.0)
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    canvas = np.ones((rows * cols, 3, h + gap, w + gap))
    canvas[:n, :, :h, :w] = x
    mosaic = canvas.reshape(rows, cols, 3, h + gap, w + gap).transpose(0, 3, 1, 4, 2)
    return mosaic.reshape(rows * (h + gap), cols * (w + gap), 3)[: rows * (h + gap) - gap, : cols * (w + gap) - gap]


def image_grid(label: str, budgets: Sequence[int], panels: Mapping[int, np.ndarray | str], *, title: str) -> Figure:
    """The image samples of one sampler: a tiled grid per budget (or a text saying why there is none)."""
    fig = Figure(figsize=(0.6 + 2.6 * len(budgets), 3.0), layout="constrained")
    axes = fig.subplots(1, len(budgets), squeeze=False)[0]
    for ax, budget in zip(axes, budgets):
        data = panels.get(budget, "not run")
        if isinstance(data, np.ndarray) and len(data):
            ax.imshow(tile_images(data), interpolation="nearest")
        else:
            _empty_panel(ax, data if isinstance(data, str) else "no samples stored")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"NFE {budget}", fontsize=8)
    fig.suptitle(f"{title}: {label}", fontsize=10)
    return fig
