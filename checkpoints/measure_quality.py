"""Measure the quality numbers quoted in checkpoints/README.md (and draw the sample pictures).

    python checkpoints/measure_quality.py [--n 2000] [--seeds 0 1 2] [--pictures]

For each digits checkpoint: Fréchet distance in the "digits-classifier" feature space between samples
of EDM's Heun at 35 NFE (18 Karras steps, sigma 0.002..80, rho 7) and the 299 held-out digits, next to
the same FD for the Gaussian fit N(mean, cov) of the training digits (the baseline a model must beat)
and for the training digits themselves (the floor set by 299 reference images). For the ring model:
FD in raw 2-D space against the exact mixture moments. Samples use per-sample seeds
(seed * 10^6 + i), as sweeps do.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

import sampler_bench as sb
from sampler_bench.data import load_dataset
from sampler_bench.metrics import features
from sampler_bench.metrics.fd import frechet_distance
from sampler_bench.solvers.noise import generators_for

HERE = Path(__file__).parent


def moments(f: torch.Tensor):
    f = f.to(torch.float64)
    return f.mean(0), torch.cov(f.T)


def fd(a: torch.Tensor, b: torch.Tensor) -> float:
    return frechet_distance(*moments(a), *moments(b))


def heun35(model, n: int, seed: int, batch: int = 500) -> torch.Tensor:
    sigmas = sb.schedules.karras(18, 0.002, 80.0, rho=7.0)
    out = []
    for start in range(0, n, batch):
        gens = generators_for([seed * 10**6 + i for i in range(start, min(n, start + batch))])
        x = model.prior(len(gens), generator=gens)
        out.append(sb.sample("heun", model, x, sigmas))
    return torch.cat(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--pictures", action="store_true")
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    results = {}
    digits = load_dataset("digits")
    ex = features.get("digits-classifier")
    test_f, train_f = ex(digits.test()), ex(digits.train())
    train = digits.train().to(torch.float64).reshape(len(digits), -1)
    mean, cov = train.mean(0), torch.cov(train.T)
    gauss = []
    for seed in args.seeds:
        g = torch.Generator().manual_seed(seed)
        z = torch.distributions.MultivariateNormal(mean, covariance_matrix=cov + 1e-6 * torch.eye(64, dtype=torch.float64))
        torch.manual_seed(seed)
        gauss.append(fd(ex(z.sample((args.n,)).reshape(-1, 1, 8, 8)), test_f))
        del g
    results["gaussian_fit"] = gauss
    results["train_split_vs_test"] = fd(train_f, test_f)
    for name in ("digits-edm", "digits-pfgmpp-d128"):
        model = sb.load_model(HERE / name)
        vals, samples = [], None
        for seed in args.seeds:
            s = heun35(model, args.n, seed)
            samples = s if samples is None else samples
            vals.append(fd(ex(s), test_f))
        results[name] = vals
        results[name + "_vs_train"] = fd(ex(samples), train_f)
        if args.pictures:
            picture(samples[:64], HERE / f"{name}.png", f"{name}: Heun 35 NFE")
    ring = sb.load_model(HERE / "ring-edm")
    law = ring.distribution
    vals = []
    for seed in args.seeds:
        s = heun35(ring, args.n, seed)
        vals.append(frechet_distance(*moments(s), law.mean, law.covariance))
        if args.pictures and seed == args.seeds[0]:
            scatter(s, law.sample(args.n, generator=torch.Generator().manual_seed(0)), HERE / "ring-edm.png")
    results["ring-edm_raw_fd_vs_exact"] = vals
    print(json.dumps(results, indent=2))


def picture(x: torch.Tensor, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tiles = torch.nn.functional.pad(x.reshape(64, 8, 8), (1, 1, 1, 1), value=-1.0)  # 1-pixel background gaps
    grid = tiles.reshape(8, 8, 10, 10).permute(0, 2, 1, 3).reshape(80, 80).clamp(-1, 1).numpy()
    fig, ax = plt.subplots(figsize=(4, 4.2), dpi=100)
    ax.imshow(grid, cmap="gray_r", vmin=-1, vmax=1)
    ax.set_title(title, fontsize=8)
    ax.axis("off")
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


def scatter(samples: torch.Tensor, data: torch.Tensor, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(6, 3), dpi=100, sharex=True, sharey=True)
    for ax, pts, title in ((axes[0], data, "exact mixture"), (axes[1], samples, "ring-edm, Heun 35 NFE")):
        ax.scatter(pts[:, 0], pts[:, 1], s=1, alpha=0.4)
        ax.set_title(title, fontsize=8)
        ax.set_aspect("equal")
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


if __name__ == "__main__":
    main()
