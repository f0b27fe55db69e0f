"""The FID feature extractor alone: sampler-bench's folded inference copy against torch-fidelity's module.

``inception-v3-compat`` runs, by default, an inference copy of torch-fidelity's InceptionV3 (batch
norms folded into the convolutions, channels_last, ``torch.inference_mode``; see
``sampler_bench/metrics/inception.py``). This times ``InceptionV3Compat(inference="folded")`` and
``InceptionV3Compat(inference="torch-fidelity")`` on the same uint8-convertible images, interleaved,
at each thread count, and reports the largest feature difference relative to the largest feature.

    python benchmarks/bench_inception.py --quick          # CI: layer 64, 4 images, seconds
    python benchmarks/bench_inception.py                  # 32 images 3x16x16, layer 2048, 1 and 2 threads
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import torch

from _common import header, median, random_inception_weights, sync

def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes for CI")
    p.add_argument("--device", default="cpu")
    p.add_argument("--n", type=int, default=32, help="images per call")
    p.add_argument("--size", type=int, default=16, help="image size (3 x size x size; resized to 299 inside)")
    p.add_argument("--layer", default="2048")
    p.add_argument("--threads", default="1,2", help="comma-separated torch thread counts (CPU)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--weights", default=None, help="a real inception-v3-compat .pth, if you have one")
    args = p.parse_args(argv)
    if args.quick:
        args.n, args.layer, args.threads, args.repeats = 4, "64", "1", 2

    from sampler_bench.metrics.inception import INFERENCE_MODES as MODES
    from sampler_bench.metrics.inception import InceptionV3Compat

    work = Path(tempfile.mkdtemp(prefix="bench_inception_"))
    try:
        weights = Path(args.weights) if args.weights else random_inception_weights(work / "inception-random.pth")
        nets = {m: InceptionV3Compat(weights_path=weights, feature_layer=args.layer, batch_size=args.n,
                                     device=args.device, inference=m) for m in MODES}
    finally:
        if not args.weights:
            shutil.rmtree(work, ignore_errors=True)
    x = torch.rand(args.n, 3, args.size, args.size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    head = header("inception-v3-compat: folded inference copy vs torch-fidelity's module", args.device)
    rows = []
    for threads in [int(t) for t in args.threads.split(",")]:
        torch.set_num_threads(threads)
        feats = {m: nets[m](x) for m in MODES}  # warm-up, and the features compared below
        times: dict[str, list[float]] = {m: [] for m in MODES}
        for _ in range(args.repeats):
            for m in MODES:  # interleaved, so drifts in machine load hit both alike
                sync(args.device)
                t0 = time.perf_counter()
                nets[m](x)
                sync(args.device)
                times[m].append(time.perf_counter() - t0)
        scale = float(feats["torch-fidelity"].abs().max())
        rows.append({"threads": threads, **{f"{m}_s": median(times[m]) for m in MODES},
                     "speedup": median(times["torch-fidelity"]) / median(times["folded"]),
                     "max_relative_feature_difference": float((feats["folded"] - feats["torch-fidelity"]).abs().max())
                     / max(scale, 1e-30)})
    lines = head + [
        f"- {args.n} images 3x{args.size}x{args.size} per call, layer {args.layer} "
        f"({'given weights' if args.weights else 'random weights, torch-fidelity architecture'}); "
        f"medians of {args.repeats} interleaved calls",
        "",
        "| torch threads | folded (s) | torch-fidelity's module (s) | speed-up | max feature difference / max feature |",
        "|---:|---:|---:|---:|---:|",
        *[f"| {r['threads']} | {r['folded_s']:.2f} | {r['torch-fidelity_s']:.2f} | {r['speedup']:.2f}x | "
          f"{r['max_relative_feature_difference']:.1e} |" for r in rows],
    ]
    print("\n".join(lines))
    print("\n" + json.dumps(rows))
    return {"rows": rows}


if __name__ == "__main__":
    main()
