"""pytest configuration for the speed benchmarks in this folder (pytest-benchmark).

Makes the repository root and ``tests/`` importable (``tests/kdiffusion_ref.py`` loads k-diffusion's
sampling module, the reference implementation the overhead benchmark compares against), and prints
a per-step summary with the ratio ours / k-diffusion after the run.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
if str(ROOT / "tests") not in sys.path:
    sys.path.append(str(ROOT / "tests"))

#: (sampler, steps) -> {implementation: median seconds per step}
PER_STEP_MEDIANS = pytest.StashKey[dict]()


def pytest_configure(config):
    config.stash[PER_STEP_MEDIANS] = {}


@pytest.fixture(scope="session")
def per_step_medians(request) -> dict:
    """Where a benchmark records its median time per step, for the summary below."""
    return request.config.stash[PER_STEP_MEDIANS]


def pytest_terminal_summary(terminalreporter, config):
    medians = config.stash.get(PER_STEP_MEDIANS, {})
    rows = [(key, m) for key, m in sorted(medians.items()) if {"sampler-bench", "k-diffusion"} <= set(m)]
    if not rows:
        return
    write = terminalreporter.write_line
    write("")
    write("median time per step (us) and ratio ours / k-diffusion")
    write(f"{'sampler':<10} {'steps':>5} {'sampler-bench':>14} {'k-diffusion':>12} {'ratio':>6}")
    for (sampler, steps), m in rows:
        ours, theirs = m["sampler-bench"], m["k-diffusion"]
        write(f"{sampler:<10} {steps:>5} {ours * 1e6:>14.1f} {theirs * 1e6:>12.1f} {ours / theirs:>6.2f}")
