"""What sampler-bench offers, as plain data: the samplers, schedules, metrics, feature extractors,
built-in models and specs that ``sampler-bench list`` prints and a spec may name.

Building it means importing every solver, model and metric module, hence torch (about 3.5 s on a
2-core machine before any work is done). The package therefore ships the catalogue it was built
with (``assets/catalog.json``) together with a fingerprint of the sources it was built from: when the
installed sources still have that fingerprint, the shipped data is exact and ``list`` and the early
spec checks answer without torch; when they do not (a developer's edit, a local patch), the catalogue
is rebuilt from the live registries, so it is never stale. ``python -m sampler_bench.catalog``
rewrites the shipped file; tests/test_catalog.py fails when it is out of date.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from .catalog_file import CATALOG_FILE, FORMAT, package_root, shipped, source_fingerprint  # noqa: F401


def live() -> dict[str, Any]:
    """The catalogue built from the live registries (imports torch and every solver/model/metric)."""
    import sampler_bench as sb

    from .bench.spec import _schedule_param_names, builtin_specs, load_spec
    from .models.builtin import BUILTIN
    from .solvers import optimised, schedules

    samplers = []
    for name in sb.solvers.available():
        meta = sb.solvers.info(name)
        samplers.append({
            "name": name, "order": meta.order, "adaptive": bool(meta.adaptive), "nfe_per_step": meta.nfe_per_step,
            "stochastic": bool(meta.stochastic), "processes": list(meta.processes),
            "options": {k: repr(v.default) for k, v in meta.options.items()},
        })
    out: dict[str, Any] = {
        "format": FORMAT,
        "samplers": samplers,
        "schedules": [{"name": n, "parameters": _schedule_param_names(n)} for n in sorted(schedules.BUILDERS)],
        "optimisers": [{"name": n, "parameters": [f"{k}={v}" for k, v in optimised.get(n).defaults.items() if v is not None], "paper": optimised.get(n).paper,
                        "description": optimised.get(n).description} for n in optimised.available()],
    }
    try:
        import sampler_bench.metrics as M
    except ImportError as e:  # said by `list`, as before
        out["metrics_unavailable"] = str(e)
    else:
        metrics = []
        for name in M.available():
            info = M.info(name)
            lib = getattr(info, "lower_is_better", True)
            metrics.append({"name": name, "values": list(getattr(info, "keys", ()) or ()),
                            "lower_is_better": lib if isinstance(lib, dict) else bool(lib),
                            "needs_reference_endpoints": bool(getattr(info, "needs_reference_endpoints", False)),
                            "description": getattr(info, "description", "")})
        out["metrics"] = metrics
        out["features"] = list(M.features.available())
    models = []
    for name in sorted(BUILTIN):
        m = BUILTIN[name]()
        models.append({"name": name, "shape": list(m.shape), "process": m.process,
                       "sigma_min": float(m.sigma_min), "sigma_max": float(m.sigma_max),
                       "description": getattr(m, "description", "")})
    out["models"] = models
    out["specs"] = [{"name": n, "description": load_spec(n).description} for n in builtin_specs()]
    return out


@functools.lru_cache(maxsize=1)
def load() -> dict[str, Any]:
    """The catalogue: the shipped one when it matches the installed sources, else the live one."""
    return shipped() or live()


def write(path: Path | None = None) -> Path:
    """Rebuild the catalogue from the live registries and write it with the sources' fingerprint."""
    path = path or package_root() / CATALOG_FILE
    data = {"format": FORMAT, "fingerprint": source_fingerprint(), "catalog": live()}
    path.write_text(json.dumps(data, indent=1) + "\n")
    return path


if __name__ == "__main__":
    print(f"wrote {write()}")
