"""The results store: one SQLite file holding every cell of every sweep, with its provenance.

Reliability comes from SQLite itself: the file is in WAL mode with a busy timeout, and each finished
cell (its row, its metric values and its kept samples) is written in ONE ``BEGIN IMMEDIATE``
transaction. A sweep killed at any moment therefore loses at most the cell it was computing, and
two sweeps writing the same file serialise their writes; a cell computed by both is stored once
(the first writer wins unless the second asked to replace it with ``--force``).

Columns beyond the contract: ``requested_options`` (JSON: the sampler configuration as the spec
asked for it, solver defaults filled in, *without* what the budget plan added -- group rows of a
sampler x NFE table by (solver, requested_options), since ``options`` holds per-budget additions
such as DPM-Solver-fast's order list) and ``metric_time_s`` (seconds spent in metric updates).

Read side (the contract ``sampler_bench.report`` relies on)::

    store = ResultsStore(path)
    store.cells()      # one row per cell
    store.metrics()    # one row per (cell, metric, key)
    store.joined()     # metrics with their cell's columns (long format)
    store.samples(cell_id)   # up to 256 float32 samples kept for pictures, or None
    store.sweeps()     # one row per sweep run
    store.replicates()       # {(cell_id, metric, key): float64 array of bootstrap replicate values}

Uncertainty (schema 2): every metric row has ``ci_low``, ``ci_high`` (the interval for the population
value, see :mod:`sampler_bench.metrics.uncertainty`) and ``corrected`` (the bias-corrected value the
interval is centred on; equal to ``value`` for unbiased estimators); the Poisson-bootstrap replicate
values are kept in the ``replicates`` table, so two cells with the same seeds can be compared by a
paired test after the fact. A schema-1 store is migrated when opened for writing (the new columns
are NULL, read back as NaN: "no interval") and read as is otherwise.
"""

from __future__ import annotations

import json
import os
import sqlite3
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd
import torch

SCHEMA_VERSION = 2
#: schema versions this code reads (1: before intervals; migrated in place when opened for writing)
READABLE_SCHEMAS = (1, 2)
#: Seconds a writer waits for another process's transaction before giving up.
BUSY_TIMEOUT_S = 120.0

SWEEP_COLUMNS = (
    "sweep_id", "spec_name", "spec_toml", "command", "version", "hostname", "python", "torch",
    "started_at", "finished_at",
)
CELL_COLUMNS = (
    "cell_id", "sweep_id", "spec_name", "model", "model_hash", "process", "solver", "options",
    "requested_options", "stochastic", "declared_order", "schedule", "schedule_params", "sigma_min", "sigma_max",
    "ends_at_zero", "nfe_budget", "nfe_planned", "nfe_counted", "steps", "n_samples", "seed",
    "batch_size", "device", "precision", "wall_time_s", "samples_per_s", "denoiser_fraction",
    "metric_time_s", "status", "reason", "version", "created_at",
)
METRIC_COLUMNS = (
    "cell_id", "metric", "key", "value", "lower_is_better", "feature_extractor", "reference_hash", "provenance",
    "ci_low", "ci_high", "corrected",
)
#: metric columns added by schema 2 (NULL in a migrated schema-1 store)
INTERVAL_COLUMNS = ("ci_low", "ci_high", "corrected")
_BOOL_CELL = ("stochastic", "ends_at_zero")
_INT_CELL = ("declared_order", "nfe_budget", "nfe_planned", "nfe_counted", "steps", "n_samples", "seed", "batch_size")
_REAL_CELL = ("sigma_min", "sigma_max", "wall_time_s", "samples_per_s", "denoiser_fraction", "metric_time_s")
STATUSES = ("ok", "skipped", "failed")

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS sweeps ({", ".join(c + (" TEXT PRIMARY KEY" if c == "sweep_id" else " TEXT") for c in SWEEP_COLUMNS)});
CREATE TABLE IF NOT EXISTS cells ({", ".join(
    c + (" TEXT PRIMARY KEY" if c == "cell_id" else " INTEGER" if c in _BOOL_CELL + _INT_CELL else " REAL" if c in _REAL_CELL else " TEXT")
    for c in CELL_COLUMNS)});
CREATE TABLE IF NOT EXISTS metrics (
    cell_id TEXT NOT NULL, metric TEXT NOT NULL, key TEXT NOT NULL, value REAL, lower_is_better INTEGER,
    feature_extractor TEXT, reference_hash TEXT, provenance TEXT, ci_low REAL, ci_high REAL, corrected REAL,
    PRIMARY KEY (cell_id, metric, key));
CREATE TABLE IF NOT EXISTS replicates (
    cell_id TEXT NOT NULL, metric TEXT NOT NULL, key TEXT NOT NULL, data BLOB NOT NULL, PRIMARY KEY (cell_id, metric, key));
CREATE TABLE IF NOT EXISTS samples (cell_id TEXT PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS sweep_cells (sweep_id TEXT NOT NULL, cell_id TEXT NOT NULL, PRIMARY KEY (sweep_id, cell_id));
"""


class StoreError(ValueError):
    """The results file is missing, not a results store, or from an incompatible version."""


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _samples_to_bytes(samples: torch.Tensor) -> bytes:
    from safetensors.torch import save

    return save({"samples": samples.detach().to("cpu", torch.float32).contiguous()})


def _samples_from_bytes(data: bytes) -> torch.Tensor:
    from safetensors.torch import load

    return load(bytes(data))["samples"]


class ResultsStore:
    """A results store at ``path`` (created when missing unless ``create=False``)."""

    def __init__(self, path: str | os.PathLike, *, create: bool = True, timeout: float = BUSY_TIMEOUT_S):
        self.path = Path(path)
        if not self.path.exists():
            if not create:
                raise StoreError(f"results store {str(self.path)!r} does not exist (run `sampler-bench sweep` first)")
            self.path.parent.mkdir(parents=True, exist_ok=True)
        elif self.path.is_dir():
            candidate = self.path / "results.sqlite"
            if not candidate.exists():
                raise StoreError(f"{str(self.path)!r} is a directory without a results.sqlite in it")
            self.path = candidate
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, one transaction per cell.
        self._db = sqlite3.connect(str(self.path), timeout=timeout, isolation_level=None)
        try:
            self._db.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
            self._db.execute("PRAGMA journal_mode = WAL")
            # NORMAL is durable against a killed process in WAL mode (only a power loss can drop
            # the last commits), which is the failure the resume promise covers.
            self._db.execute("PRAGMA synchronous = NORMAL")
            self._db.execute("PRAGMA foreign_keys = OFF")
            with self._transaction():
                for stmt in filter(None, (s.strip() for s in _SCHEMA.split(";"))):
                    self._db.execute(stmt)
                row = self._db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
                if row is None:
                    self._db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
                elif int(row[0]) not in READABLE_SCHEMAS:
                    raise StoreError(
                        f"{str(self.path)!r} has results-store schema {row[0]}, this sampler-bench reads "
                        f"{', '.join(map(str, READABLE_SCHEMAS))}"
                    )
                elif int(row[0]) < SCHEMA_VERSION:
                    self._migrate(int(row[0]))
                for table, columns in (("sweeps", SWEEP_COLUMNS), ("cells", CELL_COLUMNS), ("metrics", METRIC_COLUMNS)):
                    have = {r[1] for r in self._db.execute(f"PRAGMA table_info({table})")}
                    missing = [c for c in columns if c not in have]
                    if missing:
                        raise StoreError(
                            f"{str(self.path)!r} was written by an incompatible sampler-bench (table {table} lacks "
                            f"{', '.join(missing)}); sweep into a new --out directory"
                        )
        except sqlite3.DatabaseError as e:
            self._db.close()
            raise StoreError(f"{str(self.path)!r} is not a sampler-bench results store ({e})") from None

    def _migrate(self, version: int) -> None:
        """Schema 1 -> 2: add the interval columns (NULL: no interval); the replicates table is new."""
        have = {r[1] for r in self._db.execute("PRAGMA table_info(metrics)")}
        for c in INTERVAL_COLUMNS:
            if c not in have:
                self._db.execute(f"ALTER TABLE metrics ADD COLUMN {c} REAL")
        self._db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))

    # -- plumbing -------------------------------------------------------------------------------

    class _Tx:
        def __init__(self, db: sqlite3.Connection):
            self.db = db

        def __enter__(self):
            # IMMEDIATE takes the write lock up front, so the existence check and the insert of a
            # cell cannot interleave with another process's write of the same cell.
            self.db.execute("BEGIN IMMEDIATE")
            return self.db

        def __exit__(self, exc_type, exc, tb):
            self.db.execute("COMMIT" if exc_type is None else "ROLLBACK")
            return False

    def _transaction(self) -> "ResultsStore._Tx":
        return ResultsStore._Tx(self._db)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "ResultsStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- writing --------------------------------------------------------------------------------

    def begin_sweep(self, sweep_id: str, *, spec_name: str, spec_toml: str, command: str, environment: Mapping[str, str]) -> None:
        """Record the start of a sweep run (its spec text, command line and software versions)."""
        row = {
            "sweep_id": sweep_id, "spec_name": spec_name, "spec_toml": spec_toml, "command": command,
            "started_at": now_iso(), "finished_at": None,
            **{k: environment.get(k) for k in ("version", "hostname", "python", "torch")},
        }
        with self._transaction() as db:
            db.execute(
                f"INSERT OR REPLACE INTO sweeps ({', '.join(SWEEP_COLUMNS)}) VALUES ({', '.join('?' * len(SWEEP_COLUMNS))})",
                [row[c] for c in SWEEP_COLUMNS],
            )

    def finish_sweep(self, sweep_id: str) -> None:
        with self._transaction() as db:
            db.execute("UPDATE sweeps SET finished_at = ? WHERE sweep_id = ?", (now_iso(), sweep_id))

    def link(self, sweep_id: str, cell_id: str) -> None:
        """Record that a sweep used an already stored cell (it was not recomputed)."""
        with self._transaction() as db:
            db.execute("INSERT OR IGNORE INTO sweep_cells VALUES (?, ?)", (sweep_id, cell_id))

    def put_cell(
        self,
        cell: Mapping[str, Any],
        metrics: Iterable[Mapping[str, Any]] = (),
        samples: torch.Tensor | None = None,
        *,
        replace: bool = False,
    ) -> bool:
        """Store one finished cell, its metric values and kept samples in one transaction.

        Returns False (and writes nothing but the sweep link) when the cell is already stored and
        ``replace`` is False: a cell computed twice, e.g. by two concurrent sweeps, is stored once.
        """
        missing = [c for c in CELL_COLUMNS if c not in cell and c not in ("created_at",)]
        if missing:
            raise ValueError(f"cell row lacks columns {missing}")
        if cell["status"] not in STATUSES:
            raise ValueError(f"cell status must be one of {STATUSES}, got {cell['status']!r}")
        row = {**cell, "created_at": cell.get("created_at") or now_iso()}
        values = []
        for c in CELL_COLUMNS:
            v = row[c]
            if c in _BOOL_CELL:
                v = int(bool(v))
            elif c in _INT_CELL and v is not None:
                v = int(v)
            elif c in _REAL_CELL and v is not None:
                v = float(v)
            values.append(v)
        metric_rows, replicate_rows = [], []
        for m in metrics:
            prov = m.get("provenance", {})
            metric_rows.append((
                row["cell_id"], m["metric"], m["key"], float(m["value"]), int(bool(m["lower_is_better"])),
                m.get("feature_extractor") or "", m.get("reference_hash") or "",
                prov if isinstance(prov, str) else json.dumps(prov, sort_keys=True, default=str),
                *(None if m.get(c) is None else float(m[c]) for c in INTERVAL_COLUMNS),
            ))
            if m.get("replicates") is not None and len(m["replicates"]):
                data = np.asarray(m["replicates"], dtype="<f8").tobytes()
                replicate_rows.append((row["cell_id"], m["metric"], m["key"], data))
        blob = _samples_to_bytes(samples) if samples is not None and samples.numel() else None
        cid = row["cell_id"]
        with self._transaction() as db:
            exists = db.execute("SELECT 1 FROM cells WHERE cell_id = ?", (cid,)).fetchone() is not None
            if exists and not replace:
                db.execute("INSERT OR IGNORE INTO sweep_cells VALUES (?, ?)", (row["sweep_id"], cid))
                return False
            for table in ("cells", "metrics", "samples", "replicates"):
                db.execute(f"DELETE FROM {table} WHERE cell_id = ?", (cid,))
            db.execute(
                f"INSERT INTO cells ({', '.join(CELL_COLUMNS)}) VALUES ({', '.join('?' * len(CELL_COLUMNS))})", values
            )
            db.executemany(f"INSERT INTO metrics ({', '.join(METRIC_COLUMNS)}) VALUES ({', '.join('?' * len(METRIC_COLUMNS))})",
                           metric_rows)
            db.executemany("INSERT INTO replicates VALUES (?, ?, ?, ?)", replicate_rows)
            if blob is not None:
                db.execute("INSERT INTO samples VALUES (?, ?)", (cid, blob))
            db.execute("INSERT OR IGNORE INTO sweep_cells VALUES (?, ?)", (row["sweep_id"], cid))
        return True

    # -- reading --------------------------------------------------------------------------------

    def status(self, cell_id: str) -> str | None:
        """'ok' | 'skipped' | 'failed' for a stored cell, None when it is not stored."""
        row = self._db.execute("SELECT status FROM cells WHERE cell_id = ?", (cell_id,)).fetchone()
        return row[0] if row else None

    def stored_cell_ids(self) -> set[str]:
        return {r[0] for r in self._db.execute("SELECT cell_id FROM cells")}

    def _frame(self, sql: str, params: tuple = ()) -> pd.DataFrame:
        cur = self._db.execute(sql, params)
        cols = [d[0] for d in cur.description]
        return pd.DataFrame.from_records(cur.fetchall(), columns=cols)

    def cells(self, sweep_id: str | None = None) -> pd.DataFrame:
        """One row per cell (optionally only the cells a given sweep used), in insertion order."""
        if sweep_id is None:
            df = self._frame(f"SELECT {', '.join(CELL_COLUMNS)} FROM cells ORDER BY rowid")
        else:
            df = self._frame(
                f"SELECT {', '.join('c.' + c for c in CELL_COLUMNS)} FROM cells c "
                "JOIN sweep_cells s ON s.cell_id = c.cell_id WHERE s.sweep_id = ? ORDER BY c.rowid",
                (sweep_id,),
            )
        for c in _BOOL_CELL:
            df[c] = df[c].astype(bool)
        for c in _INT_CELL:  # nullable: a skipped cell has no planned or counted NFE
            df[c] = df[c].astype("Int64")
        for c in _REAL_CELL:
            df[c] = df[c].astype(float)
        return df

    def metrics(self) -> pd.DataFrame:
        """One row per (cell, metric, key); a NaN value is stored as NULL and read back as NaN."""
        have = {r[1] for r in self._db.execute("PRAGMA table_info(metrics)")}
        cols = [c if c in have else f"NULL AS {c}" for c in METRIC_COLUMNS]  # a schema-1 store opened read-only
        df = self._frame(f"SELECT {', '.join(cols)} FROM metrics ORDER BY rowid")
        for c in ("value", *INTERVAL_COLUMNS):
            df[c] = df[c].astype(float)
        df["lower_is_better"] = df["lower_is_better"].astype(bool)
        return df

    def joined(self, sweep_id: str | None = None) -> pd.DataFrame:
        """Metric values with their cell's columns (long format)."""
        return self.metrics().merge(self.cells(sweep_id), on="cell_id", how="inner")

    def replicates(self, cell_ids: Iterable[str] | None = None) -> dict[tuple[str, str, str], np.ndarray]:
        """Bootstrap replicate values per (cell_id, metric, key) (empty for cells stored without them).

        Replicate r of every cell reweights the same sample indices, so two cells with the same seeds
        pair replicate by replicate (:func:`sampler_bench.metrics.uncertainty.paired_test`)."""
        if not self._db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'replicates'").fetchone():
            return {}
        rows = self._db.execute("SELECT cell_id, metric, key, data FROM replicates").fetchall()
        wanted = None if cell_ids is None else set(cell_ids)
        return {(c, m, k): np.frombuffer(bytes(d), dtype="<f8").copy() for c, m, k, d in rows
                if wanted is None or c in wanted}

    def samples(self, cell_id: str) -> torch.Tensor | None:
        row = self._db.execute("SELECT data FROM samples WHERE cell_id = ?", (cell_id,)).fetchone()
        return _samples_from_bytes(row[0]) if row else None

    def sweeps(self) -> pd.DataFrame:
        return self._frame(f"SELECT {', '.join(SWEEP_COLUMNS)} FROM sweeps ORDER BY rowid")

    def integrity_ok(self) -> bool:
        """SQLite's own consistency check of the file."""
        return self._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
