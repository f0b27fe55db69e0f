"""How far the ER-SDE reference code's 100-point Riemann sums are from the exact step coefficients.

ER-SDE-Solver-2/3 (Cui et al., arXiv 2309.06169) multiply the divided differences of D by
``c1 = (s' - s) + phi(s') S`` and ``c2 = (s' - s)^2 / 2 + phi(s') S'`` with
``S = int_{s'}^{s} dsigma / phi`` and ``S' = int_{s'}^{s} (sigma - s) / phi dsigma`` (docs/solvers.md,
"ER-SDE-Solver"). The reference code integrates S and S' with a 100-point left Riemann sum; here they
are Gauss-Legendre integrals in log sigma, accurate to float64 round-off
(:func:`sampler_bench.solvers.er_sde.step_integrals`). c1 and c2 are differences of nearly equal
numbers, so the Riemann sums' error in S and S' is amplified in them.

    python benchmarks/er_sde_coefficients.py            # Markdown table (docs/findings.md)

For each Karras grid (rho = 7, sigma 0.002..80, N steps, the last step onto 0 excluded) and noise
scale, the table gives the median and the largest relative error over the steps of c1 and c2.
"""

from __future__ import annotations

import argparse

import numpy as np

from sampler_bench.solvers.er_sde import NOISE_SCALES, step_integrals
from sampler_bench.solvers.schedules import karras


def coefficient_errors(steps: int, noise_scale: int) -> tuple[np.ndarray, np.ndarray]:
    """Relative errors of (c1, c2) per step of a Karras grid: Riemann sums against Gauss-Legendre."""
    _, phi = NOISE_SCALES[noise_scale]
    sigmas = karras(steps, 0.002, 80.0).tolist()
    e1, e2 = [], []
    for s, s_next in zip(sigmas[:-2], sigmas[1:-1]):  # every step but the final denoise onto 0
        p_next, delta = float(phi(np.float64(s_next))), s_next - s
        exact = step_integrals(phi, s, s_next, "gauss_legendre")
        riemann = step_integrals(phi, s, s_next, "riemann")
        c_exact = (delta + p_next * exact[0], 0.5 * delta**2 + p_next * exact[1])
        c_riemann = (delta + p_next * riemann[0], 0.5 * delta**2 + p_next * riemann[1])
        e1.append(abs(c_riemann[0] / c_exact[0] - 1))
        e2.append(abs(c_riemann[1] / c_exact[1] - 1))
    return np.array(e1), np.array(e2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 20, 50, 100, 200, 1000])
    parser.add_argument("--noise-scale", type=int, nargs="+", default=[7, 2], choices=sorted(NOISE_SCALES))
    args = parser.parse_args()
    print("| phi | steps | c1 median | c1 max | c2 median | c2 max |")
    print("|---|---|---|---|---|---|")
    for kind in args.noise_scale:
        for n in args.steps:
            e1, e2 = coefficient_errors(n, kind)
            print(f"| {NOISE_SCALES[kind][0]} | {n} | {np.median(e1):.2e} | {e1.max():.2e} | "
                  f"{np.median(e2):.2e} | {e2.max():.2e} |")


if __name__ == "__main__":
    main()
