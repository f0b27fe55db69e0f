"""``python -m sampler_bench ...`` (also under torchrun): the same command line as ``sampler-bench``."""

from .cli import main

if __name__ == "__main__":
    main(prog_name="sampler-bench")
