"""gDDIM's speed-up on blurring diffusion, read from a sweep of benchmarks/digits_bdm.toml.

    python benchmarks/bdm_speedup.py results/digits_bdm [--metric fd --key fd] [--out reports/digits_bdm/speedup.md]

For each gDDIM configuration and budget b, the speed-up over a baseline sampler (Euler-Maruyama, Euler,
Heun) is n / b, where n is the fewest counted NFE at which the baseline is *not significantly worse* than
gDDIM at b: a one-sided paired test on the cells' shared seeds (Poisson-bootstrap replicates of the same
samples, ``sampler_bench.metrics.uncertainty.paired_test``) at 5%. When no budget of the sweep gets the
baseline there, the speed-up is "> (the baseline's largest counted NFE)/b". gDDIM's value at b is printed with
its 95% interval.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from sampler_bench.bench.store import ResultsStore
from sampler_bench.metrics.uncertainty import paired_test

BASELINES = ("bdm_euler_maruyama", "bdm_euler", "bdm_heun")


def _label(solver: str, options: str) -> str:
    opts = json.loads(options or "{}")
    return f"gddim_bdm (order {opts.get('order', 1)})" if solver == "gddim_bdm" else solver


def speedup_lines(j: pd.DataFrame, reps: dict, metric: str = "fd", key: str = "fd") -> list[str]:
    """The Markdown table rows: ``j`` is ``ResultsStore.joined()`` restricted to finished cells of one metric
    key (with a ``label`` column), ``reps`` is ``ResultsStore.replicates()``."""
    lines = ["| gDDIM configuration | NFE | FD (95% interval) | " + " | ".join(f"speed-up vs {b}" for b in BASELINES) + " |",
             "|---|---|---|" + "---|" * len(BASELINES)]
    for label in sorted(x for x in j["label"].unique() if x.startswith("gddim")):
        for _, g in j[j["label"] == label].sort_values("nfe_counted").iterrows():
            g_reps = reps.get((g["cell_id"], metric, key))
            cells = [label, str(int(g["nfe_counted"])), f"{g['corrected']:.3g} [{g['ci_low']:.3g}, {g['ci_high']:.3g}]"]
            for base in BASELINES:
                runs = j[j["solver"] == base].sort_values("nfe_counted")
                if runs.empty:
                    cells.append("not swept")
                    continue
                found = None
                for _, b in runs.iterrows():
                    b_reps = reps.get((b["cell_id"], metric, key))
                    test = paired_test(b["corrected"], b_reps, g["corrected"], g_reps)
                    # one-sided: the baseline is significantly worse when its FD is larger with p/2 < 5%
                    worse = test.difference > 0 and test.p_value / 2 < 0.05
                    if not worse:
                        found = int(b["nfe_counted"])
                        break
                n = int(g["nfe_counted"])
                # not reached: the speed-up exceeds the baseline's own largest budget over b (not the sweep's:
                # a budget swept for gDDIM only says nothing about the baseline)
                largest = int(runs["nfe_counted"].max())
                cells.append(f"{found / n:.2g}x ({found} NFE)" if found is not None else f"> {largest / n:.2g}x")
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("results", help="a sweep output directory or its results.sqlite")
    ap.add_argument("--metric", default="fd")
    ap.add_argument("--key", default="fd")
    ap.add_argument("--out", default=None, help="write the Markdown table here too")
    args = ap.parse_args()
    path = Path(args.results)
    path = path / "results.sqlite" if path.is_dir() else path
    with ResultsStore(path, create=False) as store:
        j = store.joined()
        reps = store.replicates()
    j = j[(j["metric"] == args.metric) & (j["key"] == args.key) & (j["status"] == "ok")].copy()
    j["label"] = [_label(s, o) for s, o in zip(j["solver"], j["requested_options"])]
    lines = speedup_lines(j, reps, args.metric, args.key)
    head = (f"# gDDIM's speed-up on {path.parent.name}\n\n"
            f"Written by `python benchmarks/bdm_speedup.py {args.results} --out ...`. Speed-up n/b: n is the fewest "
            "counted NFE at which the baseline is not significantly worse than gDDIM at b (one-sided paired test on "
            "shared seeds, Poisson-bootstrap replicates, 5%); '> N/b' when no budget of the baseline (the largest: N) "
            "gets there; 'not swept': the sweep has no cell of that baseline; below 1 "
            "the baseline needs fewer NFE. FD: bias-corrected value with its 95% interval.\n\n")
    text = head + "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
