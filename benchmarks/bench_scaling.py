"""Throughput (samples/s) of a sweep cell: 1 vs 2 processes on the CPU (gloo), and on one GPU.

* ``--processes 1,2`` (CPU): the same one-cell sweep launched with ``torchrun --nproc_per_node=K
  -m sampler_bench sweep SPEC`` for each K (one torch thread per process); samples/s is the cell's
  stored figure (samples / the slowest rank's sampling time) and the whole command's wall time is
  shown beside it. Each K runs ``--repeats`` times, interleaved; medians.
* ``--device cuda``: one process on one GPU, an EDM-sized UNet (51M parameters, 3x32x32, batch 256+)
  sampled with Heun at NFE 35; samples/s with the execution options of
  :class:`sampler_bench.models.execution.ExecutedModel`: float32, bf16 autocast, CUDA graphs, both.

    python benchmarks/bench_scaling.py --quick                     # CI: CPU, 1 and 2 processes, tiny
    python benchmarks/bench_scaling.py                             # CPU, 1 and 2 processes
    python benchmarks/bench_scaling.py --device cuda               # one GPU, execution options
    python benchmarks/bench_scaling.py --processes 1,2,4,8 --sweep-device cuda --n 200000   # torchrun on GPUs
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from _common import ROOT, header, image_model, median, sync

SPEC = """
name = "scaling"
nfe = [{nfe}]
n_samples = {n}
batch_size = {batch}
seed = 0
device = "{device}"
[[model]]
builtin = "{model}"
[[sampler]]
name = "{solver}"
[[metric]]
name = "fd"
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_run(k: int, spec_path: Path, out: Path) -> dict:
    """One `torchrun --nproc_per_node=k -m sampler_bench sweep` into a fresh directory."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={k}", "--master_addr=127.0.0.1",
           f"--master_port={free_port()}", "-m", "sampler_bench", "sweep", str(spec_path), "--out", str(out), "--no-report"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"torchrun with {k} process(es) failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    from sampler_bench.bench.store import ResultsStore

    with ResultsStore(out / "results.sqlite", create=False) as store:
        cell = store.cells().iloc[0]
    return {"samples_per_s": float(cell["samples_per_s"]), "cell_s": float(cell["wall_time_s"]), "command_s": wall}


def cpu_scaling(args) -> None:
    procs = [int(k) for k in args.processes.split(",")]
    runs: dict[int, list[dict]] = {k: [] for k in procs}
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "scaling.toml"
        spec.write_text(SPEC.format(nfe=args.nfe, n=args.n, batch=args.batch, model=args.model, solver=args.solver,
                                    device=args.sweep_device))
        for rep in range(args.repeats):
            for k in procs:
                runs[k].append(cpu_run(k, spec, Path(tmp) / f"k{k}-{rep}"))
    med = {k: {key: median([r[key] for r in rs]) for key in rs[0]} for k, rs in runs.items()}
    base = med[procs[0]]["samples_per_s"]
    where = "CPU, gloo" if args.sweep_device == "cpu" else f"{args.sweep_device}, one GPU per process, NCCL"
    lines = header(f"Scaling: samples/s with {' and '.join(map(str, procs))} processes ({where})", args.sweep_device) + [
        f"- cell: {args.model}, {args.solver} at NFE {args.nfe}, {args.n} samples, batch {args.batch}, metric fd; "
        f"`torchrun --nproc_per_node=K -m sampler_bench sweep`, 1 torch thread per process; medians of {args.repeats} interleaved runs",
        "",
        "| processes | samples/s (cell) | speed-up | cell time (s) | whole command (s) |",
        "|---:|---:|---:|---:|---:|",
    ]
    for k in procs:
        m = med[k]
        lines.append(f"| {k} | {m['samples_per_s']:.0f} | {m['samples_per_s'] / base:.2f}x | {m['cell_s']:.2f} | {m['command_s']:.1f} |")
    print("\n".join(lines))
    print("\n" + json.dumps({str(k): v for k, v in med.items()}))


def gpu_throughput(args) -> None:
    from sampler_bench.models.execution import ExecutedModel
    from sampler_bench.solvers import budget
    from sampler_bench.solvers.driver import CountingDenoiser, run_solver
    from sampler_bench.solvers.noise import generators_for

    dev = args.device
    torch.backends.cuda.matmul.allow_tf32 = True  # what EDM's generate.py runs with
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    model = image_model(32, 128, (2, 2, 2), dev, attn=(16,), num_blocks=4)
    params = sum(p.numel() for p in model.denoiser.parameters()) / 1e6
    plan = budget.plan("heun", args.gpu_nfe, schedule="karras", sigma_min=model.sigma_min, sigma_max=model.sigma_max)
    variants = {"float32": {}, "bf16 autocast": {"autocast": "bf16"}, "CUDA graphs": {"cuda_graphs": True},
                "bf16 + CUDA graphs": {"autocast": "bf16", "cuda_graphs": True}}
    batch, n = args.gpu_batch, args.gpu_batch * args.gpu_batches

    def cell(ex) -> float:
        sync(dev)
        t0 = time.perf_counter()
        for a in range(0, n, batch):
            gens = generators_for(range(a, a + batch), dev)
            x = model.prior(batch, generator=gens, dtype=torch.float32, device=dev)
            run_solver("heun", CountingDenoiser(ex), x, plan.sigmas, generator=gens, options=plan.options)
        sync(dev)
        return n / (time.perf_counter() - t0)

    wrapped = {name: ExecutedModel(model, device=dev, **opts) for name, opts in variants.items()}
    for ex in wrapped.values():  # warm-up: cuDNN autotuning, CUDA graph capture
        run_solver("heun", CountingDenoiser(ex), model.prior(batch, dtype=torch.float32, device=dev), plan.sigmas,
                   options=plan.options)
    rates: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, ex in wrapped.items():
            rates[name].append(cell(ex))
    med = {name: median(r) for name, r in rates.items()}
    lines = header("Throughput on one GPU: execution options", dev) + [
        f"- cell: EDM-preconditioned UNet, {params:.1f}M parameters (random weights), 3x32x32, Heun at NFE {args.gpu_nfe}, "
        f"float32 state, {n} samples in batches of {batch}; TF32 matmuls on; medians of {args.repeats} interleaved runs",
        "",
        "| execution | samples/s | vs float32 |",
        "|---|---:|---:|",
    ]
    for name in variants:
        lines.append(f"| {name} | {med[name]:.0f} | {med[name] / med['float32']:.2f}x |")
    print("\n".join(lines))
    print("\n" + json.dumps(med))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="CPU, tiny cell (CI)")
    p.add_argument("--device", default="cpu", help="cpu: 1 vs 2 processes; cuda: one GPU, execution options")
    p.add_argument("--processes", default="1,2")
    p.add_argument("--sweep-device", default="cpu",
                   help="device of the torchrun sweeps (cuda: one GPU per process, e.g. --processes 1,2,4,8)")
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--batch", type=int, default=1000)
    p.add_argument("--nfe", type=int, default=20)
    p.add_argument("--model", default="gmm16")
    p.add_argument("--solver", default="dpmpp_2m")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--gpu-batch", type=int, default=256)
    p.add_argument("--gpu-batches", type=int, default=4)
    p.add_argument("--gpu-nfe", type=int, default=35)
    args = p.parse_args(argv)
    if args.quick:
        args.n, args.batch, args.nfe, args.repeats = 2000, 500, 8, 1
    if torch.device(args.device).type == "cuda":
        gpu_throughput(args)
    else:
        cpu_scaling(args)


if __name__ == "__main__":
    main()
