"""Atomic file writes: the package's one "temporary file, then os.replace" (:func:`atomic_file`).

The content goes to a new temporary file in the target's folder (same
filesystem, so the rename is atomic), is fsynced, and replaces the target with
``os.replace``. A reader sees the old file or the new one, never a half-written
one, and an interrupted or failed write leaves the old file and no temporary.
This module needs only the standard library.
"""
from __future__ import annotations

import contextlib
import json
import os
import secrets
from typing import IO, Any, Iterator, Union

PathLike = Union[str, "os.PathLike[str]"]


@contextlib.contextmanager
def atomic_file(path: PathLike, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open `path` for writing ("w" text as UTF-8, or "wb"); the target is replaced only if the
    block ends without an exception. OSError if the folder is missing or not writable."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_file writes a whole file: mode 'w' or 'wb', got {mode!r}")
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{secrets.token_hex(6)}.tmp")
    # os.open with 0o666 lets the umask decide the permissions, as a plain open() would
    # (tempfile.mkstemp would make every output 0600).
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(folder)


def atomic_write_text(path: PathLike, text: str) -> None:
    """Write the str `text` to `path` as UTF-8, atomically."""
    with atomic_file(path, "w") as f:
        f.write(text)


def atomic_write_json(path: PathLike, data: Any, indent: int = 2, default: Any = None) -> None:
    """Write `data` as JSON (plus a final newline) to `path` atomically; `default` as in
    json.dumps (e.g. str for values JSON has no type for)."""
    # serialised first: a TypeError here leaves no file behind
    atomic_write_text(path, json.dumps(data, indent=indent, default=default) + "\n")


def _fsync_dir(folder: str) -> None:
    """Make the rename durable; best effort (not every OS or filesystem allows it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
