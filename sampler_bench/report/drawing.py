"""Drawing a report's figures, in parallel worker processes when the machine has the cores.

Rendering PNGs is most of a report's time (text and tick layout in matplotlib's Agg canvas), and every
figure is independent of the others. The report therefore records each figure as a :class:`Drawing`
(a figure builder of :mod:`.plots` and its plain-data arguments): with a :func:`pool` of ``spawn``-ed
processes open (a report large enough to pay for its start-up: each worker imports only numpy and
matplotlib, ~0.5 s), a drawing is handed to the pool the moment it is created and drawn while the
report's tables are being built; otherwise all are drawn in this process at the end. A figure's bytes do
not depend on where it was drawn (a test checks the pool's output against the serial one).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

#: Fewer figures than this are drawn in this process: a pool would cost more than it saves.
MIN_FIGURES_FOR_POOL = 8
#: Environment variable that sets the number of drawing processes (1: draw in this process).
WORKERS_ENV = "SAMPLER_BENCH_REPORT_WORKERS"


#: The pool of the report being assembled (see :func:`pool`), or None: figures are drawn at the end.
_POOL: contextvars.ContextVar = contextvars.ContextVar("sampler_bench_report_pool", default=None)


class WorkersSettingError(ValueError):
    """$SAMPLER_BENCH_REPORT_WORKERS is not a positive integer."""


@dataclass(frozen=True)
class Drawing:
    """``function(*args, **kwargs)`` returns a matplotlib ``Figure``; :meth:`png` draws it (or waits for
    the worker process already drawing it: ``future``)."""

    function: Callable[..., Any]
    args: tuple = ()
    kwargs: dict = dataclasses.field(default_factory=dict)
    future: Any = dataclasses.field(default=None, compare=False)

    def png(self) -> bytes:
        if self.future is not None:
            return self.future.result()
        from .plots import to_png

        return to_png(self.function(*self.args, **self.kwargs))


def later(function: Callable[..., Any], *args, **kwargs) -> Drawing:
    """A figure to draw (``function`` must be a module-level builder): handed to the report's worker
    processes at once when a :func:`pool` is open, so drawing overlaps the rest of the report; drawn
    in :func:`draw_all` otherwise."""
    drawing = Drawing(function, args, kwargs)
    executor = _POOL.get()
    if executor is not None:
        drawing = dataclasses.replace(drawing, future=executor.submit(_draw, drawing))
    return drawing


@contextlib.contextmanager
def pool(workers: int | None = None, figures_expected: int = 0) -> Iterator[None]:
    """Open a pool of drawing processes for the figures :func:`later` creates inside the block, when
    ``figures_expected`` (an estimate) is enough to pay for it and there is more than one worker."""
    workers = default_workers() if workers is None else workers
    if workers <= 1 or figures_expected < MIN_FIGURES_FOR_POOL:
        yield
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # spawn, not fork: the parent may hold torch's OpenMP pool and other threads (a progress display),
    # which a forked child would inherit in an undefined state.
    try:
        executor = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
    except OSError:  # no processes to be had: draw here
        yield
        return
    token = _POOL.set(executor)
    try:
        yield
    finally:
        _POOL.reset(token)
        executor.shutdown(wait=True, cancel_futures=True)


def _draw(drawing: Drawing) -> bytes:
    return drawing.png()


def default_workers() -> int:
    """Drawing processes: $SAMPLER_BENCH_REPORT_WORKERS, else the cores this process may use (at most 8)."""
    text = os.environ.get(WORKERS_ENV, "").strip()
    if text:
        try:
            n = int(text)
        except ValueError:
            n = 0
        if n < 1:
            raise WorkersSettingError(f"environment variable {WORKERS_ENV}={text!r}: the number of processes drawing "
                                      "report figures must be a positive integer (1 draws in this process); "
                                      "set it so or unset it")
        return n
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cores, 8))


def draw_all(drawings: Sequence[Drawing]) -> list[bytes]:
    """The PNG bytes of every drawing, in order (those given to a pool are waited for; a pool that broke,
    e.g. a worker killed for memory, is replaced by drawing here)."""
    from concurrent.futures.process import BrokenProcessPool

    out = []
    for d in drawings:
        try:
            out.append(d.png())
        except BrokenProcessPool:
            out.append(dataclasses.replace(d, future=None).png())
    return out
