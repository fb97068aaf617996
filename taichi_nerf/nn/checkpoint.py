"""Plain-data checkpoints: one ``.npz`` of named arrays plus a JSON config.

The file is an ordinary numpy ``.npz`` (a zip of ``.npy`` files) that
``np.load(path, allow_pickle=False)`` reads: it never holds pickles, so loading
never runs code, and it needs neither torch nor this package. The config is
UTF-8 JSON stored as a uint8 array under :data:`CONFIG_KEY` and always carries
``format_version``. A save writes a temporary file in the target folder,
fsyncs it and renames it over the target, so an interrupted save leaves the
previous checkpoint intact.

This module imports numpy only; the torch helpers (:func:`state_dict_to_arrays`,
:func:`arrays_to_state_dict`) import torch when called. The reader,
:func:`load_checkpoint`, is ``taichi_nerf.kernels.checkpoint_io``'s, re-exported.
"""
from __future__ import annotations

import json
import os
import zipfile
from typing import Any, Dict, Mapping

import numpy as np

from taichi_nerf.atomic import atomic_file
# the reader and the format's constants are the torch-free layer's (one reader for both)
from taichi_nerf.kernels.checkpoint_io import (CONFIG_KEY, FORMAT_VERSION, CheckpointError,
                                               json_from_array, load_checkpoint, one_line)

__all__ = ["FORMAT_VERSION", "CONFIG_KEY", "TREE_KEY", "CheckpointError", "save_checkpoint",
           "load_checkpoint", "state_dict_to_arrays", "arrays_to_state_dict"]

TREE_KEY = "__tree__"  # per-prefix JSON skeleton of a state dict (see state_dict_to_arrays)


def _json_bytes(obj: Any) -> np.ndarray:
    return np.frombuffer(json.dumps(obj, sort_keys=True).encode("utf-8"), dtype=np.uint8)


def _plain_array(path: str, name: str, a: Any) -> np.ndarray:
    if not isinstance(name, str) or not name or name.startswith("/") or "\\" in name:
        raise CheckpointError(f"checkpoint {path}: bad array name {name!r} (need a non-empty "
                              f"string without a leading '/' or backslashes)")
    if hasattr(a, "detach"):
        raise CheckpointError(f"checkpoint {path}: array {name!r} is a torch tensor; convert it "
                              f"with .detach().cpu().numpy() or state_dict_to_arrays()")
    arr = np.asarray(a)
    if arr.dtype.hasobject:
        raise CheckpointError(f"checkpoint {path}: array {name!r} has dtype {arr.dtype}, which "
                              f"would need pickle; store plain numbers or put it in the config")
    return arr


def save_checkpoint(path: "os.PathLike[str] | str", config: Mapping[str, Any],
                    arrays: Mapping[str, Any]) -> None:
    """Write `config` (JSON-serialisable dict) and named `arrays` to the .npz file `path`, atomically."""
    path = os.fspath(path)
    if not isinstance(config, Mapping):
        raise CheckpointError(f"checkpoint {path}: config must be a dict, got {type(config).__name__}")
    cfg = dict(config)
    if cfg.setdefault("format_version", FORMAT_VERSION) != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {path}: config says format_version "
                              f"{cfg['format_version']!r}, this writer makes {FORMAT_VERSION}")
    try:
        cfg_arr = _json_bytes(cfg)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"checkpoint {path}: config is not JSON-serialisable "
                              f"({one_line(e)})") from None
    if CONFIG_KEY in arrays:
        raise CheckpointError(f"checkpoint {path}: array name {CONFIG_KEY!r} is reserved")
    # Validate everything before touching the disk.
    items = [(CONFIG_KEY, cfg_arr)] + [(k, _plain_array(path, k, v)) for k, v in arrays.items()]

    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise CheckpointError(f"checkpoint {path}: folder {folder} does not exist")
    with atomic_file(path, "wb") as f:
        # np.savez's own writer, minus its keyword arguments (an array named
        # "file" or "allow_pickle" would clash with them) and with pickle off.
        with zipfile.ZipFile(f, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            for name, arr in items:
                with zf.open(name + ".npy", "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, arr, allow_pickle=False)


# ---------------------------------------------------------------- torch state dicts
# A state dict (module or optimizer) is split into its tensors, stored as arrays
# named "<prefix>/<path>", and a JSON skeleton of everything else, stored as a
# uint8 array "<prefix>/__tree__". Dict keys keep their type (the optimizer's
# state is keyed by int) and tuples stay tuples (Adam's betas).

def _tree_encode(obj: Any, path: str, out: Dict[str, np.ndarray], torch) -> Any:
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu()
        dtype = str(t.dtype).replace("torch.", "")
        if t.dtype == torch.bfloat16:  # numpy has no bfloat16; float32 holds it exactly
            t = t.float()
        if path in out:
            raise CheckpointError(f"state dict: two entries map to the array name {path!r}")
        out[path] = t.numpy().copy()
        return {"__tensor__": path, "dtype": dtype}
    if isinstance(obj, np.ndarray):
        if path in out:
            raise CheckpointError(f"state dict: two entries map to the array name {path!r}")
        out[path] = _plain_array("(state dict)", path, obj)
        return {"__ndarray__": path}
    if isinstance(obj, Mapping):
        items = []
        for k, v in obj.items():
            if not isinstance(k, (str, int)) or isinstance(k, bool):
                raise CheckpointError(f"state dict: key {k!r} at {path!r} must be a str or int")
            items.append([k, _tree_encode(v, f"{path}/{k}", out, torch)])
        return {"__dict__": items}
    if isinstance(obj, tuple):
        return {"__tuple__": [_tree_encode(v, f"{path}/{i}", out, torch) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_tree_encode(v, f"{path}/{i}", out, torch) for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise CheckpointError(f"state dict: value at {path!r} has type {type(obj).__name__}, "
                          f"which a plain-data checkpoint cannot hold")


def _tree_decode(node: Any, arrays: Mapping[str, np.ndarray], device, torch) -> Any:
    if isinstance(node, list):
        return [_tree_decode(v, arrays, device, torch) for v in node]
    if not isinstance(node, dict):
        return node
    if "__tensor__" in node:
        name = node["__tensor__"]
        if name not in arrays:
            raise CheckpointError(f"state dict: array {name!r} is missing")
        dtype = getattr(torch, node["dtype"])
        return torch.from_numpy(np.array(arrays[name])).to(device=device, dtype=dtype)
    if "__ndarray__" in node:
        return np.array(arrays[node["__ndarray__"]])
    if "__tuple__" in node:
        return tuple(_tree_decode(v, arrays, device, torch) for v in node["__tuple__"])
    if "__dict__" in node:
        return {k: _tree_decode(v, arrays, device, torch) for k, v in node["__dict__"]}
    raise CheckpointError(f"state dict: unknown skeleton node {sorted(node)}")


def state_dict_to_arrays(prefix: str, sd: Mapping[str, Any]) -> Dict[str, np.ndarray]:
    """Module or optimizer state_dict -> flat {"<prefix>/...": array} incl. a JSON skeleton array."""
    import torch

    if not prefix or "/" in prefix:
        raise CheckpointError(f"state dict prefix must be a non-empty name without '/', got {prefix!r}")
    out: Dict[str, np.ndarray] = {}
    tree = _tree_encode(sd, prefix, out, torch)
    out[f"{prefix}/{TREE_KEY}"] = _json_bytes(tree)
    return out


def arrays_to_state_dict(prefix: str, arrays: Mapping[str, np.ndarray], device=None) -> Dict[str, Any]:
    """Inverse of :func:`state_dict_to_arrays`: a state dict of torch tensors (on `device`, default cpu)."""
    import torch

    key = f"{prefix}/{TREE_KEY}"
    if key not in arrays:
        raise CheckpointError(f"no state dict {prefix!r} in the checkpoint (array {key!r} missing)")
    try:
        tree = json_from_array(np.asarray(arrays[key]))
    except (ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(f"state dict {prefix!r}: bad JSON skeleton ({one_line(e)})") from None
    return _tree_decode(tree, arrays, device, torch)
