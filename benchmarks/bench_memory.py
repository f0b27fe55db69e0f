"""Peak memory of one sweep cell at two sample counts: streaming means it does not grow with n.

Each measurement is a fresh Python process that runs one cell (``run_sweep`` on a one-cell spec,
into an empty directory) and reports its peak resident set size (``resource.getrusage``
``ru_maxrss``): once after preparation (imports, model, metrics and their reference statistics), and
at the end (after the cell: sampling, metric updates, store write). Samples flow batch by batch into
float64 accumulators, so the peak should be the same at 10k and 50k samples within noise.

``--endpoint`` adds the endpoint error, so the cell also integrates (or reads) the reference endpoints
(``sampler_bench.bench.reference_cache``): the table then says how many reference chunks were
integrated and how many, and how many bytes, the cache still holds in memory after the cell (at most
its ``max_chunks`` with a cache directory, whatever n).

    python benchmarks/bench_memory.py --quick               # CI: 1k and 5k samples
    python benchmarks/bench_memory.py                       # 10k and 50k samples (the issue's figure)
    python benchmarks/bench_memory.py --quick --endpoint    # + endpoint error: 500-sample chunks, tolerances 1e-5
    python benchmarks/bench_memory.py --endpoint            # + endpoint error, 1024-sample chunks, tolerances 1e-10
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
{reference}
"""


def child(n: int, args) -> None:
    """Run the one-cell sweep in this process and print the peak RSS (KiB) before and after it."""
    from sampler_bench.bench.runner import Sweep
    from sampler_bench.bench.spec import parse_spec

    metrics = "\n".join(f'[[metric]]\nname = "{m}"' for m in args.metrics.split(",") if m)
    # The reference tolerances change the integration's time, not what the cache holds.
    reference = f"[reference]\nrtol = {args.reference_tol}\natol = {args.reference_tol}" if args.reference_tol else ""
    spec = parse_spec(SPEC.format(n=n, batch=args.batch, nfe=args.nfe, model=args.model, solver=args.solver,
                                  metrics=metrics, reference=reference))
    with tempfile.TemporaryDirectory() as out:
        sweep = Sweep(spec, out, reference_chunk=args.reference_chunk or None)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t0 = time.perf_counter()
        summary = sweep.run()
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        refs = sweep.references
        held = {"reference_integrated": refs.computed, "reference_held": refs.held_chunks,
                "reference_held_kib": refs.held_bytes / 1024}
    if summary.ok != 1:
        raise SystemExit(f"the cell did not finish ok: {summary.problems}")
    print(json.dumps({"n": n, "peak_before_kib": before, "peak_after_kib": after, "cell_s": wall, **held}))


def measure(n: int, args) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(n), "--batch", str(args.batch), "--nfe", str(args.nfe),
           "--model", args.model, "--solver", args.solver, "--metrics", args.metrics,
           "--reference-chunk", str(args.reference_chunk), "--reference-tol", str(args.reference_tol)]
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
    p.add_argument("--endpoint", action="store_true",
                   help="add the endpoint error: the cell integrates reference endpoints through the reference cache")
    p.add_argument("--reference-chunk", type=int, default=0,
                   help="samples per reference chunk (default: the cache's 1024; 500 with --quick)")
    p.add_argument("--reference-tol", type=float, default=0.0,
                   help="reference rtol = atol (default: the solver's 1e-10; 1e-5 with --quick)")
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
        if args.endpoint:  # 10 chunks at 5k samples (more than the cache keeps); loose tolerances keep it fast
            args.reference_chunk = args.reference_chunk or 500
            args.reference_tol = args.reference_tol or 1e-5
    if args.endpoint and "endpoint_error" not in args.metrics.split(","):
        args.metrics += ",endpoint_error"
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = []
    for n in sizes:
        runs = [measure(n, args) for _ in range(args.repeats)]
        rows.append({"n": n, "peak_before_mib": min(r["peak_before_kib"] for r in runs) / 1024,
                     "peak_after_mib": min(r["peak_after_kib"] for r in runs) / 1024,
                     "cell_s": min(r["cell_s"] for r in runs),
                     **{k: runs[0][k] for k in ("reference_integrated", "reference_held", "reference_held_kib")}})
    base = rows[0]["peak_after_mib"]
    lines = header("Memory: peak RSS of one sweep cell", "cpu") + [
        f"- cell: {args.model}, {args.solver} at NFE {args.nfe}, batch {args.batch}, metrics {args.metrics}; "
        "one fresh process per size"
        + (f"; reference chunks of {args.reference_chunk or 'the default'} samples, "
           f"tolerances {args.reference_tol or 'default'}" if args.endpoint else ""),
        "",
        "| samples | peak RSS after preparation (MiB) | peak RSS after the cell (MiB) | cell growth (MiB) | vs first size "
        "| cell time (s) |" + (" reference chunks integrated | held in memory after the cell (chunks, KiB) |" if args.endpoint else ""),
        "|---:|---:|---:|---:|---:|---:|" + ("---:|---:|" if args.endpoint else ""),
    ]
    for r in rows:
        lines.append(f"| {r['n']} | {r['peak_before_mib']:.1f} | {r['peak_after_mib']:.1f} | "
                     f"{r['peak_after_mib'] - r['peak_before_mib']:.1f} | {r['peak_after_mib'] - base:+.1f} | {r['cell_s']:.1f} |"
                     + (f" {r['reference_integrated']} | {r['reference_held']}, {r['reference_held_kib']:.1f} |"
                        if args.endpoint else ""))
    print("\n".join(lines))
    print("\n" + json.dumps(rows))
    return rows


if __name__ == "__main__":
    main()
