"""OptionError: a bad option of a library call, named so that each front end words it its way
(the Python API as `lr must be > 0`, the CLI as `--lr must be > 0`). Standard library only, so
every layer may raise it."""
from __future__ import annotations

from typing import Optional


class OptionError(ValueError):
    """A bad option: ``option`` is its keyword name (None when the problem names its own
    subject, e.g. a run folder), ``problem`` the rest of the one-line message."""

    def __init__(self, option: Optional[str], problem: str) -> None:
        self.option, self.problem = option, problem
        super().__init__(problem if option is None else f"{option} {problem}")
