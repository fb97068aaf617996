"""Imports point down the layers of docs/architecture.md; checked on the source with `ast`.

Every import counts, at the top of a module or inside a function (a lazy import still
ties the layers together). Nothing here imports the package, so the rules hold whatever
is installed.
"""
import ast
from pathlib import Path
from typing import Iterator, List, Sequence, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "taichi_nerf"
KERNELS = PACKAGE + ".kernels"
# the front ends and what only they build on, top of the stack
UPPER = tuple(f"{PACKAGE}.{m}" for m in ("trainer", "api", "cli", "viewer", "export",
                                          "render_cli", "bench"))


def module_name(path: Path) -> str:
    """Dotted module name of a source file: kernels/ is installed as taichi_nerf.kernels."""
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[0] == "kernels":
        parts = [PACKAGE] + parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imported_modules(source: str, module: str, is_package: bool = False) -> Iterator[Tuple[str, int]]:
    """(dotted name, line) of every module an import in `source` may load: for
    ``from P import a`` both P and P.a, as `a` may be a submodule."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                parent = ".".join(base + ([node.module] if node.module else []))
            else:
                parent = node.module
            yield parent, node.lineno
            for alias in node.names:
                if alias.name != "*":
                    yield f"{parent}.{alias.name}", node.lineno


def sources(*folders: str) -> List[Path]:
    """The .py files under these folders of the repository."""
    files = [p for f in folders for p in sorted((ROOT / f).rglob("*.py"))]
    assert files, f"no sources under {folders}"
    return files


def violations(files: Sequence[Path], forbidden) -> List[str]:
    """'file:line imports name' for each import of a name that `forbidden(name)` rejects."""
    out = []
    for path in files:
        is_package = path.name == "__init__.py"
        for name, line in imported_modules(path.read_text(encoding="utf-8"), module_name(path),
                                           is_package):
            if forbidden(name):
                out.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    return out


def within(name: str, prefixes: Sequence[str]) -> bool:
    """True if module `name` is one of `prefixes` or inside one of them."""
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def test_kernels_need_neither_torch_nor_the_torch_side():
    """kernels/ is the torch-free bottom layer: Taichi and numpy, and itself."""
    def forbidden(name):
        if within(name, ("torch",)):
            return True
        # the bare package is its lazy __init__, which any taichi_nerf.kernels import runs
        return within(name, (PACKAGE,)) and name != PACKAGE and not within(name, (KERNELS,))

    assert violations(sources("kernels"), forbidden) == []


def test_data_loaders_need_only_the_kernels_and_atomic_writes():
    """data/ sits right above kernels/: of ours it imports itself, the kernels (the built-in
    scene renders with Taichi and starts it through kernels.runtime) and atomic. Not torch,
    nor taichi_nerf.runtime (which imports torch), nor camera_paths (which loads datasets;
    the pose maths both use is data.poses) or anything above."""
    allowed = (f"{PACKAGE}.data", KERNELS, f"{PACKAGE}.atomic")

    def forbidden(name):
        if within(name, ("torch",)):
            return True
        return within(name, (PACKAGE,)) and name != PACKAGE and not within(name, allowed)

    assert violations(sources("taichi_nerf/data"), forbidden) == []


@pytest.mark.parametrize("module", ["ops", "field", "render", "occupancy", "cameras", "losses"])
def test_torch_building_blocks_do_not_import_the_layers_above(module):
    files = [ROOT / PACKAGE / f"{module}.py"]
    assert violations(files, lambda n: within(n, UPPER)) == []


def test_process_sits_at_the_data_layer():
    """`process` (video/photos -> COLMAP folder) builds on data/ and atomic only: no torch,
    no Taichi runtime, nothing above; pycolmap and imageio-ffmpeg are its optional extras."""
    allowed = tuple(f"{PACKAGE}.{m}" for m in ("data", "atomic", "process"))

    def forbidden(name):
        if within(name, ("torch", "taichi")):
            return True
        return within(name, (PACKAGE,)) and name != PACKAGE and not within(name, allowed)

    assert violations(sources("taichi_nerf/process"), forbidden) == []


def test_data_loaders_do_not_import_process():
    assert violations(sources("taichi_nerf/data"),
                      lambda n: within(n, (f"{PACKAGE}.process",))) == []


def test_nothing_in_the_package_imports_the_cli():
    files = [p for p in sources(PACKAGE, "kernels") if p != ROOT / PACKAGE / "cli.py"]
    assert violations(files, lambda n: within(n, (f"{PACKAGE}.cli",))) == []


def test_atomic_writes_need_only_the_standard_library():
    files = [ROOT / PACKAGE / "atomic.py"]
    third_party = (PACKAGE, "torch", "taichi", "numpy")
    assert violations(files, lambda n: within(n, third_party)) == []


@pytest.mark.parametrize("source, module, found", [
    ("import torch.nn as nn", f"{KERNELS}.mlp", "torch.nn"),
    ("from taichi_nerf import runtime", f"{KERNELS}.mlp", f"{PACKAGE}.runtime"),
    ("from .. import trainer", f"{PACKAGE}.data.blender", f"{PACKAGE}.trainer"),
    ("def f():\n    from ..cli import main", f"{PACKAGE}.data.blender", f"{PACKAGE}.cli"),
    ("from .specs import MarchSpec", f"{KERNELS}.march", f"{KERNELS}.specs"),
])
def test_the_checker_sees_every_form_of_import(source, module, found):
    assert found in [name for name, _ in imported_modules(source, module)]


def test_the_checker_resolves_a_package_init():
    names = [n for n, _ in imported_modules("from .loader import load_dataset",
                                            f"{PACKAGE}.data", is_package=True)]
    assert f"{PACKAGE}.data.loader" in names
