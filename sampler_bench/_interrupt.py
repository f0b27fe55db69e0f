"""What Ctrl-C prints when it stops the ``sampler-bench`` command, start-up included.

The command line catches KeyboardInterrupt around every command (:mod:`sampler_bench.cli`); this
module covers the seconds before, while the package imports torch, scipy and friends. A
KeyboardInterrupt raised *inside* a third-party import can come out as another exception (a half
initialised module), so while the command line imports them Ctrl-C is only recorded
(:func:`deferred`) and acted on once the imports are done. A library user who presses Ctrl-C during
``import sampler_bench`` still gets the KeyboardInterrupt: only a process started as the command
line is affected.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading

#: One line, printed once; exit status 130 = 128 + SIGINT, as a shell reports an interrupted command.
INTERRUPTED = ("interrupted: cells finished before Ctrl-C are kept in the results store; "
               "rerun the same command to resume")


def started_as_command_line() -> bool:
    """True for ``sampler-bench ...``, ``python -m sampler_bench ...`` and torchrun's ``-m sampler_bench``."""
    argv = list(getattr(sys, "orig_argv", sys.argv))
    if any(os.path.basename(a) == "sampler-bench" for a in argv[:2]):
        return True
    return any(a == "-m" and b == "sampler_bench" for a, b in zip(argv, argv[1:]))


def _bytecode_boundary() -> None:
    """Entering a Python function lets the interpreter run Python-level signal handlers still pending."""


@contextlib.contextmanager
def deferred():
    """Inside: Ctrl-C is recorded, not raised; at the end it prints :data:`INTERRUPTED` and exits 130.
    Does nothing unless this process is the command line and this is its main thread."""
    if not started_as_command_line() or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    if previous in (signal.SIG_IGN, None):  # Ctrl-C is ignored (background job): keep it so
        yield
        return
    pressed = []
    signal.signal(signal.SIGINT, lambda signum, frame: pressed.append(signum))
    try:
        yield
    finally:
        _bytecode_boundary()  # a Ctrl-C still pending in the interpreter runs our handler, not previous
        signal.signal(signal.SIGINT, previous)
    if pressed:
        print(f"\n{INTERRUPTED}", file=sys.stderr)
        raise SystemExit(130)
