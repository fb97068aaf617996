"""Reading taichi-nerf checkpoints with numpy alone: the one reader, for both layers.

A checkpoint is an ordinary numpy ``.npz`` (a zip of ``.npy`` files) that
``np.load(path, allow_pickle=False)`` reads: it never holds pickles, so loading
never runs code. The config is UTF-8 JSON stored as a uint8 array under
:data:`CONFIG_KEY` and always carries ``format_version``. The writer and the
torch state-dict helpers live in ``taichi_nerf.nn.checkpoint``, which re-exports
this reader.
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, Iterable, Tuple

import numpy as np

FORMAT_VERSION = 1
CONFIG_KEY = "__config__"


class CheckpointError(ValueError):
    """A checkpoint cannot be written or read; the message is one line naming the file."""


def one_line(e: BaseException) -> str:
    """`Type: message` of an exception on one line (for error messages that quote a cause)."""
    msg = " ".join(str(e).split()) or type(e).__name__
    return f"{type(e).__name__}: {msg}"


def json_from_array(arr: np.ndarray) -> Any:
    """The JSON value in a 1-d uint8 array of UTF-8 text (the config, state-dict skeletons)."""
    if arr.dtype != np.uint8 or arr.ndim != 1:
        raise ValueError(f"expected a 1-d uint8 array of JSON text, got {arr.dtype} {arr.shape}")
    return json.loads(arr.tobytes().decode("utf-8"))


def load_checkpoint(path: "os.PathLike[str] | str", required_arrays: Iterable[str] = (),
                    required_config: Iterable[str] = (),
                    arrays: bool = True) -> Tuple[Dict[str, Any], Dict[str, np.ndarray]]:
    """Read a checkpoint -> (config dict incl. format_version, {name: array}); CheckpointError if
    bad. arrays=False reads the config alone (the arrays dict comes back empty, and
    required_arrays are not checked: no array is read)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint {path}: no such file")
    if os.path.isdir(path):
        raise CheckpointError(f"checkpoint {path}: is a folder, not a checkpoint file")
    try:
        z = np.load(path, allow_pickle=False)
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise CheckpointError(f"checkpoint {path}: a single .npy array, not an .npz checkpoint")
        with z:
            # the archive is read lazily: skipping the arrays skips their bytes
            names = z.files if arrays else [k for k in z.files if k == CONFIG_KEY]
            data = {k: z[k] for k in names}
    except CheckpointError:
        raise
    except Exception as e:  # zip, npy-header and I/O errors: a corrupt or truncated file
        raise CheckpointError(f"checkpoint {path}: unreadable, truncated or corrupt "
                              f"({one_line(e)})") from None
    if CONFIG_KEY not in data:
        raise CheckpointError(f"checkpoint {path}: missing required key {CONFIG_KEY!r} "
                              f"(not a taichi-nerf checkpoint?)")
    try:
        config = json_from_array(data.pop(CONFIG_KEY))
    except (ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(f"checkpoint {path}: bad config JSON ({one_line(e)})") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"checkpoint {path}: config must be a JSON object, "
                              f"got {type(config).__name__}")
    version = config.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {path}: format_version {version!r} is not supported "
                              f"(this version reads {FORMAT_VERSION})")
    missing = [k for k in required_config if k not in config]
    missing += [k for k in required_arrays if arrays and k not in data]
    if missing:
        raise CheckpointError(f"checkpoint {path}: missing required keys {missing}")
    return config, data


def read_checkpoint(path: "os.PathLike[str] | str") -> Tuple[Dict[str, Any], Dict[str, np.ndarray]]:
    """(config, arrays) of a trained run's checkpoint, with what the torch-free renderers need."""
    return load_checkpoint(path, required_arrays=["field/grid.table", "occupancy/density"],
                           required_config=["field", "occupancy", "march", "scene"])
