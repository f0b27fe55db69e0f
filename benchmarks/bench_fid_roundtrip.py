"""One FID-vs-NFE cell two ways: streaming FD (sampler-bench) against the PNG round trip (torch-fidelity).

* **streaming** (what ``sampler-bench sweep`` does): every batch of samples goes straight from the
  sampler into the FD accumulator (torch-fidelity's ``inception-v3-compat`` features, float64 sums);
  the FD is computed from the sums at the end. Timed twice: with the extractor's default inference
  copy (batch norms folded into the convolutions, channels_last; ``inference="folded"``) and with
  torch-fidelity's module as is (``inference="torch-fidelity"``), so the gain of each part shows.
* **round trip** (the usual workflow, EDM's ``generate.py`` then a FID tool): every batch is written
  as PNG files (``PIL``, as ``generate.py`` does), then ``torch_fidelity.calculate_metrics`` scores
  the folder (its default DataLoader, in this process, so no process start-up is counted).

Same samples (sampled once, then handed to both pipelines), same uint8 conversion, same feature
extractor and weights, reference statistics precomputed and cached for both. The sampling time is
the same for both pipelines and is added to each for the end-to-end figure. Both FD values are
printed: they must agree (same images, same features) up to torch-fidelity's float32 statistics.

No network here: the Inception weights are a local file of random values with torch-fidelity's
architecture (``_common.random_inception_weights``); the cost of a feature extraction is the real one.

    python benchmarks/bench_fid_roundtrip.py --quick                  # CI: tiny, CPU, < 1 min
    python benchmarks/bench_fid_roundtrip.py                          # CPU, 16x16 images
    python benchmarks/bench_fid_roundtrip.py --device cuda --cifar-unet --size 32 --n 10240 --batch 256 --nfe 35
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from _common import header, image_model, median, random_inception_weights, sync


def reference_images(n: int, size: int, seed: int = 123) -> torch.Tensor:
    """Smooth random images in [-1, 1]: a stand-in reference set (FD values are not the point)."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, max(size // 4, 1), max(size // 4, 1), generator=g) * 2 - 1
    return torch.nn.functional.interpolate(low, size=(size, size), mode="bilinear", align_corners=False).double()


def write_pngs(u8: torch.Tensor, folder: Path, start: int) -> None:
    """uint8 [B, 3, H, W] -> one PNG per image, as EDM's generate.py writes them."""
    from PIL import Image

    arr = u8.permute(0, 2, 3, 1).cpu().numpy()
    for k, img in enumerate(arr):
        Image.fromarray(np.ascontiguousarray(img), "RGB").save(folder / f"{start + k:06d}.png")


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes for CI (CPU, well under a minute)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--n", type=int, default=256, help="samples in the cell")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--size", type=int, default=16, help="image size (3 x size x size)")
    p.add_argument("--channels", type=int, default=32, help="UNet base channels")
    p.add_argument("--cifar-unet", action="store_true",
                   help="the EDM-sized UNet (128 channels, mult 2,2,2, 4 blocks, attention at 16; 51M parameters)")
    p.add_argument("--solver", default="heun")
    p.add_argument("--nfe", type=int, default=19)
    p.add_argument("--layer", default="2048", help="Inception feature layer (2048: the FID features)")
    p.add_argument("--n-ref", type=int, default=256, help="reference images")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--workdir", default=None, help="where PNGs and caches go (default: a temp dir, removed after)")
    p.add_argument("--weights", default=None, help="a real inception-v3-compat .pth, if you have one")
    args = p.parse_args(argv)
    if args.quick:
        args.n, args.batch, args.size, args.channels, args.nfe, args.layer, args.n_ref, args.repeats = 32, 16, 16, 16, 5, "64", 32, 2

    import sampler_bench.metrics as M
    from sampler_bench.compat import import_torch_fidelity
    from sampler_bench.metrics.inception import INFERENCE_MODES as MODES
    from sampler_bench.metrics.inception import to_uint8_rgb
    from sampler_bench.solvers import budget
    from sampler_bench.solvers.driver import CountingDenoiser, run_solver
    from sampler_bench.solvers.noise import generators_for

    tf = import_torch_fidelity()
    dev = args.device
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_fid_"))
    work.mkdir(parents=True, exist_ok=True)
    weights = Path(args.weights) if args.weights else random_inception_weights(work / "inception-random.pth")
    if args.cifar_unet:
        model = image_model(args.size, 128, (2, 2, 2), dev, attn=(16,), num_blocks=4)
        args.channels = 128
    else:
        model = image_model(args.size, args.channels, (1, 2, 2), dev)
    plan = budget.plan(args.solver, args.nfe, schedule="karras", sigma_min=model.sigma_min, sigma_max=model.sigma_max)

    # -- the samples (once; both pipelines get exactly these) ----------------------------------------
    samples, sampling_s = [], 0.0
    for a in range(0, args.n, args.batch):
        b = min(a + args.batch, args.n)
        gens = generators_for(range(a, b), dev)
        sync(dev)
        t0 = time.perf_counter()
        x = model.prior(b - a, generator=gens, dtype=torch.float32).to(dev)
        out = run_solver(args.solver, CountingDenoiser(model), x, plan.sigmas, generator=gens, options=plan.options)
        sync(dev)
        sampling_s += time.perf_counter() - t0
        samples.append(out.clamp(-1, 1))

    # -- reference statistics, cached for both pipelines before any timing ---------------------------
    ref = reference_images(args.n_ref, args.size)
    ref_dir = work / "reference_png"
    if not ref_dir.exists():
        ref_dir.mkdir()
        write_pngs(to_uint8_rgb(ref), ref_dir, 0)
    def make(inference: str):
        return M.make("fd", model, feature_extractor="inception-v3-compat", reference_samples=ref,
                      weights_path=weights, feature_layer=args.layer, batch_size=args.batch,
                      cache_dir=str(work / "cache"), device=dev, inference=inference)

    for mode in MODES:  # builds both extractors and caches the reference statistics before any timing
        make(mode)
    tf_kwargs = dict(fid=True, feature_extractor="inception-v3-compat", feature_layer_fid=args.layer,
                     feature_extractor_weights_path=str(weights), cuda=torch.device(dev).type == "cuda",
                     batch_size=args.batch, verbose=False, cache=True, cache_root=str(work / "tf_cache"),
                     input2_cache_name=f"bench-ref-{args.n_ref}-{args.size}-{args.layer}")
    fake_dir = work / "samples_png"

    def streaming(inference: str) -> tuple[float, float]:
        sync(dev)
        t0 = time.perf_counter()
        acc = make(inference)
        for s in samples:
            acc.update(s)
        fd = acc.compute()["fd"]
        sync(dev)
        return time.perf_counter() - t0, fd

    def round_trip() -> tuple[float, float, float]:
        if fake_dir.exists():
            shutil.rmtree(fake_dir)
        fake_dir.mkdir()
        sync(dev)
        t0 = time.perf_counter()
        start = 0
        for s in samples:
            write_pngs(to_uint8_rgb(s), fake_dir, start)
            start += s.shape[0]
        t1 = time.perf_counter()
        fid = tf.calculate_metrics(input1=str(fake_dir), input2=str(ref_dir), **tf_kwargs)[tf.KEY_METRIC_FID]
        sync(dev)
        t2 = time.perf_counter()
        return t1 - t0, t2 - t1, fid

    round_trip()  # warm torch-fidelity's reference cache and its imports; not timed
    stream_t, png_t, tf_t, fds, fids = {m: [] for m in MODES}, [], [], {m: [] for m in MODES}, []
    for _ in range(args.repeats):  # interleaved, so drifts in machine load hit all three alike
        for mode in MODES:
            t, fd = streaming(mode)
            stream_t[mode].append(t)
            fds[mode].append(fd)
        w, s, fid = round_trip()
        png_t.append(w)
        tf_t.append(s)
        fids.append(fid)

    rt_score = median(png_t) + median(tf_t)
    res = {
        "n": args.n, "batch": args.batch, "image": f"3x{args.size}x{args.size}", "solver": args.solver, "nfe": args.nfe,
        "layer": args.layer, "sampling_s": sampling_s, "png_write_s": median(png_t), "torch_fidelity_s": median(tf_t),
        "round_trip_score_s": rt_score, "end_to_end_round_trip_s": sampling_s + rt_score,
        "fid_torch_fidelity": fids[-1],
    }
    for mode in MODES:  # keys: streaming_score_s (default extractor), streaming_torch_fidelity_score_s, ...
        tag = "" if mode == "folded" else "_" + mode.replace("-", "_")
        score = median(stream_t[mode])
        res[f"streaming{tag}_score_s"] = score
        res[f"score_ratio{tag}"] = rt_score / score
        res[f"end_to_end_streaming{tag}_s"] = sampling_s + score
        res[f"end_to_end_ratio{tag}"] = res["end_to_end_round_trip_s"] / (sampling_s + score)
        res[f"fd_streaming{tag}"] = fds[mode][-1]
        res[f"fd_relative_difference{tag}"] = (abs(fds[mode][-1] - fids[-1]) / max(abs(fids[-1]), 1e-30))

    s_f, s_t = res["streaming_score_s"], res["streaming_torch_fidelity_score_s"]
    e_f, e_t, e_r = res["end_to_end_streaming_s"], res["end_to_end_streaming_torch_fidelity_s"], res["end_to_end_round_trip_s"]
    lines = header("FID-vs-NFE cell: streaming vs PNG round trip", dev) + [
        f"- cell: {args.n} samples of a random-weight EDM UNet ({args.channels} channels, 3x{args.size}x{args.size}), "
        f"{args.solver} at NFE {args.nfe}, batch {args.batch}; inception-v3-compat layer {args.layer} "
        f"({'given weights' if args.weights else 'random weights, torch-fidelity architecture'}); medians of {args.repeats} interleaved repeats",
        "",
        "| part | streaming, folded extractor (default) (s) | streaming, torch-fidelity's module (s) | PNG round trip (s) |",
        "|---|---:|---:|---:|",
        f"| sampling (same samples, shared) | {sampling_s:.2f} | {sampling_s:.2f} | {sampling_s:.2f} |",
        f"| write PNGs | – | – | {res['png_write_s']:.2f} |",
        f"| features + FD | {s_f:.2f} | {s_t:.2f} | {res['torch_fidelity_s']:.2f} (torch-fidelity on the folder) |",
        f"| **scoring total** | **{s_f:.2f}** ({res['score_ratio']:.2f}x) | **{s_t:.2f}** ({res['score_ratio_torch_fidelity']:.2f}x) "
        f"| **{rt_score:.2f}** |",
        f"| **end to end** | **{e_f:.2f}** ({res['end_to_end_ratio']:.2f}x) | **{e_t:.2f}** ({res['end_to_end_ratio_torch_fidelity']:.2f}x) "
        f"| **{e_r:.2f}** |",
        "",
        "(ratios: round trip time / streaming time)",
        "",
        f"- same number: streaming FD {res['fd_streaming']:.6g} (folded) and {res['fd_streaming_torch_fidelity']:.6g} "
        f"(torch-fidelity's module), torch-fidelity FID {res['fid_torch_fidelity']:.6g} (relative differences "
        f"{res['fd_relative_difference']:.1e}, {res['fd_relative_difference_torch_fidelity']:.1e})",
    ]
    print("\n".join(lines))
    print("\n" + json.dumps(res))
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    return res


if __name__ == "__main__":
    main()
