"""Exports from a trained run: triangle meshes (`mesh`), depth maps (`depth`); `command` is the CLI's."""
from taichi_nerf.export.depth import read_depth, render_depth, write_depth
from taichi_nerf.export.errors import ExportError
from taichi_nerf.export.mesh import Mesh, mesh_of_run, write_mesh

__all__ = ["ExportError", "Mesh", "mesh_of_run", "read_depth", "render_depth", "write_depth",
           "write_mesh"]
