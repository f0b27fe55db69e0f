"""How well the bias-corrected FD interval covers the population value, near and away from 0.

gmm2d's exact law, ``K`` disjoint ranges of ``n`` samples, shifted by ``shift`` in every coordinate (a
known population FD of ``d * shift^2`` against the law's own moments). For each range, the same 48
Poisson-bootstrap replicates give three standard errors:

* **plain**: ``sd(t*)``, what :func:`sampler_bench.metrics.uncertainty.estimate` uses;
* **antithetic**: with the replicates ``t-`` of weights ``2 - w``, linear part ``l = (t* - t-)/2`` and
  quadratic part ``q = (t* + t-)/2 - t``, ``se^2 = max(var l - 2 var q, 0) + var q`` (the second-order
  correction of the plain bootstrap's ``var_L + 3 var_Q``, see the uncertainty module);
* **linear**: ``sd(l)``.

Printed per population value: the bias of the corrected estimate, its spread over the ranges, and
for each standard error its mean width relative to that spread and the coverage of the 95% interval.

    python benchmarks/interval_calibration.py            # n = 400, 400 ranges (~1 minute)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> None:
    from sampler_bench.metrics import uncertainty as U
    from sampler_bench.metrics.fd import frechet_distances, sqrtm_psd
    from sampler_bench.models.builtin import builtin_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="gmm2d")
    ap.add_argument("--n", type=int, default=400, help="samples per range")
    ap.add_argument("--ranges", type=int, default=400)
    ap.add_argument("--shifts", default="0,0.05,0.1,0.2,0.4")
    args = ap.parse_args(argv)
    model, n, K, R = builtin_model(args.model), args.n, args.ranges, U.REPLICATES
    # the population moments from 2M exact draws (the law's; FD of the law to itself is 0)
    ref = model.sample_data(2_000_000, generator=torch.Generator().manual_seed(99))
    mu, d = ref.mean(0), ref.shape[1]
    cov_ref = torch.cov(ref.T)
    root, tr = sqrtm_psd(cov_ref), torch.trace(cov_ref)

    def fd(weights, x):  # FD of every weighted copy of x: [W, n] -> [W]
        y, count = x - mu, weights.sum(1)
        s = weights @ y
        s2 = (weights @ (y[:, :, None] * y[:, None, :]).reshape(len(y), -1)).reshape(-1, d, d)
        m = s / count[:, None]
        cov = (s2 - count[:, None, None] * m[:, :, None] * m[:, None, :]) / (count[:, None, None] - 1)
        return frechet_distances(m, cov, torch.zeros(d, dtype=torch.float64), root, tr).numpy()

    x = model.sample_data(K * n, generator=torch.Generator().manual_seed(7))
    q = U.t_quantile(U.CONFIDENCE, R - 1)
    for shift in (float(s) for s in args.shifts.split(",")):
        pop = d * shift**2
        got = {"plain": [], "antithetic": [], "linear": []}
        corrected = []
        for k in range(K):
            xk = x[k * n:(k + 1) * n] + shift
            w = U.poisson_weights(k * n, n, R)
            t = float(fd(torch.ones(1, n, dtype=torch.float64), xk)[0])
            plus, minus = fd(w, xk), fd(2 - w, xk)
            lin, quad = (plus - minus) / 2, (plus + minus) / 2 - t
            c = 2 * t - plus.mean()
            corrected.append(c)
            for name, se in (("plain", plus.std(ddof=1)),
                             ("antithetic", np.sqrt(max(lin.var(ddof=1) - 2 * quad.var(ddof=1), 0) + quad.var(ddof=1))),
                             ("linear", lin.std(ddof=1))):
                got[name].append((se, c - q * se <= pop <= c + q * se))
        sd = np.std(corrected, ddof=1)
        cols = "  ".join(f"{name}: width x{np.mean([a for a, _ in r]) / sd:.2f} cover {np.mean([b for _, b in r]):.3f}"
                         for name, r in got.items())
        print(f"{args.model} n={n} population FD {pop:.4f}: bias {np.mean(corrected) - pop:+.4f} sd {sd:.4f} | {cols}")


if __name__ == "__main__":
    main()
