"""``python -m sampler_bench ...`` (also under torchrun): the same command line as ``sampler-bench``."""

from ._interrupt import deferred

with deferred():  # Ctrl-C during start-up: one line, no import traceback
    from .cli import main

if __name__ == "__main__":
    main(prog_name="sampler-bench")
