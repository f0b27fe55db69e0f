"""The regression check: compare a results store with a baseline file, metric by metric.

Baseline format (JSON, written by ``sampler-bench check DB --write-baseline FILE``, editable by hand)::

    {
      "format": "sampler-bench-baseline", "version": 2,
      "tolerances": {
        "default":       {"rel": 0.05, "abs": 0.0, "direction": "worse"},
        "endpoint_rmse": {"rel": 0.02, "abs": 1e-6},
        "gmm_tv":        {"abs": 0.01, "direction": "both"}
      },
      "cells": [
        {"model": "gmm2d", "solver": "heun", "options": {}, "schedule": "karras", "schedule_params": {},
         "sigma_min": 0.002, "sigma_max": 80.0, "ends_at_zero": true, "nfe_budget": 9,
         "n_samples": 1000, "seed": 0, "precision": "float64", "model_hash": "…",
         "values": [{"metric": "endpoint_error", "key": "endpoint_rmse", "value": 0.0123,
                     "lower_is_better": true, "ci_low": 0.0119, "ci_high": 0.0127, "corrected": 0.0123,
                     "replicates": [0.0122, 0.0125, ...]}]}
      ]
    }

Tolerances are looked up by value key (``endpoint_rmse``), then by metric name (``endpoint_error``),
then ``default``; each field missing from a specific entry falls back to ``default``. A value may move
by ``allowed = max(abs, rel * |baseline|)``. With ``direction = "worse"`` only a move in the bad
direction (up when lower is better) beyond ``allowed`` is a regression; with ``"both"`` any move
beyond ``allowed`` is. A baseline cell that is missing from the store, or not 'ok' in it, or a value
that is missing or not finite, is a failure.

Statistical judgement (baseline version 2): each value also stores its 95% interval (``ci_low``,
``ci_high``), the bias-corrected value it is centred on (``corrected``) and its Poisson-bootstrap
replicate values (``replicates``, :mod:`sampler_bench.metrics.uncertainty`). When both the baseline
and the store have them, a value *regressed* when it is **significantly worse** than the baseline's:
a one-sided test of the difference of the corrected values, *paired* replicate by replicate when the
seeds match (replicate r of both reweights the same samples, so the noise they share cancels),
otherwise from the two standard errors; the p-values of all compared values are Holm-corrected at
``alpha`` (default 0.05), so seed-to-seed noise across many values does not fail the check. The
tolerance then only sets the smallest move that matters (default 0; a move below 1e-9 relative is
round-off and never significant). Values without intervals (version-1 baselines, old stores) keep
the tolerance rule above.

Cells are matched by what defines them for a user (model name, sampler, options, schedule and its
parameters, sigma range, ending, budget, sample count, seed, precision), not by ``cell_id``, so a
baseline survives adding a metric to the spec.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from .store import ResultsStore

BASELINE_FORMAT = "sampler-bench-baseline"
BASELINE_VERSION = 2
#: baseline versions this code reads (1: values without intervals)
READABLE_BASELINE_VERSIONS = (1, 2)
#: family-wise error rate of the statistical check (Holm over every compared value)
ALPHA = 0.05
#: relative moves below this are floating-point round-off, never a regression
ROUND_OFF = 1e-9
MATCH_FIELDS = (
    "model", "solver", "options", "schedule", "schedule_params", "sigma_min", "sigma_max", "ends_at_zero",
    "nfe_budget", "n_samples", "seed", "precision",
)
TOLERANCE_FIELDS = ("rel", "abs", "direction")
DIRECTIONS = ("worse", "both")
DEFAULT_TOLERANCE = {"rel": 0.05, "abs": 0.0, "direction": "worse"}


class BaselineError(ValueError):
    """A baseline file that cannot be read; the message says what to fix."""


def _canonical(value: Any) -> str:
    if isinstance(value, str):
        value = json.loads(value) if value else {}
    return json.dumps(value, sort_keys=True)


def match_key(row: Mapping[str, Any]) -> tuple:
    """The identity of a cell for the check (JSON fields canonicalised, numbers normalised)."""
    out = []
    for f in MATCH_FIELDS:
        v = row[f]
        if f in ("options", "schedule_params"):
            v = _canonical(v)
        elif f in ("sigma_min", "sigma_max"):
            v = float(v)
        elif f == "ends_at_zero":
            v = bool(v)
        elif f in ("nfe_budget", "n_samples", "seed"):
            v = int(v)
        out.append(v)
    return tuple(out)


def describe(row: Mapping[str, Any]) -> str:
    """A short human label of a cell: 'gmm2d heun {opts} karras NFE 10'."""
    opts = _canonical(row["options"])
    opts = "" if opts == "{}" else " " + opts
    return f"{row['model']} {row['solver']}{opts} {row['schedule']} NFE {int(row['nfe_budget'])}"


# ---------------------------------------------------------------------------------------------


def _check_tolerance(name: str, t: Any) -> dict:
    if not isinstance(t, Mapping):
        raise BaselineError(f"tolerance {name!r} must be an object like {{\"rel\": 0.05, \"abs\": 0.001}}")
    for k, v in t.items():
        if k not in TOLERANCE_FIELDS:
            from ..solvers.registry import closest

            raise BaselineError(f"tolerance {name!r}: unknown field {k!r}{closest(k, TOLERANCE_FIELDS)}; "
                                f"fields: {', '.join(TOLERANCE_FIELDS)}")
        if k == "direction":
            if v not in DIRECTIONS:
                raise BaselineError(f"tolerance {name!r}: direction must be one of {', '.join(DIRECTIONS)}, got {v!r}")
        elif isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise BaselineError(f"tolerance {name!r}: {k} must be a number >= 0, got {v!r}")
    return dict(t)


#: The type each field of a baseline cell must have (JSON: numbers, strings, booleans, objects).
CELL_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "model": (str,), "solver": (str,), "options": (dict,), "schedule": (str,), "schedule_params": (dict,),
    "sigma_min": (int, float), "sigma_max": (int, float), "ends_at_zero": (bool,), "nfe_budget": (int,),
    "n_samples": (int,), "seed": (int,), "precision": (str,),
}
_TYPE_NAMES = {str: "a string", dict: "an object", bool: "true or false", int: "an integer", float: "a number"}
#: Largest baseline file read (a baseline is JSON text of a few MB at most).
MAX_BASELINE_BYTES = 256 << 20


def _is(value: Any, types: tuple[type, ...]) -> bool:
    if bool not in types and isinstance(value, bool):
        return False  # JSON true is not the number 1
    return isinstance(value, types)


def _finite_number(value: Any) -> bool:
    return _is(value, (int, float)) and math.isfinite(value)


def _refuse_constant(name: str):
    raise BaselineError(f"{name} is not a number a baseline may hold; every baseline value must be finite")


def _check_cell(i: int, c: Any) -> None:
    where = f"baseline cell #{i + 1}"
    if not isinstance(c, dict):
        raise BaselineError(f"{where} must be an object with {', '.join(MATCH_FIELDS)} and values, got {c!r:.60}")
    missing = [f for f in MATCH_FIELDS + ("values",) if f not in c]
    if missing:
        raise BaselineError(f"{where} lacks {', '.join(missing)}")
    for f, types in CELL_FIELD_TYPES.items():
        if not _is(c[f], types) or (float in types and not math.isfinite(c[f])):
            raise BaselineError(f"{where}: {f} must be {_TYPE_NAMES[types[-1]]}"
                                f"{' (finite)' if float in types else ''}, got {c[f]!r:.60}")
    where = f"{where} ({describe(c)})"
    values = c["values"]
    if not isinstance(values, list) or not values:
        raise BaselineError(f"{where}: values must be a non-empty list of {{metric, key, value}} objects, got {values!r:.60}")
    for v in values:
        if not isinstance(v, dict) or not {"metric", "key", "value"} <= set(v):
            raise BaselineError(f"{where}: each value needs metric, key and value, got {v!r:.80}")
        if not isinstance(v["metric"], str) or not isinstance(v["key"], str):
            raise BaselineError(f"{where}: metric and key must be strings, got {v['metric']!r} and {v['key']!r}")
        if not _finite_number(v["value"]):
            raise BaselineError(f"{where}: {v['metric']}/{v['key']} has value {v['value']!r}; a baseline value must be "
                                "a finite number")
        for f in ("ci_low", "ci_high", "corrected"):
            if f in v and not _finite_number(v[f]):
                raise BaselineError(f"{where}: {v['metric']}/{v['key']} {f} must be a finite number, got {v[f]!r:.40}")
        if "ci_low" in v and "ci_high" in v and v["ci_low"] > v["ci_high"]:
            raise BaselineError(f"{where}: {v['metric']}/{v['key']} has ci_low > ci_high")
        if "replicates" in v and (not isinstance(v["replicates"], list)
                                  or not all(_finite_number(r) for r in v["replicates"])):
            raise BaselineError(f"{where}: {v['metric']}/{v['key']} replicates must be a list of finite numbers")
        if "lower_is_better" in v and not isinstance(v["lower_is_better"], bool):
            raise BaselineError(f"{where}: {v['metric']}/{v['key']} lower_is_better must be true or false (JSON), "
                                f"got {v['lower_is_better']!r}")


def load_baseline(path: str | Path) -> dict:
    """Read and validate a baseline file: every field typed, every value finite, at least one value."""
    p = Path(path)
    if not p.is_file():
        raise BaselineError(f"baseline {str(p)!r} does not exist (create one with --write-baseline)")
    try:
        with open(p, "rb") as f:
            data = f.read(MAX_BASELINE_BYTES + 1)
    except OSError as e:
        raise BaselineError(f"baseline {str(p)!r} cannot be read: {e.strerror}") from None
    if len(data) > MAX_BASELINE_BYTES:
        raise BaselineError(f"baseline {str(p)!r} is larger than {MAX_BASELINE_BYTES >> 20} MiB; it is not a baseline")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise BaselineError(f"baseline {str(p)!r} is not UTF-8 JSON text (a binary file?)") from None
    try:
        doc = json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as e:
        raise BaselineError(f"baseline {str(p)!r} is not valid JSON: {e}") from None
    except RecursionError:
        raise BaselineError(f"baseline {str(p)!r} is nested too deeply to be a baseline") from None
    except BaselineError as e:
        raise BaselineError(f"baseline {str(p)!r}: {e}") from None
    if not isinstance(doc, dict) or doc.get("format") != BASELINE_FORMAT:
        raise BaselineError(f"{str(p)!r} is not a sampler-bench baseline (\"format\": \"{BASELINE_FORMAT}\" is missing)")
    if doc.get("version") not in READABLE_BASELINE_VERSIONS:
        raise BaselineError(f"baseline {str(p)!r} has version {doc.get('version')!r}; this sampler-bench reads "
                            f"{', '.join(map(str, READABLE_BASELINE_VERSIONS))}")
    tol = doc.get("tolerances", {})
    if not isinstance(tol, Mapping):
        raise BaselineError("\"tolerances\" must be an object of {name: {rel, abs, direction}}")
    doc["tolerances"] = {name: _check_tolerance(name, t) for name, t in tol.items()}
    cells = doc.get("cells")
    if not isinstance(cells, list):
        raise BaselineError(f"baseline {str(p)!r}: \"cells\" must be a list")
    if not cells:
        raise BaselineError(f"baseline {str(p)!r} holds no cells, so a check would compare nothing; "
                            "write it from a store with finished cells (--write-baseline)")
    try:
        for i, c in enumerate(cells):
            _check_cell(i, c)
    except BaselineError as e:
        raise BaselineError(f"baseline {str(p)!r}: {e}") from None
    return doc


def make_baseline(store: ResultsStore, *, rel: float = DEFAULT_TOLERANCE["rel"], abs: float = DEFAULT_TOLERANCE["abs"],
                  tolerances: Mapping[str, Mapping] | None = None, sweep_id: str | None = None) -> dict:
    """A baseline holding every finite metric value of every 'ok' cell of ``store``."""
    joined = store.joined(sweep_id)
    joined = joined[joined["status"] == "ok"]
    reps = store.replicates() if hasattr(store, "replicates") else {}
    cells = []
    for _, group in joined.groupby("cell_id", sort=False):
        first = group.iloc[0]
        entry = {f: first[f] for f in MATCH_FIELDS}
        entry["options"] = json.loads(first["options"])
        entry["schedule_params"] = json.loads(first["schedule_params"])
        for f in ("nfe_budget", "n_samples", "seed"):
            entry[f] = int(entry[f])
        entry["ends_at_zero"] = bool(entry["ends_at_zero"])
        entry["sigma_min"], entry["sigma_max"] = float(entry["sigma_min"]), float(entry["sigma_max"])
        entry["model_hash"] = first["model_hash"]
        entry["nfe_counted"] = int(first["nfe_counted"])
        entry["values"] = []
        for r in group.itertuples():
            if not math.isfinite(r.value):
                continue
            v = {"metric": r.metric, "key": r.key, "value": float(r.value), "lower_is_better": bool(r.lower_is_better)}
            interval = [getattr(r, c, math.nan) for c in ("ci_low", "ci_high", "corrected")]
            if all(x is not None and math.isfinite(x) for x in interval):
                v.update(ci_low=float(interval[0]), ci_high=float(interval[1]), corrected=float(interval[2]))
                rr = reps.get((r.cell_id, r.metric, r.key))
                if rr is not None and len(rr) and np.isfinite(rr).all():
                    v["replicates"] = [float(x) for x in rr]
            entry["values"].append(v)
        if entry["values"]:  # a cell whose every value is NaN has nothing a check could compare
            cells.append(entry)
    if not cells:
        raise BaselineError("the results store holds no 'ok' cell with a finite metric value, so there is no "
                            "baseline to write; run the sweep first (`sampler-bench show DB --long` lists the cells)")
    tol = {"default": {**DEFAULT_TOLERANCE, "rel": float(rel), "abs": float(abs)}}
    for name, t in (tolerances or {}).items():
        tol[name] = _check_tolerance(name, t)
    return {"format": BASELINE_FORMAT, "version": BASELINE_VERSION, "tolerances": tol, "cells": cells}


def write_baseline(store: ResultsStore, path: str | Path, **kwargs) -> dict:
    doc = make_baseline(store, **kwargs)
    p = Path(path)
    try:
        p.write_text(json.dumps(doc, indent=1, sort_keys=False, allow_nan=False) + "\n")
    except OSError as e:
        raise BaselineError(f"cannot write the baseline {str(p)!r}: {e.strerror}"
                            + (" (its directory does not exist)" if not p.parent.exists() else "")) from None
    return doc


# ---------------------------------------------------------------------------------------------


@dataclass
class Comparison:
    cell: str
    metric: str
    key: str
    baseline: float | None
    current: float | None
    allowed: float
    verdict: str  # 'ok' | 'regressed' | 'improved' | 'changed' | 'missing'
    note: str = ""
    #: one-sided p-value of "worse than the baseline" (statistical judgement; None: tolerance rule)
    p_value: float | None = None
    paired: bool = False

    @property
    def change(self) -> float | None:
        if self.baseline is None or self.current is None:
            return None
        return self.current - self.baseline

    @property
    def relative(self) -> float | None:
        c = self.change
        if c is None or self.baseline == 0:
            return None
        return c / abs(self.baseline)


@dataclass
class CheckResult:
    comparisons: list[Comparison] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def failures(self) -> list[Comparison]:
        return [c for c in self.comparisons if c.verdict in ("regressed", "missing", "changed")]

    @property
    def passed(self) -> bool:
        return not self.failures


def tolerance_for(tolerances: Mapping[str, Mapping], metric: str, key: str) -> dict:
    base = {**DEFAULT_TOLERANCE, **tolerances.get("default", {})}
    specific = tolerances.get(key, tolerances.get(metric, {}))
    return {**base, **specific}


def judge(baseline: float, current: float, lower_is_better: bool, tol: Mapping) -> tuple[str, float]:
    """(verdict, allowed move) of one value against its baseline."""
    allowed = max(float(tol["abs"]), float(tol["rel"]) * abs(baseline))
    if not math.isfinite(current):
        return "regressed", allowed
    delta = current - baseline
    worse = delta > allowed if lower_is_better else -delta > allowed
    better = -delta > allowed if lower_is_better else delta > allowed
    if worse:
        return "regressed", allowed
    if better:
        return ("changed" if tol["direction"] == "both" else "improved"), allowed
    return "ok", allowed


def _standard_error(v: Mapping) -> float:
    reps = v.get("replicates")
    if reps is not None and len(reps) >= 2:
        return float(np.std(np.asarray(reps, dtype=np.float64), ddof=1))
    lo, hi = v.get("ci_low"), v.get("ci_high")
    if lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)):
        return math.nan
    return (hi - lo) / (2 * 1.959963984540054)


def worse_p_value(base: Mapping, current: Mapping, lower_is_better: bool, paired: bool) -> tuple[float, float, bool]:
    """(one-sided p-value of "current is worse than base", standard error of the difference, paired?).

    Paired when asked and both carry replicates of equal length (same seeds: replicate r of both
    reweights the same samples); otherwise the two standard errors add in quadrature."""
    from scipy import stats

    diff = float(current["corrected"]) - float(base["corrected"])
    if not lower_is_better:
        diff = -diff
    a, b = base.get("replicates"), current.get("replicates")
    if paired and a is not None and b is not None and len(a) == len(b) and len(a) >= 2:
        d = np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64)
        se, dof = float(d.std(ddof=1)), len(d) - 1
    else:
        paired = False
        se = math.hypot(_standard_error(base), _standard_error(current))
        n = min(len(a) if a is not None else 0, len(b) if b is not None else 0) or 48
        dof = max(n - 1, 1)
    scale = max(abs(float(base["corrected"])), abs(float(current["corrected"])), 1e-300)
    if abs(diff) <= ROUND_OFF * scale:
        return 1.0, se, paired
    if not math.isfinite(se):
        return math.nan, se, paired
    if se == 0.0:
        return (0.0 if diff > 0 else 1.0), se, paired
    return float(stats.t.sf(diff / se, dof)), se, paired


def _has_interval(v: Mapping) -> bool:
    return all(isinstance(v.get(f), (int, float)) and math.isfinite(v[f]) for f in ("ci_low", "ci_high", "corrected"))


def check(store: ResultsStore, baseline: Mapping, *, any_seed: bool = False, alpha: float = ALPHA) -> CheckResult:
    """Compare every baseline value with the store; see the module docstring for the rules.

    ``any_seed``: match cells whatever their seed (then the comparison is unpaired), e.g. to compare a
    run on other seeds with the baseline."""
    from ..metrics.uncertainty import holm

    cells = store.cells()
    metrics = store.metrics()
    fields = tuple(f for f in MATCH_FIELDS if not (any_seed and f == "seed"))

    def key_of(row):
        k = match_key(row)
        return tuple(v for f, v in zip(MATCH_FIELDS, k) if f in fields)

    latest: dict[tuple, Any] = {}
    for _, row in cells.iterrows():  # later rows win: the most recent computation of a cell
        latest[key_of(row)] = row
    reps = store.replicates() if hasattr(store, "replicates") else {}
    values = {}
    for r in metrics.itertuples():
        values[(r.cell_id, r.metric, r.key)] = {
            "value": r.value, **{c: getattr(r, c, math.nan) for c in ("ci_low", "ci_high", "corrected")},
            "replicates": reps.get((r.cell_id, r.metric, r.key))}
    statistical: list[tuple[Comparison, float, bool]] = []
    if not baseline.get("cells") or not any(c.get("values") for c in baseline["cells"]):
        raise BaselineError("the baseline holds no values, so the check would compare nothing")
    result = CheckResult()
    tol = baseline.get("tolerances", {})
    for entry in baseline["cells"]:
        label = describe(entry)
        row = latest.get(key_of(entry))
        if row is None:
            for v in entry["values"]:
                result.comparisons.append(Comparison(label, v["metric"], v["key"], v["value"], None, 0.0, "missing",
                                                     "cell not in the results store"))
            continue
        if row["status"] != "ok":
            for v in entry["values"]:
                result.comparisons.append(Comparison(label, v["metric"], v["key"], v["value"], None, 0.0, "missing",
                                                     f"cell is {row['status']}: {row['reason']}"))
            continue
        if entry.get("model_hash") and entry["model_hash"] != row["model_hash"]:
            result.notes.append(f"{label}: model hash {row['model_hash']} differs from the baseline's {entry['model_hash']}")
        for v in entry["values"]:
            t = tolerance_for(tol, v["metric"], v["key"])
            cur = values.get((row["cell_id"], v["metric"], v["key"]))
            if cur is None:
                result.comparisons.append(Comparison(label, v["metric"], v["key"], v["value"], None, 0.0, "missing",
                                                     "metric value not in the results store"))
                continue
            current = cur["value"]
            lower = bool(v.get("lower_is_better", True))
            if _has_interval(v) and _has_interval(cur) and math.isfinite(current):
                paired = int(row["seed"]) == int(entry["seed"])
                p, se, paired = worse_p_value(v, cur, lower, paired)
                allowed = max(float(t["abs"]), float(t["rel"]) * abs(float(v["value"])))
                c = Comparison(label, v["metric"], v["key"], float(v["value"]), float(current), allowed, "ok",
                               f"{'paired' if paired else 'unpaired'} test, p(worse) = {p:.3g}", p, paired)
                result.comparisons.append(c)
                statistical.append((c, se, lower))
                continue
            verdict, allowed = judge(float(v["value"]), float(current), lower, t)
            result.comparisons.append(Comparison(label, v["metric"], v["key"], float(v["value"]), float(current),
                                                 allowed, verdict))
    # Holm over every statistically judged value: worse (one-sided), then better (the mirror test)
    worse = holm([c.p_value if c.p_value is not None else math.nan for c, _, _ in statistical], alpha)
    better = holm([1.0 - c.p_value if c.p_value is not None and math.isfinite(c.p_value) else math.nan
                   for c, _, _ in statistical], alpha)
    for (c, se, lower), w, b in zip(statistical, worse, better):
        moved = abs(c.current - c.baseline) > c.allowed
        if w and moved:
            c.verdict = "regressed"
        elif b and moved:
            direction = tolerance_for(tol, c.metric, c.key)["direction"]
            c.verdict = "changed" if direction == "both" else "improved"
    return result


def comparisons_frame(result: CheckResult) -> pd.DataFrame:
    return pd.DataFrame([
        {"cell": c.cell, "metric": c.metric, "key": c.key, "baseline": c.baseline, "current": c.current,
         "change": c.change, "relative": c.relative, "allowed": c.allowed, "verdict": c.verdict, "note": c.note}
        for c in result.comparisons
    ])
