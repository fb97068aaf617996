"""BenchError: the one exception a benchmark raises for what stops it (no torch import)."""


class BenchError(RuntimeError):
    """A benchmark could not run (one line: what failed and why)."""
