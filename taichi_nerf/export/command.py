"""The `export` command's checks and actions on a loaded run (mesh, depth maps, camera path)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from taichi_nerf.data.scene import SceneTransform
from taichi_nerf.export.depth import render_depth, write_depth
from taichi_nerf.export.errors import ExportError
from taichi_nerf.export.mesh import MAX_RESOLUTION, MESH_SUFFIXES, mesh_of_run, write_mesh
from taichi_nerf.render.camera_paths import check_path_options


def _check_writable_file(path: Path, what: str) -> None:
    if path.is_dir():
        raise ExportError(f"{path}: cannot write {what}, a folder has this name")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        why = "is not a folder" if parent.exists() else "does not exist"
        raise ExportError(f"{path}: cannot write {what}, {parent} {why}")
    if not os.access(parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise ExportError(f"{path}: cannot write {what}, permission denied")


def _check_out_dir(path: Path) -> None:
    """ExportError unless folder `path` exists writable or can be created (nothing is created yet)."""
    if path.exists():
        if not path.is_dir():
            raise ExportError(f"{path}: cannot create the --depth folder, a file has this name")
        if not os.access(path, os.W_OK | os.X_OK):
            raise ExportError(f"{path}: cannot write depth maps, permission denied")
        return
    anc = path.absolute().parent
    while not anc.exists():
        anc = anc.parent
    if not anc.is_dir():
        raise ExportError(f"{path}: cannot create the --depth folder, {anc} is not a folder")
    if not os.access(anc, os.W_OK | os.X_OK):
        raise ExportError(f"{path}: cannot create the --depth folder in {anc}, permission denied")


def run_export(a, cfg: Mapping[str, Any], renderer, scene: SceneTransform, checkpoint: Path,
               say: Callable[[str], None]) -> None:
    """Carry out `taichi-nerf export` (args `a` checked by :func:`check_export_args`) with a loaded run."""
    from taichi_nerf.render.camera_paths import resolve_path, save_camera_path

    if a.mesh is not None:
        mesh = mesh_of_run(renderer, scene, a.resolution, a.threshold,
                           colors=not a.no_colors, progress=not a.quiet)
        try:
            write_mesh(a.mesh, mesh, binary=not a.ascii)
        except OSError as e:
            raise ExportError(f"{a.mesh}: cannot write ({e.strerror or e})") from None
        say(f"wrote {a.mesh}: {len(mesh.vertices)} vertices, {len(mesh.faces)} faces "
            f"(level sigma = {a.threshold:g}, resolution {a.resolution}, world units)")
    if a.depth is not None or a.camera_path is not None:
        path = resolve_path(a.path, cfg, checkpoint, a.frames, a.elevation, a.split,
                            a.width, a.height, a.radius, holdout=a.holdout)
        if a.camera_path is not None:
            try:
                save_camera_path(a.camera_path, path)
            except OSError as e:
                raise ExportError(f"{a.camera_path}: cannot write ({e.strerror or e})") from None
            say(f"wrote {a.camera_path}: {len(path)} cameras ({a.path})")
        if a.depth is not None:
            depths = render_depth(renderer, scene, path, progress=not a.quiet)
            try:
                meta = write_depth(a.depth, depths, path, a.format)
            except OSError as e:
                raise ExportError(f"{a.depth}: cannot write depth maps ({e.strerror or e})") \
                    from None
            unit = (f"{meta['units_per_count']:g} world units per count"
                    if a.format == "png16" else "float32 world units, NaN = no surface")
            say(f"wrote {len(depths)} depth maps to {a.depth} ({a.format}: {unit}; "
                f"see depth_scale.json)")


def check_export_args(a) -> None:
    """ExportError for bad `export` options or unwritable outputs, before any model is loaded."""
    if a.mesh is None and a.depth is None and a.camera_path is None:
        raise ExportError("nothing to export: give --mesh FILE.ply|.obj, --depth OUT_DIR and/or "
                          "--camera-path FILE.json")
    if not 8 <= a.resolution <= MAX_RESOLUTION:
        raise ExportError(f"--resolution must be in [8, {MAX_RESOLUTION}], got {a.resolution}")
    if not (np.isfinite(a.threshold) and a.threshold > 0):
        raise ExportError(f"--threshold must be a finite density > 0, got {a.threshold}")
    check_path_options(a.frames, a.elevation, a.width, a.height, a.radius)
    if a.mesh is not None:
        if a.mesh.suffix.lower() not in MESH_SUFFIXES:
            raise ExportError(f"{a.mesh}: --mesh must end in .ply or .obj")
        _check_writable_file(a.mesh, "the mesh")
    if a.camera_path is not None:
        if a.camera_path.suffix.lower() != ".json":
            raise ExportError(f"{a.camera_path}: --camera-path must end in .json")
        _check_writable_file(a.camera_path, "the camera path")
    if a.depth is not None:
        _check_out_dir(a.depth)
