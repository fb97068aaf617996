"""The `taichi-nerf` command: `parser` builds the arguments, `commands` runs them."""
from taichi_nerf.cli.commands import CLIError, main

__all__ = ["CLIError", "main"]
