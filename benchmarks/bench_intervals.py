"""What intervals cost: the quickstart sweep with and without the uncertainty machinery, side by side.

The promise (issue 11): intervals, bias correction, paired replicates and the noise floor add at
most 10% to a quickstart sweep. Both runs are in this one process, into fresh directories, in
alternating order (``--repeats`` pairs), so they share caches and machine load:

* **off**: every accumulator keeps no replicate sums (``Accumulator.replicates = 0``: the same code
  path, NaN intervals) and no noise floor is computed;
* **on**: the defaults (Poisson-bootstrap replicates, bias-corrected estimates, the noise floor).

Reported (JSON): the sweep wall time of each run, the median ratio on/off, and the load average.

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


def sweep_seconds(spec, intervals: bool) -> float:
    from sampler_bench.bench import runner
    from sampler_bench.metrics import base

    saved_reps, saved_floor = base.Accumulator.replicates, runner.Sweep.store_floors
    try:
        if not intervals:
            base.Accumulator.replicates = 0
            runner.Sweep.store_floors = lambda self, store: None
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            runner.run_sweep(spec, tmp)
            return time.perf_counter() - t0
    finally:
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
    for k in range(args.repeats):
        for flag in ((True, False) if k % 2 == 0 else (False, True)):
            (on if flag else off).append(sweep_seconds(spec, flag))
    ratio = statistics.median(a / b for a, b in zip(on, off))
    out = {"spec": "quickstart" + (" --quick" if args.quick else ""), "on_s": on, "off_s": off,
           "ratio_on_over_off": ratio, "extra_percent": 100 * (ratio - 1), "load_average": os.getloadavg()[0]}
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
