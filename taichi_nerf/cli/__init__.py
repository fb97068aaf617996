"""The `taichi-nerf` command: `parser` builds the arguments, `commands` runs them."""
import os

# Before torch loads its OpenMP runtime (importing the commands does not load torch): torch's
# idle OpenMP threads otherwise spin after every op and take the cores from the Taichi
# kernel that follows. Passive waiting made preview frames 15-25% faster (BENCHMARKS.md
# section 3g); a value the user set wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from taichi_nerf.cli.commands import CLIError, main  # noqa: E402

__all__ = ["CLIError", "main"]
