#!/usr/bin/env bash
# The GPU measurements of benchmarks/RESULTS.md in one prepared run (issue #13 item 5):
#   bash benchmarks/gpu.sh            # on a machine with a CUDA GPU (~10 minutes)
#   bash benchmarks/gpu.sh --quick    # the same scripts at their tiny CPU sizes (what CI runs)
# Each line prints its own JSON/table; keep the whole output with the date and `nvidia-smi -L`.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
if [ "${1:-}" = "--quick" ]; then
  export OMP_NUM_THREADS=1
  $PY -m pytest benchmarks/bench_overhead.py --benchmark-disable -q -p no:cacheprovider
  $PY benchmarks/bench_fid_roundtrip.py --quick
  $PY benchmarks/bench_scaling.py --quick
  $PY benchmarks/bench_memory.py --quick
  $PY benchmarks/bench_inception.py --quick
  $PY benchmarks/bench_noise.py --quick
  $PY benchmarks/bench_guided.py --quick
  exit 0
fi
date -u; nvidia-smi -L; uptime
# sampler overhead against k-diffusion (per-step medians; ratio <= 1 is the target)
$PY -m pytest benchmarks/bench_overhead.py --benchmark-only -q -p no:cacheprovider
# counter-based noise vs per-sample generators on the GPU (batch 1024; 3072 = CIFAR-10) and the mixture denoiser
$PY benchmarks/bench_noise.py --device cuda --sizes 2,16,64,3072
# streaming scoring share of a cell at NFE 35 with the EDM-size (CIFAR) UNet: target <= 10% of sampling
$PY benchmarks/bench_fid_roundtrip.py --device cuda --cifar-unet --size 32 --n 10240 --batch 256 --nfe 35
# execution options on one GPU: float32, bf16 autocast, CUDA graphs, both (and torch.compile where supported)
$PY benchmarks/bench_scaling.py --device cuda
