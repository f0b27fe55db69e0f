"""Measure the quality numbers of the CLD digits checkpoint quoted in checkpoints/README.md (and draw its picture).

    PYTHONPATH=. python checkpoints/digits-cld.measure.py [--n 2000] [--seeds 0 1 2] [--nfe 20 50] [--picture]

Fréchet distance in the "digits-classifier" feature space between the generated digits u[:, 0] and the
299 held-out digits, for gDDIM (Zhang et al., arXiv 2206.05564: order 3, R_t, gDDIM's quadratic time grid
from T = 1 to t_eps = 1e-3 plus the final denoising step, which the NFE counts) and for Euler-Maruyama on
the reverse SDE at the same NFE. The baselines (Gaussian fit of the training digits, training digits
themselves) are the ones ``measure_quality.py`` measures against the same reference. Samples use the
per-sample seeds seed * 10^6 + i, as ``measure_quality.py`` does.
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
from sampler_bench.solvers.noise import generators_for  # noqa: E402

NAME = "digits-cld"


def generate(model, solver: str, nfe: int, n: int, seed: int, batch: int = 500, **options) -> torch.Tensor:
    """n digits (u[:, 0]) from ``solver`` at ``nfe`` on gDDIM's quadratic grid (karras, rho = 2, in t)."""
    plan = sb.solvers.plan(solver, nfe, schedule="karras", sigma_min=model.sigma_min, sigma_max=model.sigma_max,
                           schedule_params={"rho": 2.0}, **options)
    out = []
    for start in range(0, n, batch):
        gens = generators_for([seed * 10**6 + i for i in range(start, min(n, start + batch))])
        u = model.prior(len(gens), generator=gens)
        out.append(model.data_from_state(sb.sample(solver, model, u, plan.sigmas, generator=gens, **plan.options)))
    return torch.cat(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--nfe", type=int, nargs="+", default=[20, 50])
    ap.add_argument("--checkpoint", default=str(HERE / NAME))
    ap.add_argument("--picture", action="store_true")
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    digits = load_dataset("digits")
    ex = features.get("digits-classifier")
    test_f, train_f = ex(digits.test()), ex(digits.train())
    model = sb.load_model(args.checkpoint)
    results = {"checkpoint": str(args.checkpoint), "n": args.n, "seeds": args.seeds}
    for solver, options in (("gddim", {"order": 3}), ("cld_euler_maruyama", {})):
        for nfe in args.nfe:
            vals, first = [], None
            for seed in args.seeds:
                s = generate(model, solver, nfe, args.n, seed, **options)
                first = s if first is None else first
                vals.append(round(fd(ex(s), test_f), 2))
            results[f"{solver} {nfe} NFE"] = vals
            results[f"{solver} {nfe} NFE vs train"] = round(fd(ex(first), train_f), 2)
            if args.picture and solver == "gddim" and nfe == max(args.nfe):
                picture(first[:64], HERE / f"{NAME}.png", f"{NAME}: gDDIM (order 3) {nfe} NFE")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
