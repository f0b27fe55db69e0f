"""The package version (recorded with every stored result and checkpoint)."""

__version__ = "0.1.0"
