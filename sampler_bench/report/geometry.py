"""Report figures of trajectory geometry (metric ``trajectory_geometry``; Chen et al., arXiv 2305.19947).

Two figures per model, each at the largest NFE budget the geometry was measured at, one panel per sampler:

* deviation against sigma: the mean relative deviation from the chord x_T -> x_0 of the sampling trajectory
  (solid) and of the denoising trajectory D(x_t, sigma_t) (dashed) at every grid level, with 95% bands
  (Chen et al., Fig. 3);
* a few trajectories: 2-D models in their own coordinates, other models in the chord frame -- distance along
  the chord from x_T against the top principal direction of the part orthogonal to it (Chen et al. Fig. 2;
  the projection of their follow-up, arXiv 2405.11326) -- sampling trajectory solid, denoising dashed.

Both read what the metric stored in each value's provenance (``profile`` and ``paths``).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure as MplFigure

from . import plots
from .document import Figure, Paragraph
from .tables import parse_json

METRIC = "trajectory_geometry"
#: panels per figure row, and the most panels (samplers) per figure
COLUMNS = 4
MOST_PANELS = 16


def _panels(n: int) -> tuple[MplFigure, list]:
    cols = min(COLUMNS, n)
    rows = math.ceil(n / cols)
    fig = MplFigure(figsize=(2.6 * cols + 0.8, 2.3 * rows + 0.7))
    axes = fig.subplots(rows, cols, squeeze=False).ravel().tolist()
    for ax in axes[n:]:
        ax.set_visible(False)
    plots._fixed_margins(fig, left=0.6, right=0.2, top=0.45, bottom=0.5, wspace=0.35, hspace=0.55)
    return fig, axes[:n]


def _deviation_figure(model: str, budget: int, entries: list[tuple[str, dict]], style) -> MplFigure:
    fig, axes = _panels(len(entries))
    for ax, (row, prof) in zip(axes, entries):
        sigma = np.asarray(prof.get("sigma", []), dtype=float)
        colour = style.get(row, ("C0", "o"))[0]
        ok = sigma > 0  # the last level of a grid ending at 0 has no place on a log axis
        for name, dash in (("sampling", "-"), ("denoising", "--")):
            v = np.asarray(prof.get(name, []), dtype=float)
            ci = np.asarray(prof.get(name + "_ci", []), dtype=float).reshape(-1, 2)
            if len(v) != len(sigma):
                continue
            ax.plot(sigma[ok], v[ok], dash, color=colour, linewidth=1.2, label=f"{name} trajectory")
            if len(ci) == len(v):
                ax.fill_between(sigma[ok], ci[ok, 0], ci[ok, 1], color=colour, alpha=0.2, linewidth=0)
        ax.set_xscale("log")
        ax.invert_xaxis()  # sampling runs from large sigma to small, left to right
        ax.set_title(row, fontsize=7)
        ax.tick_params(labelsize=6)
        ax.set_xlabel("sigma", fontsize=7)
    axes[0].set_ylabel("deviation / |x_T - x_0|", fontsize=7)
    axes[0].legend(fontsize=6, frameon=False)
    fig.suptitle(f"{model}: deviation from the chord x_T -> x_0 against sigma (NFE {budget})", fontsize=9)
    return fig


def _path_figure(model: str, budget: int, entries: list[tuple[str, list]], style, planar: bool) -> MplFigure:
    fig, axes = _panels(len(entries))
    for ax, (row, paths) in zip(axes, entries):
        colour = style.get(row, ("C0", "o"))[0]
        for k, path in enumerate(paths):
            p = np.asarray(path.get("sampling", []), dtype=float)
            q = np.asarray(path.get("denoising", []), dtype=float)
            if p.ndim != 2 or p.shape[1] < 2:
                continue
            ax.plot(p[:, 0], p[:, 1], "-", color=colour, linewidth=1.0, marker=".", markersize=2,
                    label="sampling" if k == 0 else None)
            if q.ndim == 2 and q.shape[1] >= 2:
                ax.plot(q[:, 0], q[:, 1], "--", color="0.35", linewidth=0.9, label="denoising" if k == 0 else None)
            ax.plot(p[:1, 0], p[:1, 1], "o", color="k", markersize=3)  # x_T
        ax.set_title(row, fontsize=7)
        ax.tick_params(labelsize=6)
    if planar:
        axes[0].set_xlabel("x[0]", fontsize=7)
        axes[0].set_ylabel("x[1]", fontsize=7)
    else:
        axes[0].set_xlabel("along the chord from x_T", fontsize=7)
        axes[0].set_ylabel("top orthogonal direction", fontsize=7)
    axes[0].legend(fontsize=6, frameon=False)
    fig.suptitle(f"{model}: trajectories (NFE {budget}; black dot: x_T)", fontsize=9)
    return fig


def geometry_blocks(names, model: str, values: pd.DataFrame, style) -> list:
    """The report blocks of one model's geometry values (none when it has none)."""
    sub = values[(values["metric"] == METRIC) & (values["key"] == "sampling_deviation")]
    if sub.empty or "provenance" not in sub.columns:
        return []
    budget = int(sub["nfe_budget"].max())
    at = sub[sub["nfe_budget"] == budget]
    rows = [r for r in style if r in set(at["row"])][:MOST_PANELS]
    profiles, paths, planar = [], [], True
    for row in rows:
        prov = parse_json(at[at["row"] == row]["provenance"].iloc[0])
        if isinstance(prov.get("profile"), dict):
            profiles.append((row, prov["profile"]))
        if prov.get("paths"):
            paths.append((row, prov["paths"]))
        planar = planar and "own 2 coordinates" in str(prov.get("trajectory", {}).get("frame", ""))
    blocks = [Paragraph(
        "Trajectory geometry (Chen et al., arXiv 2305.19947): deviation is the perpendicular distance of a point "
        "to the chord from x_T to the sample x_0, divided by the chord's length; the sampling trajectory is {x_t} "
        "at the grid levels, the denoising trajectory {D(x_t, sigma_t)}. The values above are means over samples "
        "of each sample's largest deviation, mean curvature (times the chord length) and mean angle between "
        "successive steps; docs/geometry.md defines them.")]
    if profiles:
        fig = _deviation_figure(model, budget, profiles, style)
        blocks.append(Figure(names(model, "deviation-vs-sigma"), plots.to_png(fig),
                             f"Mean relative deviation from the chord at each grid level, NFE {budget}: sampling "
                             "trajectory solid, denoising trajectory dashed, shaded 95% intervals (Poisson bootstrap "
                             "over samples). sigma decreases from left to right.",
                             alt=f"{model} deviation against sigma"))
    if paths:
        fig = _path_figure(model, budget, paths, style, planar)
        frame = ("in the model's own two coordinates" if planar else
                 "projected on the chord (x axis: distance from x_T along it) and on the top principal direction of "
                 "the part orthogonal to the chord (y axis)")
        blocks.append(Figure(names(model, "trajectories"), plots.to_png(fig),
                             f"The first samples' trajectories at NFE {budget}, {frame}: sampling trajectory solid "
                             "with a dot per level, denoising trajectory dashed.", alt=f"{model} trajectories"))
    return blocks
