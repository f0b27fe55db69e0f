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
Schema 3 adds what a report prints about a configuration, as the sweep declared it:
``options_label`` (the requested options that differ from the solver's defaults, as a table row
names them) and ``requested_order`` (the declared order of the requested configuration); NULL in
older stores, which the report shows as "not recorded" rather than recomputing them.

Read side (the contract ``sampler_bench.report`` relies on)::

    store = ResultsStore(path)
    store.cells()      # one row per cell
    store.metrics()    # one row per (cell, metric, key)
    store.joined()     # metrics with their cell's columns (long format)
    store.samples(cell_id)   # up to 256 float32 samples kept for pictures, or None
    store.sweeps()     # one row per sweep run
    store.replicates()       # {(cell_id, metric, key): float64 array of bootstrap replicate values}
    store.floors()     # the noise floor: each metric of exact samples per (model, sample count, seed)

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

SCHEMA_VERSION = 3
#: schema versions this code reads (1: before intervals, 2: before labels; migrated in place when
#: opened for writing)
READABLE_SCHEMAS = (1, 2, 3)
#: Seconds a writer waits for another process's transaction before giving up.
BUSY_TIMEOUT_S = 120.0

SWEEP_COLUMNS = (
    "sweep_id", "spec_name", "spec_toml", "command", "version", "hostname", "python", "torch",
    "started_at", "finished_at",
)
CELL_COLUMNS = (
    "cell_id", "sweep_id", "spec_name", "model", "model_hash", "process", "solver", "options",
    "requested_options", "options_label", "stochastic", "declared_order", "requested_order", "schedule", "schedule_params", "sigma_min", "sigma_max",
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
#: cell columns added by schema 3 (NULL in a migrated older store: "not recorded")
LABEL_COLUMNS = ("options_label", "requested_order")
_BOOL_CELL = ("stochastic", "ends_at_zero")
_INT_CELL = ("declared_order", "requested_order", "nfe_budget", "nfe_planned", "nfe_counted", "steps", "n_samples", "seed", "batch_size")
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
CREATE TABLE IF NOT EXISTS floors (
    floor_id TEXT PRIMARY KEY, model TEXT, model_hash TEXT, metric TEXT, key TEXT, n_samples INTEGER, seed INTEGER,
    value REAL, ci_low REAL, ci_high REAL, corrected REAL, lower_is_better INTEGER, replicates BLOB, provenance TEXT);
CREATE TABLE IF NOT EXISTS sweep_cells (sweep_id TEXT NOT NULL, cell_id TEXT NOT NULL, PRIMARY KEY (sweep_id, cell_id));
CREATE TABLE IF NOT EXISTS leases (
    cell_id TEXT PRIMARY KEY, owner TEXT NOT NULL, pid INTEGER, host TEXT, claimed_at REAL, expires_at REAL);
"""
#: Seconds a cell's lease lasts without renewal. A sweep renews its leases every LEASE_TIMEOUT_S / 3 while it
#: computes, so only a claimer that died (killed, crashed, lost its node) lets a lease run out; a dead claimer
#: on the same host is noticed at once from its pid.
LEASE_TIMEOUT_S = 300.0


class StoreError(ValueError):
    """The results file is missing, not a results store, or from an incompatible version."""


class EnvironmentFailure(OSError):
    """A sweep stopped because of its environment (disk full, a read-only or unwritable cache or store
    directory): not bad input and not a property of a cell, so nothing is stored for the cell it was
    computing and rerunning the same command once the cause is fixed resumes."""


class StoreWriteError(EnvironmentFailure):
    """The store could not be written for a reason of the environment (disk full, read-only file system,
    permissions): not bad input and not a property of the cell. The store itself stays intact (the
    transaction was rolled back), so rerunning the same command once the cause is fixed resumes."""


#: The first 16 bytes of every SQLite 3 database file.
SQLITE_HEADER = b"SQLite format 3\x00"


def environment_problem(e: BaseException) -> str | None:
    """'disk full', 'read-only ...', ... when ``e`` is an environment failure of a write, else None."""
    import errno

    if isinstance(e, sqlite3.OperationalError):
        text = str(e).lower()
        if "full" in text:
            return "disk full"
        if "readonly" in text or "read-only" in text:
            return "the store's file or directory is read-only"
        if "disk i/o" in text or "unable to open" in text:
            return f"the file system refused the write ({e})"
        return None
    if isinstance(e, OSError):
        if e.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
            return "disk full"
        if e.errno == errno.EROFS:
            return "read-only file system"
        if e.errno in (errno.EACCES, errno.EPERM):
            return f"permission denied ({e.filename or e})"
        return f"{e.strerror or e}" + (f" ({e.filename})" if e.filename else "")
    return None


def _pid_alive(pid) -> bool:
    """Whether process ``pid`` runs on this host (a lease of a dead claimer on this host is stale)."""
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, TypeError, ValueError, OverflowError):
        return True  # another user's process, or no pid recorded: trust the lease's timeout instead
    return True


def _store_file(path: Path, create: bool) -> Path:
    """The SQLite file a store path names (a sweep's output directory names its results.sqlite)."""
    if not path.exists():
        if not create:
            raise StoreError(f"results store {str(path)!r} does not exist (run `sampler-bench sweep` first)")
        return path
    if path.is_dir():
        candidate = path / "results.sqlite"
        if not candidate.exists():
            raise StoreError(f"{str(path)!r} is a directory without a results.sqlite in it")
        return candidate
    return path


def _check_header(path: Path) -> None:
    """StoreError unless ``path`` is a non-empty SQLite database file (checked without opening it with SQLite,
    which would turn an empty file into an empty database)."""
    import stat

    try:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):
            raise StoreError(f"{str(path)!r} is not a regular file, so it is not a sampler-bench results store")
        with open(path, "rb") as f:
            head = f.read(len(SQLITE_HEADER))
    except OSError as e:
        raise StoreError(f"results store {str(path)!r} cannot be read: {e.strerror}") from None
    if not head:
        raise StoreError(f"{str(path)!r} is an empty file, not a sampler-bench results store")
    if head != SQLITE_HEADER:
        raise StoreError(f"{str(path)!r} is not a SQLite database, so it is not a sampler-bench results store")


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _samples_to_bytes(samples: torch.Tensor) -> bytes:
    from safetensors.torch import save

    return save({"samples": samples.detach().to("cpu", torch.float32).contiguous()})


def _samples_from_bytes(data: bytes) -> torch.Tensor:
    from safetensors.torch import load

    return load(bytes(data))["samples"]


def _enable_wal(db: sqlite3.Connection, timeout: float) -> None:
    """Switch the store to WAL mode, waiting out other processes doing the same.

    Changing the journal mode needs an exclusive lock, and SQLite answers "database is locked" at
    once instead of calling the busy handler when another connection holds it (two sweeps opening a
    fresh store together hit this), so the change is retried here until ``timeout``.
    """
    import time

    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        try:
            db.execute("PRAGMA journal_mode = WAL").fetchall()
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(2 * delay, 0.25)


class ResultsStore:
    """A results store at ``path`` (created when missing unless ``create=False``).

    ``read_only=True`` (what ``show``, ``report`` and ``check`` use) opens an existing store without
    writing a byte to it: a file that is empty, not SQLite, or another program's SQLite database is
    refused with a :class:`StoreError` and left exactly as it was.
    """

    def __init__(self, path: str | os.PathLike, *, create: bool = True, timeout: float = BUSY_TIMEOUT_S,
                 read_only: bool = False):
        self.read_only = read_only
        self.path = _store_file(Path(path), create and not read_only)
        if read_only:
            self._open_read_only(timeout)
            return
        if self.path.exists():
            if self.path.stat().st_size:  # an empty file (e.g. from `touch`) may become a store
                _check_header(self.path)
        else:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise StoreWriteError(f"cannot create the results directory {str(self.path.parent)!r}: "
                                      f"{environment_problem(e)}") from None
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, one transaction per cell.
        try:
            self._db = sqlite3.connect(str(self.path), timeout=timeout, isolation_level=None)
        except sqlite3.OperationalError as e:
            raise StoreWriteError(f"cannot open the results store {str(self.path)!r}: {e}") from None
        try:
            self._db.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
            tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if tables and "meta" not in tables:  # another program's database: never touch it
                raise StoreError(f"{str(self.path)!r} is a SQLite database but not a sampler-bench results store "
                                 f"(its tables: {', '.join(sorted(tables))}); sweep into another --out directory")
            _enable_wal(self._db, timeout)
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
                self._check_schema(row)
                if row is not None and int(row[0]) < SCHEMA_VERSION:
                    self._migrate(int(row[0]))
        except sqlite3.OperationalError as e:
            self._db.close()
            problem = environment_problem(e)
            if problem:
                raise StoreWriteError(f"cannot write the results store {str(self.path)!r}: {problem}") from None
            raise StoreError(f"{str(self.path)!r} is not a sampler-bench results store ({e})") from None
        except sqlite3.DatabaseError as e:
            self._db.close()
            raise StoreError(f"{str(self.path)!r} is not a sampler-bench results store ({e})") from None
        except StoreError:
            self._db.close()
            raise

    def _open_read_only(self, timeout: float) -> None:
        """Open with SQLite's read-only mode after checking the file header; never create tables."""
        from urllib.parse import quote

        _check_header(self.path)
        uri = f"file:{quote(str(self.path.resolve()))}?mode=ro"
        try:
            self._db = sqlite3.connect(uri, uri=True, timeout=timeout, isolation_level=None)
        except sqlite3.Error as e:
            raise StoreError(f"results store {str(self.path)!r} cannot be opened: {e}") from None
        try:
            self._db.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
            tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if "meta" not in tables:
                raise StoreError(f"{str(self.path)!r} is a SQLite database but not a sampler-bench results store "
                                 f"(it has no 'meta' table{'; its tables: ' + ', '.join(sorted(tables)) if tables else ''})")
            row = self._db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            if row is None:
                raise StoreError(f"{str(self.path)!r} is a SQLite database but not a sampler-bench results store "
                                 "(its 'meta' table has no schema_version)")
            missing = [t for t in ("sweeps", "cells", "metrics", "samples", "sweep_cells") if t not in tables]
            if missing:
                raise StoreError(f"{str(self.path)!r} is not a complete sampler-bench results store "
                                 f"(tables {', '.join(missing)} are missing)")
            self._check_schema(row)
        except sqlite3.DatabaseError as e:
            self._db.close()
            raise StoreError(f"{str(self.path)!r} is not a readable sampler-bench results store ({e})") from None
        except StoreError:
            self._db.close()
            raise

    def _check_schema(self, row) -> None:
        if row is not None:
            version = str(row[0])
            if not version.isdigit():
                raise StoreError(f"{str(self.path)!r} has a corrupted schema_version {version!r:.40}; it is not a store "
                                 "this sampler-bench can read")
            if int(version) not in READABLE_SCHEMAS:
                raise StoreError(
                    f"{str(self.path)!r} has results-store schema {version}, this sampler-bench reads "
                    f"{', '.join(map(str, READABLE_SCHEMAS))}"
                )
        for table, columns in (("sweeps", SWEEP_COLUMNS), ("cells", CELL_COLUMNS), ("metrics", METRIC_COLUMNS)):
            have = {r[1] for r in self._db.execute(f"PRAGMA table_info({table})")}
            # a schema-1 store lacks the interval columns: they are added on write, read as NULL
            missing = [c for c in columns if c not in have and c not in INTERVAL_COLUMNS + LABEL_COLUMNS]
            if missing:
                raise StoreError(
                    f"{str(self.path)!r} was written by an incompatible sampler-bench (table {table} lacks "
                    f"{', '.join(missing)}); sweep into a new --out directory"
                )

    def _migrate(self, version: int) -> None:
        """Schema 1 -> 2: add the interval columns (NULL: no interval); the replicates table is new.
        Schema 2 -> 3: add the label columns (NULL: not recorded)."""
        have = {r[1] for r in self._db.execute("PRAGMA table_info(metrics)")}
        for c in INTERVAL_COLUMNS:
            if c not in have:
                self._db.execute(f"ALTER TABLE metrics ADD COLUMN {c} REAL")
        have = {r[1] for r in self._db.execute("PRAGMA table_info(cells)")}
        for c in LABEL_COLUMNS:
            if c not in have:
                self._db.execute(f"ALTER TABLE cells ADD COLUMN {c} {'INTEGER' if c in _INT_CELL else 'TEXT'}")
        self._db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))

    # -- plumbing -------------------------------------------------------------------------------

    class _Tx:
        def __init__(self, db: sqlite3.Connection):
            self.db = db

        def __enter__(self):
            # IMMEDIATE takes the write lock up front, so the existence check and the insert of a
            # cell cannot interleave with another process's write of the same cell.
            try:
                self.db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as e:
                problem = environment_problem(e)
                if problem:
                    raise StoreWriteError(f"cannot write the results store: {problem}") from None
                raise
            return self.db

        def __exit__(self, exc_type, exc, tb):
            if exc_type is None:
                try:
                    self.db.execute("COMMIT")
                    return False
                except sqlite3.OperationalError as e:
                    exc = e
            try:
                self.db.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # SQLite already rolled back (e.g. after SQLITE_FULL); the file is as before BEGIN
            problem = environment_problem(exc) if isinstance(exc, sqlite3.OperationalError) else None
            if problem:
                raise StoreWriteError(f"cannot write the results store: {problem}; nothing of this write was "
                                      "stored and the store is intact") from None
            if exc_type is None:
                raise exc
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
        missing = [c for c in CELL_COLUMNS if c not in cell and c not in ("created_at",) + LABEL_COLUMNS]
        if missing:
            raise ValueError(f"cell row lacks columns {missing}")
        if cell["status"] not in STATUSES:
            raise ValueError(f"cell status must be one of {STATUSES}, got {cell['status']!r}")
        row = {**{c: None for c in LABEL_COLUMNS}, **cell, "created_at": cell.get("created_at") or now_iso()}
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
            db.execute("DELETE FROM leases WHERE cell_id = ?", (cid,))  # stored: nobody needs to compute it
        return True

    # -- leases: concurrent sweeps on one store compute each cell once ---------------------------

    def claim(self, cell_id: str, owner: str, *, timeout: float = LEASE_TIMEOUT_S, recompute: str = "none") -> str:
        """Try to take the lease on ``cell_id`` for ``owner``: 'claimed', 'stored' (another sweep stored it;
        ``recompute`` = 'all' (--force) or 'failed' (--retry-failed) claims stored cells too) or 'busy'
        (another live sweep holds the lease). A lease whose time ran out, or whose claimer on this host is
        no longer running, is taken over: that claimer's cell is computed again."""
        import socket
        import time

        host, pid, now = socket.gethostname(), os.getpid(), time.time()
        with self._transaction() as db:
            row = db.execute("SELECT status FROM cells WHERE cell_id = ?", (cell_id,)).fetchone()
            if row is not None and not (recompute == "all" or (recompute == "failed" and row[0] == "failed")):
                return "stored"
            lease = db.execute("SELECT owner, pid, host, expires_at FROM leases WHERE cell_id = ?", (cell_id,)).fetchone()
            if lease is not None and lease[0] != owner and lease[3] > now and not (
                    lease[2] == host and not _pid_alive(lease[1])):
                return "busy"
            db.execute("INSERT OR REPLACE INTO leases VALUES (?, ?, ?, ?, ?, ?)",
                       (cell_id, owner, pid, host, now, now + timeout))
        return "claimed"

    def renew(self, owner: str, timeout: float = LEASE_TIMEOUT_S) -> None:
        """Extend every lease ``owner`` holds (called periodically while it computes)."""
        import time

        with self._transaction() as db:
            db.execute("UPDATE leases SET expires_at = ? WHERE owner = ?", (time.time() + timeout, owner))

    def release(self, cell_id: str, owner: str) -> None:
        with self._transaction() as db:
            db.execute("DELETE FROM leases WHERE cell_id = ? AND owner = ?", (cell_id, owner))

    def release_owner(self, owner: str) -> None:
        """Drop every lease ``owner`` still holds (a sweep that stops frees its cells for the next run)."""
        with self._transaction() as db:
            db.execute("DELETE FROM leases WHERE owner = ?", (owner,))

    def leases(self) -> pd.DataFrame:
        """The cells being computed now: cell_id, owner, pid, host, claimed_at, expires_at (Unix seconds)."""
        return self._frame("SELECT cell_id, owner, pid, host, claimed_at, expires_at FROM leases ORDER BY claimed_at")

    # -- reading --------------------------------------------------------------------------------

    def stored(self, cell_id: str) -> tuple[str, str] | None:
        """(status, reason) of a stored cell, None when it is not stored."""
        row = self._db.execute("SELECT status, reason FROM cells WHERE cell_id = ?", (cell_id,)).fetchone()
        return (row[0], row[1] or "") if row else None

    def status(self, cell_id: str) -> str | None:
        """'ok' | 'skipped' | 'failed' for a stored cell, None when it is not stored."""
        row = self._db.execute("SELECT status FROM cells WHERE cell_id = ?", (cell_id,)).fetchone()
        return row[0] if row else None

    def stored_cell_ids(self) -> set[str]:
        return {r[0] for r in self._db.execute("SELECT cell_id FROM cells")}

    def _frame(self, sql: str, params: tuple = ()) -> pd.DataFrame:
        try:
            cur = self._db.execute(sql, params)
        except sqlite3.DatabaseError as e:
            raise StoreError(f"{str(self.path)!r} cannot be read ({e})") from None
        cols = [d[0] for d in cur.description]
        return pd.DataFrame.from_records(cur.fetchall(), columns=cols)

    def cells(self, sweep_id: str | None = None) -> pd.DataFrame:
        """One row per cell (optionally only the cells a given sweep used), in insertion order."""
        have = {r[1] for r in self._db.execute("PRAGMA table_info(cells)")}
        cols = [f"c.{c}" if c in have else f"NULL AS {c}" for c in CELL_COLUMNS]  # an older store opened read-only
        if sweep_id is None:
            df = self._frame(f"SELECT {', '.join(cols)} FROM cells c ORDER BY c.rowid")
        else:
            df = self._frame(
                f"SELECT {', '.join(cols)} FROM cells c "
                "JOIN sweep_cells s ON s.cell_id = c.cell_id WHERE s.sweep_id = ? ORDER BY c.rowid",
                (sweep_id,),
            )
        try:
            for c in _BOOL_CELL:
                df[c] = df[c].astype(bool)
            for c in _INT_CELL:  # nullable: a skipped cell has no planned or counted NFE
                df[c] = df[c].astype("Int64")
            for c in _REAL_CELL:
                df[c] = df[c].astype(float)
        except (ValueError, TypeError, OverflowError) as e:
            raise StoreError(f"{str(self.path)!r} holds a corrupted cell value (column {c}: {e}); the file was "
                             "modified outside sampler-bench") from None
        bad = ~df["status"].isin(STATUSES)
        if bad.any():
            raise StoreError(f"{str(self.path)!r} holds a corrupted cell (status {df['status'][bad].iloc[0]!r:.40}); "
                             "the file was modified outside sampler-bench")
        return df

    def metrics(self) -> pd.DataFrame:
        """One row per (cell, metric, key); a NaN value is stored as NULL and read back as NaN."""
        have = {r[1] for r in self._db.execute("PRAGMA table_info(metrics)")}
        cols = [c if c in have else f"NULL AS {c}" for c in METRIC_COLUMNS]  # a schema-1 store opened read-only
        df = self._frame(f"SELECT {', '.join(cols)} FROM metrics ORDER BY rowid")
        try:
            for c in ("value", *INTERVAL_COLUMNS):
                df[c] = df[c].astype(float)
        except (ValueError, TypeError) as e:
            raise StoreError(f"{str(self.path)!r} holds a corrupted metric value ({e}); the file was modified "
                             "outside sampler-bench") from None
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

    FLOOR_COLUMNS = ("floor_id", "model", "model_hash", "metric", "key", "n_samples", "seed", "value", "ci_low",
                     "ci_high", "corrected", "lower_is_better", "provenance")

    def put_floor(self, floor_id: str, row: Mapping[str, Any]) -> None:
        """Store one noise-floor value (the metric of exact samples, :mod:`sampler_bench.bench.floor`)."""
        prov = row.get("provenance", {})
        reps = row.get("replicates")
        values = [floor_id] + [row.get(c) for c in self.FLOOR_COLUMNS[1:-1]]
        values[-1] = int(bool(values[-1]))
        with self._transaction() as db:
            db.execute(
                f"INSERT OR REPLACE INTO floors ({', '.join(self.FLOOR_COLUMNS)}, replicates) VALUES "
                f"({', '.join('?' * (len(self.FLOOR_COLUMNS) + 1))})",
                [*values, prov if isinstance(prov, str) else json.dumps(prov, sort_keys=True, default=str),
                 None if reps is None else np.asarray(reps, dtype="<f8").tobytes()])

    def floors(self) -> pd.DataFrame:
        """One row per stored noise-floor value, with its ``replicates`` (array) column; empty for old stores."""
        cols = list(self.FLOOR_COLUMNS) + ["replicates"]
        if not self._db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'floors'").fetchone():
            return pd.DataFrame(columns=cols)
        df = self._frame(f"SELECT {', '.join(cols)} FROM floors ORDER BY rowid")
        df["replicates"] = [np.frombuffer(bytes(b), dtype="<f8").copy() if b is not None else np.array([])
                            for b in df["replicates"]]
        for c in ("value", "ci_low", "ci_high", "corrected"):
            df[c] = df[c].astype(float)
        df["lower_is_better"] = df["lower_is_better"].astype(bool)
        return df

    def has_floor(self, floor_id: str) -> bool:
        """True when a floor value of ``floor_id`` (alone or as ``floor_id:key``) is stored."""
        return self._db.execute("SELECT 1 FROM floors WHERE floor_id = ? OR floor_id LIKE ?",
                                (floor_id, floor_id + ":%")).fetchone() is not None

    def samples(self, cell_id: str) -> torch.Tensor | None:
        row = self._db.execute("SELECT data FROM samples WHERE cell_id = ?", (cell_id,)).fetchone()
        return _samples_from_bytes(row[0]) if row else None

    def sweeps(self) -> pd.DataFrame:
        return self._frame(f"SELECT {', '.join(SWEEP_COLUMNS)} FROM sweeps ORDER BY rowid")

    def integrity_ok(self) -> bool:
        """SQLite's own consistency check of the file."""
        return self._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
