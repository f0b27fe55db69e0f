"""Noise and exact-denoiser throughput, side by side in one process (ratios survive a loaded machine).

* Noise: one draw for a batch of per-sample noise, the counter-based generator (``PhiloxNoise``, the
  sweeps' default) against one ``torch.Generator`` per sample (a Python loop over the batch), at
  several per-sample sizes (2 and 16: the quickstart's mixtures; 64: digits; 3072: CIFAR-10).
* Mixture denoiser: the exact Gaussian-mixture denoiser (``GaussianMixture.__call__``) against the
  textbook formula it replaced (per-component differences, two einsums, log-variances recomputed per
  call), on the built-in gmm2d and gmm16 models at a shared noise level.

    python benchmarks/bench_noise.py                    # CPU, batch 1024
    python benchmarks/bench_noise.py --device cuda      # the same on a GPU
    python benchmarks/bench_noise.py --quick            # CI: tiny and fast
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

from sampler_bench.models.builtin import builtin_model
from sampler_bench.philox import PhiloxNoise
from sampler_bench.rng import generators_for, randn_like


def _best(fn, repeats: int, device: str) -> float:
    """The fastest of ``repeats`` timed calls (after one warm-up), in seconds: CPU time of this process
    on the CPU (steadier than wall time on a shared machine; one torch thread), wall time on a GPU."""
    clock = time.perf_counter if device.startswith("cuda") else time.process_time
    fn()
    best = float("inf")
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = clock()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        best = min(best, clock() - t0)
    return best


def noise_rows(batch: int, sizes: list[int], repeats: int, device: str) -> list[dict]:
    rows = []
    for d in sizes:
        x = torch.empty(batch, d, device=device)
        gens = generators_for(range(batch), device)
        per_sample = _best(lambda: randn_like(x, gens), repeats, device)  # a Python loop over the batch
        # a fresh generator per call: one draw, no prefetched draws to read (the worst case)
        single = _best(lambda: randn_like(x, PhiloxNoise(0, range(batch), device=device)), repeats, device)
        # a sampler's run: 64 consecutive draws of one generator (several draws computed per pass), per draw
        def run():
            g = PhiloxNoise(0, range(batch), device=device)
            for _ in range(64):
                randn_like(x, g)
        steady = _best(run, max(1, repeats // 2), device) / 64
        rows.append({"per_sample_numel": d, "batch": batch, "torch_generators_ms": round(1e3 * per_sample, 3),
                     "philox_one_draw_ms": round(1e3 * single, 3), "philox_in_a_run_ms": round(1e3 * steady, 3),
                     "speedup_one_draw": round(per_sample / single, 1), "speedup_in_a_run": round(per_sample / steady, 1)})
    return rows


def textbook_mixture_denoiser(gmm, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """The formula the fast denoiser replaced (kept here to time it; tests/test_analytic.py checks equality)."""
    s2 = sigma.reshape(-1, 1) ** 2
    diff = x[:, None, :] - gmm.means[None]
    y = torch.einsum("bkd,kde->bke", diff, gmm.eigvecs)
    var = gmm.eigvals[None] + s2[:, :, None]
    logits = gmm.log_weights[None] - 0.5 * torch.log(var).sum(-1) - 0.5 * (y**2 / var).sum(-1)
    w = torch.softmax(logits, dim=1)
    post = gmm.means[None] + torch.einsum("bke,kde->bkd", y * (gmm.eigvals[None] / var), gmm.eigvecs)
    return (w[:, :, None] * post).sum(1)


def denoiser_rows(batch: int, repeats: int) -> list[dict]:
    rows = []
    for name in ("gmm2d", "gmm16"):
        gmm = builtin_model(name).distribution
        x = 3 * torch.randn(batch, gmm.dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        sigma = torch.full((batch,), 0.7, dtype=torch.float64)
        before = _best(lambda: textbook_mixture_denoiser(gmm, x, sigma), repeats, "cpu")
        after = _best(lambda: gmm(x, sigma), repeats, "cpu")
        rows.append({"model": name, "batch": batch, "textbook_us": round(1e6 * before, 1), "fast_us": round(1e6 * after, 1),
                     "speedup": round(before / after, 2)})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes for CI")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--sizes", default="2,16,64,3072", help="per-sample sizes (comma-separated)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: no intra-op hand-offs, steadier on a shared machine)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    if a.quick:
        a.batch, a.sizes, a.repeats = 64, "2,16", 2
    out = {
        "device": a.device, "torch_threads": torch.get_num_threads(),
        "load_average_1min": round(os.getloadavg()[0], 2), "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "noise": noise_rows(a.batch, [int(s) for s in a.sizes.split(",")], a.repeats, a.device),
        "mixture_denoiser": denoiser_rows(a.batch, a.repeats),
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
