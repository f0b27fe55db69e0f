"""Drawing a report's figures, in parallel worker processes when the machine has the cores.

Rendering PNGs is most of a report's time (text and tick layout in matplotlib's Agg canvas), and every
figure is independent of the others. The report therefore records each figure as a :class:`Drawing`
(a figure builder of :mod:`.plots` and its plain-data arguments) and draws them all at the end:
across a pool of ``spawn``-ed processes when there are enough figures to pay for the pool's start-up
(each worker imports only numpy and matplotlib, ~0.5 s), in this process otherwise. A figure's bytes do
not depend on where it was drawn (a test checks the pool's output against the serial one).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any, Callable, Sequence

#: Fewer figures than this are drawn in this process: a pool would cost more than it saves.
MIN_FIGURES_FOR_POOL = 8
#: Environment variable that sets the number of drawing processes (1: draw in this process).
WORKERS_ENV = "SAMPLER_BENCH_REPORT_WORKERS"


@dataclass(frozen=True)
class Drawing:
    """``function(*args, **kwargs)`` returns a matplotlib ``Figure``; :meth:`png` draws it."""

    function: Callable[..., Any]
    args: tuple = ()
    kwargs: dict = dataclasses.field(default_factory=dict)

    def png(self) -> bytes:
        from .plots import to_png

        return to_png(self.function(*self.args, **self.kwargs))


def later(function: Callable[..., Any], *args, **kwargs) -> Drawing:
    """A figure to draw when the report is complete (``function`` must be a module-level builder)."""
    return Drawing(function, args, kwargs)


def _draw(drawing: Drawing) -> bytes:
    return drawing.png()


def default_workers() -> int:
    """Drawing processes: $SAMPLER_BENCH_REPORT_WORKERS, else the cores this process may use (at most 8)."""
    text = os.environ.get(WORKERS_ENV, "").strip()
    if text:
        try:
            n = int(text)
        except ValueError:
            raise ValueError(f"{WORKERS_ENV}={text!r} must be a positive integer (1 draws in this process)") from None
        if n < 1:
            raise ValueError(f"{WORKERS_ENV}={text!r} must be a positive integer (1 draws in this process)")
        return n
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cores, 8))


def draw_all(drawings: Sequence[Drawing], workers: int | None = None) -> list[bytes]:
    """The PNG bytes of every drawing, in order."""
    workers = default_workers() if workers is None else workers
    workers = min(workers, len(drawings))
    if workers <= 1 or len(drawings) < MIN_FIGURES_FOR_POOL:
        return [d.png() for d in drawings]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    # spawn, not fork: the parent may hold torch's OpenMP pool and other threads (a progress display),
    # which a forked child would inherit in an undefined state.
    try:
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            # largest first would balance better, but sizes are unknown; chunks of 1 let the pool balance
            return list(pool.map(_draw, drawings, chunksize=1))
    except (BrokenProcessPool, OSError):  # no processes to be had (limits, memory): draw here instead
        return [d.png() for d in drawings]
