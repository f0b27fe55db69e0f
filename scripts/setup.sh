#!/usr/bin/env bash
# Create .venv (once) and install sampler-bench into it.
#   bash scripts/setup.sh          # the package and its command line
#   bash scripts/setup.sh test     # plus the test dependencies (pytest, k-diffusion for parity tests)
# On a CUDA machine, set SB_CONSTRAINTS= (empty) to keep the torch you already have.
set -euo pipefail
cd "$(dirname "$0")/.."
constraints=${SB_CONSTRAINTS-constraints.txt}
cflag=()
[ -n "$constraints" ] && cflag=(-c "$constraints")
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
py=.venv/bin/python
$py -m pip install -q --upgrade pip >/dev/null
if [ "${1:-}" = "test" ]; then
  $py -m pip install -q "${cflag[@]}" -e '.[test]'
  # k-diffusion is the parity reference for the tests; its own dependency list pulls in
  # heavy unrelated packages, and the tests import only its sampling module.
  $py -m pip install -q --no-deps k-diffusion==0.1.1.post1
else
  $py -m pip install -q "${cflag[@]}" -e .
fi
