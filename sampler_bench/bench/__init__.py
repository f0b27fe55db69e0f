"""Sweeps: TOML specs, the resumable runner, the SQLite results store and the regression check.

    from sampler_bench.bench import load_spec, run_sweep, ResultsStore
    summary = run_sweep(load_spec("quickstart"), "out/")      # resumes if out/results.sqlite exists
    ResultsStore("out/results.sqlite").joined()                # every number with its provenance
"""

from .spec import Spec, SpecError, builtin_specs, load_spec, parse_spec

__all__ = ["Spec", "SpecError", "builtin_specs", "load_spec", "parse_spec", "ResultsStore", "StoreError", "run_sweep"]


def run_sweep(spec, out_dir, **kwargs):
    """See :func:`sampler_bench.bench.runner.run_sweep` (imported lazily: it pulls in the metrics)."""
    from .runner import run_sweep as _run

    return _run(spec, out_dir, **kwargs)


def __getattr__(name: str):
    # the store pulls in pandas and torch: imported on first use, so that reading a spec stays light
    if name in ("ResultsStore", "StoreError"):
        from . import store

        return getattr(store, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
