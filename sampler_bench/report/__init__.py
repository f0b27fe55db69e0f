"""Reports from a results store: report.md (+ figures/*.png) and a self-contained report.html.

``write_report(store_or_path, out_dir)`` is what ``sampler-bench report`` and the end of
``sampler-bench sweep`` call; ``render(cells, metrics, samples, sweeps, out_dir)`` does the same
from the store's DataFrames. Modules: ``tables`` (labels, sampler x NFE tables, fitted orders,
Pareto fronts), ``plots`` (matplotlib figures), ``provenance``, ``document`` (the content as
blocks), ``markdown`` and ``html`` (the two writers), ``build`` (assembly).
"""

__all__ = ["write_report", "render", "build_document"]


def __getattr__(name: str):
    # Lazy: a process that draws report figures imports ``sampler_bench.report.plots`` and must not pay
    # for the tables' imports (torch) that ``build`` brings in.
    if name in __all__:
        from . import build

        return getattr(build, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
