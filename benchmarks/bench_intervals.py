"""What intervals cost: the quickstart sweep with and without the uncertainty machinery, side by side.

The promise (issue 11): intervals, bias correction, paired replicates and the noise floor add at
most 10% to a quickstart sweep. Both runs are in this one process, into fresh directories, in
alternating order (``--repeats`` pairs), so they share caches and machine load:

* **off**: every accumulator keeps no replicate sums (``Accumulator.replicates = 0``: the same code
  path, NaN intervals) and no noise floor is computed;
* **on**: the defaults (Poisson-bootstrap replicates, bias-corrected estimates, the noise floor).

Reported (JSON): the wall and CPU time of each run and the median ratios on/off; and, because on a
loaded machine the on/off difference drowns in the load's noise, the CPU time spent *inside* the code
that exists for intervals alone (replicate sums, estimates, Poisson weights, the floor; timed in the
"on" runs) relative to the rest of the sweep, the load average before and after every run.

    python benchmarks/bench_intervals.py              # the built-in quickstart spec, 1 pair
    python benchmarks/bench_intervals.py --quick      # gmm2d only, 3 budgets (a CI-sized check)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


#: the code that exists for intervals alone, timed inside the "on" runs (CPU time of the process; an
#: upper bound: the sum helpers also add the plain sums, a small part of their time)
INTERVAL_CODE = ("metrics.base:Accumulator._add", "metrics.base:Accumulator._add_outer",
                 "metrics.base:Accumulator.estimates", "metrics.uncertainty:batch_weights",
                 "bench.runner:Sweep.store_floors")


def _timed(owner, name: str, spent: list, depth: list):
    original = getattr(owner, name)

    def wrapper(*args, **kwargs):
        if depth[0]:  # nested (the floor's estimates and sums): counted once, by the outermost call
            return original(*args, **kwargs)
        depth[0] += 1
        t0 = time.process_time()
        try:
            return original(*args, **kwargs)
        finally:
            spent[0] += time.process_time() - t0
            depth[0] -= 1

    setattr(owner, name, wrapper)
    return original


def sweep_seconds(spec, intervals: bool) -> tuple[float, float, float]:
    """(wall s, CPU s of this process, CPU s inside :data:`INTERVAL_CODE`) of one fresh sweep."""
    import importlib

    from sampler_bench.bench import runner
    from sampler_bench.metrics import base

    saved_reps, saved_floor = base.Accumulator.replicates, runner.Sweep.store_floors
    spent, depth, restore = [0.0], [0], []
    try:
        if not intervals:
            base.Accumulator.replicates = 0
            runner.Sweep.store_floors = lambda self, store: None
        else:
            for target in INTERVAL_CODE:
                module, attr = target.split(":")
                mod = importlib.import_module("sampler_bench." + module)
                owner, name = (getattr(mod, attr.split(".")[0]), attr.split(".")[1]) if "." in attr else (mod, attr)
                restore.append((owner, name, _timed(owner, name, spent, depth)))
        with tempfile.TemporaryDirectory() as tmp:
            t0, c0 = time.perf_counter(), time.process_time()
            runner.run_sweep(spec, tmp)
            return time.perf_counter() - t0, time.process_time() - c0, spent[0]
    finally:
        for owner, name, original in restore:
            setattr(owner, name, original)
        base.Accumulator.replicates, runner.Sweep.store_floors = saved_reps, saved_floor


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="gmm2d only, NFE 4, 10, 30")
    ap.add_argument("--repeats", type=int, default=1, help="pairs of runs (alternating order)")
    args = ap.parse_args(argv)
    from sampler_bench.bench.spec import load_spec

    spec = load_spec(ROOT / "sampler_bench" / "specs" / "quickstart.toml")
    if args.quick:
        spec = dataclasses.replace(spec, models=spec.models[:1], nfe=[4, 10, 30])
    sweep_seconds(spec, True)  # warm-up: imports, reference endpoints of the metric caches are per directory
    on, off = [], []
    load = [os.getloadavg()[0]]
    for k in range(args.repeats):
        for flag in ((True, False) if k % 2 == 0 else (False, True)):
            (on if flag else off).append(sweep_seconds(spec, flag))
            load.append(os.getloadavg()[0])
    wall = statistics.median(a[0] / b[0] for a, b in zip(on, off))
    cpu = statistics.median(a[1] / b[1] for a, b in zip(on, off))
    inside = statistics.median(a[2] / (a[1] - a[2]) for a in on)
    out = {"spec": "quickstart" + (" --quick" if args.quick else ""), "threads": __import__("torch").get_num_threads(),
           "on_wall_s": [a[0] for a in on], "off_wall_s": [b[0] for b in off],
           "on_cpu_s": [a[1] for a in on], "off_cpu_s": [b[1] for b in off],
           "on_cpu_in_interval_code_s": [a[2] for a in on],
           "ratio_wall_on_over_off": wall, "ratio_cpu_on_over_off": cpu,
           "interval_code_percent_of_the_rest": 100 * inside,
           "load_average_1min": load}
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
