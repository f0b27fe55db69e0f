"""``python -m sampler_bench.models.upgrade NAME [NAME ...]``: rewrite trusted format-1 checkpoint configs
as format 2, whose content hash covers the config as well as the weights (:func:`.checkpoint.upgrade`).

The committed reference checkpoints were upgraded with::

    python -m sampler_bench.models.upgrade checkpoints/ring-edm checkpoints/digits-edm \\
        checkpoints/digits-pfgmpp-d128 checkpoints/digits-cld
"""

from __future__ import annotations

import sys

from .checkpoint import FORMAT_VERSION, CheckpointError, upgrade


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python -m sampler_bench.models.upgrade NAME [NAME ...]", file=sys.stderr)
        return 2
    for name in argv:
        try:
            print(f"upgraded {upgrade(name)} to format_version {FORMAT_VERSION}")
        except (CheckpointError, OSError, ValueError) as e:
            print(f"{name}: {e}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
