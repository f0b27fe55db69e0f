"""Measure the quality numbers of the BDM digits checkpoint quoted in checkpoints/README.md (and draw its picture).

    PYTHONPATH=. python checkpoints/digits-bdm.measure.py [--n 2000] [--seeds 0 1 2] [--nfe 10 20 50] [--picture]
        [--samplers gddim2 gddim1 em]
    PYTHONPATH=. python checkpoints/digits-bdm.measure.py --picture-from results/digits_bdm [--nfe 50]

Fréchet distance in the "digits-classifier" feature space between the generated digits and the 299
held-out digits, for gDDIM on blurring diffusion (Zhang et al., arXiv 2206.05564; order 1 = DDIM per DCT
coefficient, gDDIM's own BDM sampler, and the 2-point multistep) and for Euler-Maruyama on the reverse SDE,
at the same NFE on gDDIM's quadratic time grid from t_start (sigma/alpha = 80) to t_eps = 1e-3 plus the
final denoising step, which the NFE counts. The baselines (Gaussian fit of the training digits, training
digits themselves) are those ``measure_quality.py`` measures against the same reference. Samples use the
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

NAME = "digits-bdm"
#: the samplers this script can measure, by the short name --samplers takes
SAMPLERS = {"gddim1": ("gddim_bdm", {"order": 1}), "gddim2": ("gddim_bdm", {"order": 2}),
            "em": ("bdm_euler_maruyama", {})}


def generate(model, solver: str, nfe: int, n: int, seed: int, batch: int = 500, **options) -> torch.Tensor:
    """n digits from ``solver`` at ``nfe`` on gDDIM's quadratic grid (karras, rho = 2, in t)."""
    plan = sb.solvers.plan(solver, nfe, schedule="karras", sigma_min=model.sigma_min, sigma_max=model.sigma_max,
                           schedule_params={"rho": 2.0}, **options)
    out = []
    for start in range(0, n, batch):
        gens = generators_for([seed * 10**6 + i for i in range(start, min(n, start + batch))])
        u = model.prior(len(gens), generator=gens)
        out.append(model.data_from_state(sb.sample(solver, model, u, plan.sigmas, generator=gens, **plan.options)))
    return torch.cat(out)


def picture_from_sweep(sweep: Path, nfe: int) -> None:
    """The picture from the first 64 samples a sweep kept (same seeds 0..63 as the sweep's cells)."""
    from sampler_bench.bench.store import ResultsStore

    with ResultsStore(sweep / "results.sqlite", create=False) as store:
        cells = store.cells()
        cell = cells[(cells["solver"] == "gddim_bdm") & (cells["options"].str.contains('"order": 2'))
                     & (cells["nfe_budget"] == nfe) & (cells["status"] == "ok")]
        if cell.empty:
            raise SystemExit(f"{sweep}: no finished gddim_bdm (order 2) cell at {nfe} NFE")
        x = store.samples(cell["cell_id"].iloc[0])[:64].double()
    picture(x, HERE / f"{NAME}.png", f"{NAME}: gDDIM-BDM (order 2) {nfe} NFE")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--nfe", type=int, nargs="+", default=[20, 50])
    ap.add_argument("--checkpoint", default=str(HERE / NAME))
    ap.add_argument("--picture", action="store_true")
    ap.add_argument("--samplers", nargs="+", choices=tuple(SAMPLERS), default=["gddim1", "gddim2", "em"],
                    help="gddim1 / gddim2: gDDIM-BDM of order 1 / 2; em: Euler-Maruyama on the reverse SDE")
    ap.add_argument("--picture-from", default=None, metavar="SWEEP",
                    help="only draw the picture, from the samples a sweep of benchmarks/digits_bdm.toml kept "
                         "(gDDIM order 2 at the largest --nfe)")
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    if args.picture_from:
        picture_from_sweep(Path(args.picture_from), max(args.nfe))
        return
    digits = load_dataset("digits")
    ex = features.get("digits-classifier")
    test_f, train_f = ex(digits.test()), ex(digits.train())
    model = sb.load_model(args.checkpoint)
    results = {"checkpoint": str(args.checkpoint), "n": args.n, "seeds": args.seeds}
    for solver, options in (SAMPLERS[k] for k in dict.fromkeys(args.samplers)):
        for nfe in args.nfe:
            vals, first = [], None
            for seed in args.seeds:
                s = generate(model, solver, nfe, args.n, seed, **options)
                first = s if first is None else first
                vals.append(round(fd(ex(s), test_f), 2))
                print(f"{solver} {options} {nfe} NFE seed {seed}: FD {vals[-1]}", file=sys.stderr, flush=True)
            results[f"{solver} {options} {nfe} NFE"] = vals
            results[f"{solver} {options} {nfe} NFE vs train"] = round(fd(ex(first), train_f), 2)
            if args.picture and (solver, options) == ("gddim_bdm", {"order": 2}) and nfe == max(args.nfe):
                picture(first[:64], HERE / f"{NAME}.png", f"{NAME}: gDDIM-BDM (order 2) {nfe} NFE")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
