"""Measure the quality numbers of the Yukawa digits checkpoint quoted in checkpoints/README.md (and draw its picture).

    PYTHONPATH=. python checkpoints/digits-yukawa.measure.py [--n 2000] [--seeds 0 1 2] [--nfe 20 50] [--picture]
        [--options '{"order": 1}' '{"order": 2}' '{"order": 2, "weighted": false}'] [--proposal nig|poisson]

Fréchet distance in the "digits-classifier" feature space between the generated digits and the 299 held-out
digits, for yukawa_smc (GenPhys, Liu et al., arXiv 2304.02637: weighted particles on the Yukawa flow; Euler
and Heun in z) and for the plain ODE without the birth/death weights (weighted = false), on karras grids in z
from z_max = 80 to z_min = 0.002 plus the final denoising step, which the NFE counts. One population per batch
of 500. The resampling events and the smallest effective-sample-size fraction are printed too. The baselines
(Gaussian fit, training digits) are those ``measure_quality.py`` measures against the same reference. Samples
use the per-sample seeds seed * 10^6 + i, as ``measure_quality.py`` does.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

import sampler_bench as sb  # noqa: E402
from measure_quality import fd, picture  # noqa: E402  (same FD and picture as the other checkpoints)
from sampler_bench.data import load_dataset  # noqa: E402
from sampler_bench.metrics import features  # noqa: E402
from sampler_bench.solvers.driver import CountingDenoiser, run_solver  # noqa: E402
from sampler_bench.solvers.noise import generators_for  # noqa: E402

NAME = "digits-yukawa"


def generate(model, nfe: int, n: int, seed: int, batch: int = 500, **options) -> tuple[torch.Tensor, list[dict]]:
    """n digits from yukawa_smc at ``nfe`` (karras in z, rho = 7), and each batch's resampling record."""
    plan = sb.solvers.plan("yukawa_smc", nfe, schedule="karras", sigma_min=model.sigma_min,
                           sigma_max=model.sigma_max, **options)
    out, notes = [], []
    for start in range(0, n, batch):
        gens = generators_for([seed * 10**6 + i for i in range(start, min(n, start + batch))])
        counter = CountingDenoiser(model)
        x = model.prior(len(gens), generator=gens)
        out.append(run_solver("yukawa_smc", counter, x, plan.sigmas, generator=gens, options=plan.options))
        assert counter.nfe == plan.nfe
        notes.append(counter.notes.get("resampling"))  # None for the plain ODE (weighted = false)
    return torch.cat(out), notes


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--nfe", type=int, nargs="+", default=[20, 50])
    ap.add_argument("--checkpoint", default=str(HERE / NAME))
    ap.add_argument("--picture", action="store_true")
    ap.add_argument("--options", nargs="+", default=['{"order": 1}', '{"order": 2}', '{"order": 2, "weighted": false}'],
                    help="yukawa_smc options to measure, one JSON object each")
    ap.add_argument("--proposal", choices=("nig", "poisson"), default=None,
                    help="draw the starting states from this proposal (default: the checkpoint's process, 'nig')")
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    digits = load_dataset("digits")
    ex = features.get("digits-classifier")
    test_f, train_f = ex(digits.test()), ex(digits.train())
    model = sb.load_model(args.checkpoint)
    if args.proposal is not None:  # a sampling choice, not a weight: the checkpoint's identity is unchanged
        model.process_def.proposal = args.proposal
    results = {"checkpoint": str(args.checkpoint), "n": args.n, "seeds": args.seeds,
               "proposal": model.process_def.proposal}
    for options in (json.loads(o) for o in args.options):
        for nfe in args.nfe:
            vals, first, events, ess = [], None, [], []
            for seed in args.seeds:
                s, notes = generate(model, nfe, args.n, seed, **options)
                first = s if first is None else first
                vals.append(round(fd(ex(s), test_f), 2))
                if options.get("weighted", True):
                    events.append(sum(b["events"] for b in notes))
                    ess.append(min(b["min_ess_fraction"] for b in notes))
            key = f"yukawa_smc {options} {nfe} NFE"
            results[key] = vals
            results[key + " vs train"] = round(fd(ex(first), train_f), 2)
            results[key + " distinct samples (seed 0)"] = len(torch.unique(first.reshape(len(first), -1), dim=0))
            if options.get("weighted", True):
                results[key + " resampling events / min ESS fraction"] = [events, ess]
            print(json.dumps({k: v for k, v in results.items() if k.startswith(key)}), file=sys.stderr, flush=True)
            if args.picture and options.get("weighted", True) and nfe == max(args.nfe) and not (HERE / f"{NAME}.png").exists():
                picture(first[:64], HERE / f"{NAME}.png", f"{NAME}: yukawa_smc {options} {nfe} NFE")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
