"""The global order a deterministic solver shows: slope of log(error) against log(counted NFE).

    python benchmarks/empirical_order.py dpmpp_3m --option lower_order_final=false --budgets 96 192 384
    python benchmarks/empirical_order.py lms --option order=4 --sigma-max 20 --budgets 192 384 768 1536

The error is the RMS distance at ``sigma_min`` to the float64 DOP853 solution (rtol = atol = 1e-11)
from the same starting noise, on the built-in 2-D Gaussian mixture ``gmm2d`` (an exact denoiser),
on a Karras grid (rho = 7) that ends at ``sigma_min > 0``: a grid ending at 0 ends with a denoise,
which hides the order of the last steps. docs/findings.md quotes what these commands print.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

import sampler_bench as sb
from sampler_bench.models import builtin_model
from sampler_bench.solvers.driver import CountingDenoiser, run_solver


def _value(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("solver")
    parser.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                        help="a solver option (JSON value: order=4, lower_order_final=false, variant=\"bh2\")")
    parser.add_argument("--budgets", type=int, nargs="+", default=[48, 96, 192])
    parser.add_argument("--sigma-max", type=float, default=300.0)
    parser.add_argument("--sigma-min", type=float, default=0.05)
    parser.add_argument("--samples", type=int, default=64)
    args = parser.parse_args()
    options = {k: _value(v) for k, v in (o.split("=", 1) for o in args.option)}
    model = builtin_model("gmm2d")
    x = args.sigma_max * torch.randn(args.samples, 2, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    ref = sb.sample("reference", model, x, torch.tensor([args.sigma_max, args.sigma_min], dtype=torch.float64),
                    rtol=1e-11, atol=1e-11)
    nfes, errors = [], []
    for budget in args.budgets:
        plan = sb.solvers.plan(args.solver, budget, sigma_min=args.sigma_min, sigma_max=args.sigma_max,
                               ends_at_zero=False, **options)
        counter = CountingDenoiser(model)
        out = run_solver(args.solver, counter, x, plan.sigmas, options=plan.options)
        nfes.append(counter.nfe)
        errors.append((out - ref).pow(2).mean().sqrt().item())
        print(f"NFE {counter.nfe:5d}  error {errors[-1]:.3e}")
    slope = -np.polyfit(np.log(nfes), np.log(errors), 1)[0]
    declared = sb.solvers.info(args.solver)
    print(f"{args.solver} {options}: fitted order {slope:.2f} (declared {declared.order_for(declared.validate(options))})")


if __name__ == "__main__":
    main()
