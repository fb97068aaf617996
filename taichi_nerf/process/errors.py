"""The one exception type of ``taichi_nerf.process``."""
from __future__ import annotations


class ProcessError(ValueError):
    """A problem turning a video or photos into a COLMAP folder; ``str(e)`` is one line that
    says what happened and what to try (the CLI prints it and exits with code 2)."""

    def __init__(self, message: str) -> None:
        # the CLI prints str(e) as its only line, so library texts with newlines are folded
        super().__init__(" ".join(str(message).split()))


class MissingDependency(ProcessError):
    """pycolmap or imageio-ffmpeg is not installed: the message is the pip command adding them."""

    INSTALL = 'pip install "taichi-nerf[process]"'

    def __init__(self, module: str) -> None:
        self.module = module
        super().__init__(f"{module} is not installed; `taichi-nerf process` needs it: "
                         f"{self.INSTALL}")
