"""Reports from a results store: report.md (+ figures/*.png) and a self-contained report.html.

``write_report(store_or_path, out_dir)`` is what ``sampler-bench report`` and the end of
``sampler-bench sweep`` call; ``render(cells, metrics, samples, sweeps, out_dir)`` does the same
from the store's DataFrames. Modules: ``tables`` (labels, sampler x NFE tables, fitted orders,
Pareto fronts), ``plots`` (matplotlib figures), ``provenance``, ``document`` (the content as
blocks), ``markdown`` and ``html`` (the two writers), ``build`` (assembly).
"""

from .build import build_document, render, write_report

__all__ = ["write_report", "render", "build_document"]
