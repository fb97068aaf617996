"""The one exception type the loaders raise for bad input."""
from __future__ import annotations

import os
from typing import Union


class DataError(ValueError):
    """Bad dataset input; ``str(e)`` is one line: ``"<file>: <problem>"``."""

    def __init__(self, path: Union[str, os.PathLike], problem: str) -> None:
        self.path = os.fspath(path)
        # The CLI prints str(e) as its only line of output, so embedded newlines
        # (e.g. from library exception texts) are folded away here.
        self.problem = " ".join(str(problem).split())
        super().__init__(f"{self.path}: {self.problem}")
