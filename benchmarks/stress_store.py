"""Crash consistency of the results store under repeated kills with concurrent readers.

Each round starts a real ``python -m sampler_bench sweep`` (a quickstart-like spec, every sampler on
gmm2d and gmm16, 1000 samples per cell), and while it writes, two readers poll the same store: a
loop of ``sampler-bench show`` and a loop of raw SQLite reads (the ``sqlite3`` command-line shell when
it is installed, which opens the file read-write as a user would; Python's ``sqlite3`` otherwise).
After a random delay the sweep gets SIGKILL (two rounds in three) or SIGTERM, the readers are
stopped, and ``PRAGMA integrity_check`` must answer ``ok``. Every ``--fresh-every`` rounds the sweep
starts a new store; in between it resumes the killed one. A store that fails the check is kept
(renamed ``corrupt<round>``) and counted. A kill before the schema is written can leave an empty
file (SQLite creates it on open); that is counted apart: ``show`` refuses it in one line and the next
sweep adopts it as a new store.

    python benchmarks/stress_store.py --rounds 60              # ~6 minutes on 2 cores
    python benchmarks/stress_store.py --rounds 4 --quick --kill-after-cells 20 --max-delay 0.5
                                               # what tests/test_store_stress.py runs

Prints one line per round and a JSON summary; exits 1 when any store was corrupt.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SPEC = """name = "stress"
nfe = {nfe}
n_samples = {n}
seed = 0
batch_size = {n}
precision = "float64"
keep_samples = 64
threads = 1
all_samplers = true
exclude_samplers = ["dpm_adaptive"]
[[model]]
builtin = "gmm2d"
[[model]]
builtin = "gmm16"
[[schedule]]
name = "karras"
"""


def _query(db: Path, sql: str):
    """The first value of ``sql`` on ``db``, opened read-only."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return con.execute(sql).fetchone()[0]
    finally:
        con.close()


def integrity(db: Path) -> tuple[str, int]:
    """(SQLite's integrity verdict, number of stored cells)."""
    return _query(db, "PRAGMA integrity_check"), _query(db, "SELECT count(*) FROM cells")


def _readers(db: Path, env: dict) -> list[subprocess.Popen]:
    """A `show` loop and a raw-SQL loop on ``db``, both running while the sweep writes."""
    py = sys.executable
    show = f"while true; do {py} -m sampler_bench show '{db}' >/dev/null 2>&1; done"
    query = "SELECT count(*) FROM metrics; SELECT * FROM cells ORDER BY random() LIMIT 3;"
    if shutil.which("sqlite3"):
        raw = f"while true; do sqlite3 '{db}' '{query}' >/dev/null 2>&1; sleep 0.02; done"
    else:
        raw = (f"while true; do {py} -c \"import sqlite3; c = sqlite3.connect('{db}'); "
               f"c.executescript('{query}'); c.close()\" >/dev/null 2>&1; sleep 0.02; done")
    return [subprocess.Popen(["bash", "-c", cmd], env=env, start_new_session=True) for cmd in (show, raw)]


def _cells(db: Path) -> int:
    """Stored cells, 0 before the store exists (polled while the sweep writes: a count, no integrity check)."""
    try:
        return _query(db, "SELECT count(*) FROM cells") if db.exists() else 0
    except sqlite3.Error:  # not yet a store (the sweep is creating it)
        return 0


def stress(out: Path, rounds: int, seed: int, min_delay: float, max_delay: float, fresh_every: int,
           quick: bool = False, kill_after_cells: int = 0, log=print) -> dict:
    """Run the rounds under ``out``; returns the summary (rounds, kills, corrupt stores, ...).

    ``kill_after_cells > 0``: instead of after the random delay, kill once the store holds that many
    more cells than when the round started (so that the kill lands mid-write whatever the machine's
    speed), with the random delay as the extra wait after that.
    """
    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    spec = out / "spec.toml"
    spec.write_text(SPEC.format(nfe="[4, 8]" if quick else "[4, 6, 8, 10, 15, 20]", n=200 if quick else 1000))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    summary = {"rounds": rounds, "killed_while_writing": 0, "finished_before_kill": 0, "no_store_yet": 0, "empty_file": 0,
               "corrupt": [], "seed": seed, "delay_s": [min_delay, max_delay]}
    for r in range(rounds):
        store_dir = out / f"o{r // fresh_every}"
        db = store_dir / "results.sqlite"
        sweep = subprocess.Popen([sys.executable, "-m", "sampler_bench", "sweep", str(spec), "--out", str(store_dir),
                                  "--no-report"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        readers = _readers(db, env)
        delay = rng.uniform(min_delay, max_delay)
        if kill_after_cells:
            target = _cells(db) + kill_after_cells
            while _cells(db) < target and sweep.poll() is None:
                time.sleep(0.02)
        t0 = time.monotonic()
        while time.monotonic() - t0 < delay and sweep.poll() is None:
            time.sleep(0.05)
        sig = rng.choice([signal.SIGKILL, signal.SIGKILL, signal.SIGTERM])
        finished = sweep.poll() is not None
        if not finished:
            sweep.send_signal(sig)
        sweep.wait()
        for p in readers:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        if not db.exists():
            summary["no_store_yet"] += 1
            log(f"round {r}: {sig.name} after {delay:.1f} s, before the store existed")
            continue
        if db.stat().st_size == 0:
            # killed after SQLite created the file and before the schema was written (or a reader's open
            # created it): not a store yet; `show` refuses it in one line and the next sweep adopts it
            summary["empty_file"] += 1
            log(f"round {r}: {sig.name} after {delay:.1f} s, the store file was still empty")
            continue
        summary["finished_before_kill" if finished else "killed_while_writing"] += 1
        try:
            verdict, cells = integrity(db)
        except sqlite3.Error as e:
            verdict, cells = f"{type(e).__name__}: {e}", -1
        log(f"round {r}: {'finished' if finished else sig.name} after {delay:.1f} s, exit {sweep.returncode}, "
            f"integrity {verdict}, {cells} cells")
        if verdict != "ok":
            summary["corrupt"].append({"round": r, "verdict": verdict})
            store_dir.rename(out / f"corrupt{r}")
    return summary


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0, help="seed of the kill delays and signals")
    ap.add_argument("--min-delay", type=float, default=0.3, help="seconds before the kill, lower bound")
    ap.add_argument("--max-delay", type=float, default=6.0, help="seconds before the kill, upper bound")
    ap.add_argument("--fresh-every", type=int, default=2, help="rounds per store (the others resume it)")
    ap.add_argument("--kill-after-cells", type=int, default=0,
                    help="kill once this many new cells are stored (then after the delay)")
    ap.add_argument("--quick", action="store_true", help="2 budgets of 200 samples (a CI-sized check)")
    ap.add_argument("--out", type=Path, default=None,
                    help="working directory, where corrupt stores are kept (default: a temporary one)")
    a = ap.parse_args()
    if a.rounds < 1 or a.fresh_every < 1 or a.kill_after_cells < 0 or not 0 <= a.min_delay <= a.max_delay:
        ap.error("--rounds and --fresh-every must be >= 1, --kill-after-cells >= 0 and "
                 "0 <= --min-delay <= --max-delay")
    with tempfile.TemporaryDirectory() as tmp:
        out = a.out or Path(tmp)
        summary = stress(out, a.rounds, a.seed, a.min_delay, a.max_delay, a.fresh_every, a.quick, a.kill_after_cells)
    print(json.dumps(summary, indent=1))
    return 1 if summary["corrupt"] else 0


if __name__ == "__main__":
    sys.exit(main())
