"""Peak memory of one sweep cell at two sample counts: streaming means it does not grow with n.

Each measurement is a fresh Python process that runs one cell (``run_sweep`` on a one-cell spec,
into an empty directory) and reports its peak resident set size (``resource.getrusage``
``ru_maxrss``): once after preparation (imports, model, metrics and their reference statistics), and
at the end (after the cell: sampling, metric updates, store write). Samples flow batch by batch into
float64 accumulators, so the peak should be the same at 10k and 50k samples within noise.

    python benchmarks/bench_memory.py --quick               # CI: 1k and 5k samples
    python benchmarks/bench_memory.py                       # 10k and 50k samples (the issue's figure)
    python benchmarks/bench_memory.py --metrics fd,swd,gmm_nll,endpoint_error   # add the endpoint error
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT, header

SPEC = """
name = "memory"
nfe = [{nfe}]
n_samples = {n}
batch_size = {batch}
seed = 0
[[model]]
builtin = "{model}"
[[sampler]]
name = "{solver}"
{metrics}
"""


def child(n: int, args) -> None:
    """Run the one-cell sweep in this process and print the peak RSS (KiB) before and after it."""
    from sampler_bench.bench.runner import Sweep
    from sampler_bench.bench.spec import parse_spec

    metrics = "\n".join(f'[[metric]]\nname = "{m}"' for m in args.metrics.split(",") if m)
    spec = parse_spec(SPEC.format(n=n, batch=args.batch, nfe=args.nfe, model=args.model, solver=args.solver, metrics=metrics))
    with tempfile.TemporaryDirectory() as out:
        sweep = Sweep(spec, out)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t0 = time.perf_counter()
        summary = sweep.run()
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if summary.ok != 1:
        raise SystemExit(f"the cell did not finish ok: {summary.problems}")
    print(json.dumps({"n": n, "peak_before_kib": before, "peak_after_kib": after, "cell_s": wall}))


def measure(n: int, args) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(n), "--batch", str(args.batch), "--nfe", str(args.nfe),
           "--model", args.model, "--solver", args.solver, "--metrics", args.metrics]
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"child for n={n} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="1k and 5k samples (CI)")
    p.add_argument("--sizes", default="10000,50000", help="sample counts to compare")
    p.add_argument("--batch", type=int, default=1000)
    p.add_argument("--nfe", type=int, default=10)
    p.add_argument("--model", default="gmm16")
    p.add_argument("--solver", default="dpmpp_2m")
    p.add_argument("--metrics", default="fd,swd,gmm_nll", help="comma-separated metric names")
    p.add_argument("--repeats", type=int, default=1, help="processes per size (the peak is a maximum: 1 is usually enough)")
    p.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child is not None:
        child(args.child, args)
        return []
    if args.quick:  # sum-only metrics: below the 10k-row cap of swd/kid a "cat:" state still grows with n
        args.sizes = "1000,5000"
        if args.metrics == p.get_default("metrics"):
            args.metrics = "fd,gmm_nll"
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = []
    for n in sizes:
        runs = [measure(n, args) for _ in range(args.repeats)]
        rows.append({"n": n, "peak_before_mib": min(r["peak_before_kib"] for r in runs) / 1024,
                     "peak_after_mib": min(r["peak_after_kib"] for r in runs) / 1024,
                     "cell_s": min(r["cell_s"] for r in runs)})
    base = rows[0]["peak_after_mib"]
    lines = header("Memory: peak RSS of one sweep cell", "cpu") + [
        f"- cell: {args.model}, {args.solver} at NFE {args.nfe}, batch {args.batch}, metrics {args.metrics}; "
        "one fresh process per size",
        "",
        "| samples | peak RSS after preparation (MiB) | peak RSS after the cell (MiB) | cell growth (MiB) | vs first size | cell time (s) |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['n']} | {r['peak_before_mib']:.1f} | {r['peak_after_mib']:.1f} | "
                     f"{r['peak_after_mib'] - r['peak_before_mib']:.1f} | {r['peak_after_mib'] - base:+.1f} | {r['cell_s']:.1f} |")
    print("\n".join(lines))
    print("\n" + json.dumps(rows))
    return rows


if __name__ == "__main__":
    main()
