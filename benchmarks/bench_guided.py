"""A class-conditional, guided UNet through a full sweep with FID: throughput and where the time goes.

The model is a diffusers ``UNet2DModel`` with class embeddings (random weights: costs are those of a
trained network of the same size; the samples are not images of anything) plugged in through the
plug-in protocol (``python = "bench_guided:factory"``), one embedding reserved as the null label, so
classifier-free guidance runs both halves in one forward. The sweep runs the model unguided (w = 1) and
guided (w = 2) with two samplers and scores FID against random-image reference statistics with
torch-fidelity's Inception architecture (random weights unless ``--inception`` gives the real file).
Reported per cell: samples/s, the fraction of sampling time inside the network, metric (Inception)
time, and network vs guided-denoiser evaluations.

    python benchmarks/bench_guided.py --quick                 # CPU, < 60 s: 8x8 UNet, 8 samples, 64-d features
    python benchmarks/bench_guided.py --device cuda           # GPU: 32x32 UNet (~36M parameters), 2048 samples
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import header, random_inception_weights  # noqa: E402

SIZES = {  # name: (resolution, block_out_channels, layers_per_block)
    "tiny": (8, (8, 16), 1),
    "cifar": (32, (128, 256, 256, 256), 2),
}


def factory(size: str = "tiny", num_classes: int = 10, seed: int = 0, device: str = "cpu"):
    """Plug-in factory: a class-conditional UNet2DModel under the DDPM linear schedule (epsilon prediction)."""
    from diffusers import DDPMScheduler, UNet2DModel

    from sampler_bench.models.adapters import DiffusersDenoiser

    res, channels, layers = SIZES[size]
    torch.manual_seed(seed)
    down = ("DownBlock2D",) * (len(channels) - 1) + ("AttnDownBlock2D",)
    up = ("AttnUpBlock2D",) + ("UpBlock2D",) * (len(channels) - 1)
    unet = UNet2DModel(sample_size=res, in_channels=3, out_channels=3, layers_per_block=layers,
                       block_out_channels=channels, down_block_types=down, up_block_types=up,
                       norm_num_groups=min(32, channels[0]), num_class_embeds=num_classes + 1).eval()
    model = DiffusersDenoiser(unet, DDPMScheduler(num_train_timesteps=1000).alphas_cumprod, name=f"unet-{size}-cond",
                              null_class=num_classes)
    return model.to(device)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes (CPU, CI)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--n", type=int, default=2048, help="samples per cell")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--nfe", default="10,20")
    p.add_argument("--inception", default=None, help="torch-fidelity's real inception .pth (default: random weights)")
    args = p.parse_args(argv)
    size = "tiny" if args.quick else "cifar"
    # FD's streaming state holds a d x d sum of outer products per bootstrap replicate (32 of them at
    # d = 2048, 1 GiB, copied per shard): the quick mode scores Inception's 64-d pool features instead,
    # which checks the same pipeline in seconds.
    layer = "2048"
    if args.quick:
        args.n, args.batch, args.nfe, layer = 8, 8, "4", "64"
    work = Path(tempfile.mkdtemp(prefix="bench_guided_"))
    weights = Path(args.inception) if args.inception else random_inception_weights(work / "inception-random.pth")
    res = SIZES[size][0]
    reference = work / "reference.npz"  # FID against the statistics of uniform random images
    from sampler_bench.metrics.inception import InceptionV3Compat
    from sampler_bench.metrics.reference_files import save_npz_stats

    ex = InceptionV3Compat(weights_path=weights, device=args.device, feature_layer=layer)
    feats = ex(torch.rand(max(16, min(args.n, 512)), 3, res, res, generator=torch.Generator().manual_seed(1)) * 2 - 1)
    save_npz_stats(reference, feats.mean(0), torch.cov(feats.T))
    spec_text = f"""
name = "guided-unet-{size}"
nfe = [{args.nfe}]
n_samples = {args.n}
batch_size = {args.batch}
device = "{args.device}"
precision = "float32"
keep_samples = 0
[[model]]
name = "unet-{size}-cond"
python = "bench_guided:factory"
args = {{ size = "{size}" }}
guidance = [1.0, 2.0]
[[sampler]]
name = "euler"
[[sampler]]
name = "dpmpp_2m"
[[metric]]
name = "fd"
feature_extractor = "inception-v3-compat"
params = {{ reference_stats = "{reference}", weights_path = "{weights}", feature_layer = "{layer}" }}
"""
    from sampler_bench.bench.runner import run_sweep
    from sampler_bench.bench.spec import parse_spec
    from sampler_bench.bench.store import ResultsStore

    t0 = time.perf_counter()
    summary = run_sweep(parse_spec(spec_text, name="guided"), work / "out")
    wall = time.perf_counter() - t0
    with ResultsStore(work / "out" / "results.sqlite") as store:
        cells, metrics = store.cells(), store.metrics()
    lines = header(f"Guided class-conditional UNet sweep ({size}, {args.n} samples per cell)", args.device)
    lines += [f"- sweep wall time {wall:.1f} s for {summary.total} cells ({summary.ok} ok, {summary.failed} failed); "
              f"Inception layer {layer}", "",
              "| model | sampler | NFE (guided) | network evals | samples/s | in network | Inception s | FD (random Inception) |",
              "|---|---|---|---|---|---|---|---|"]
    out = {"cells": []}
    for c in cells.itertuples(index=False):
        m = metrics[(metrics["cell_id"] == c.cell_id) & (metrics["key"] == "fd")]
        prov = json.loads(m["provenance"].iloc[0]) if len(m) else {}
        evals = prov.get("evaluations", {})
        fid = float(m["value"].iloc[0]) if len(m) else float("nan")
        lines.append(f"| {c.model} | {c.solver} | {c.nfe_counted} | {evals.get('network_per_sample', '?')} | "
                     f"{c.samples_per_s:.3g} | {c.denoiser_fraction:.0%} | {c.metric_time_s:.3g} | {fid:.4g} |")
        out["cells"].append({"model": c.model, "solver": c.solver, "nfe": c.nfe_counted, "evaluations": evals,
                             "samples_per_s": c.samples_per_s, "status": c.status, "fid": fid})
    print("\n".join(lines))
    if summary.failed or summary.ok != summary.total:
        raise SystemExit(f"bench_guided: {summary.failed} cell(s) failed: {summary.problems[:3]}")
    return out


if __name__ == "__main__":
    main()
