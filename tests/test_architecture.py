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
    nor taichi_nerf.nn.runtime (which imports torch), nor camera_paths (which loads datasets;
    the pose maths both use is data.poses) or anything above."""
    allowed = (f"{PACKAGE}.data", KERNELS, f"{PACKAGE}.atomic")

    def forbidden(name):
        if within(name, ("torch",)):
            return True
        return within(name, (PACKAGE,)) and name != PACKAGE and not within(name, allowed)

    assert violations(sources("taichi_nerf/data"), forbidden) == []


# The layers of docs/architecture.md, bottom (0) to top: a module may import its own package
# and any layer below its own, never a layer above nor another package of its own layer.
LAYERS = {
    KERNELS: 0,
    f"{PACKAGE}.atomic": 1, f"{PACKAGE}.options": 1,
    f"{PACKAGE}.data": 2,
    f"{PACKAGE}.process": 3, f"{PACKAGE}.render.camera_paths": 3,
    f"{PACKAGE}.nn": 4,
    f"{PACKAGE}.training": 5,
    f"{PACKAGE}.api": 6,
    f"{PACKAGE}.render": 7, f"{PACKAGE}.export": 7, f"{PACKAGE}.viewer": 7,
    f"{PACKAGE}.bench": 8,
    f"{PACKAGE}.cli": 9,
}


def layer_of(name: str) -> Tuple[str, int]:
    """(the LAYERS entry, its rank) that holds module `name`: the longest matching prefix."""
    best = max((p for p in LAYERS if within(name, (p,))), key=len, default=None)
    assert best is not None, f"{name} is in no layer of LAYERS: add it (and to the docs)"
    return best, LAYERS[best]


def test_every_module_has_a_layer():
    for path in sources(PACKAGE, "kernels"):
        name = module_name(path)
        if name != PACKAGE:
            layer_of(name)


def layer_violations(name: str, source: str, is_package: bool = False) -> List[str]:
    """'line: imports dep (why)' for each import in module `name`'s source that breaks the layers."""
    own, rank = layer_of(name)
    bad = []
    for dep, line in imported_modules(source, name, is_package):
        if not within(dep, (PACKAGE,)) or dep == PACKAGE:
            continue
        dep_layer, dep_rank = layer_of(dep)
        if dep_rank > rank or (dep_rank == rank and dep_layer != own):
            bad.append(f"{line}: imports {dep} ({dep_layer}, layer {dep_rank}; "
                       f"{own} is layer {rank})")
    return bad


def test_imports_point_down_the_layers():
    bad = []
    for path in sources(PACKAGE, "kernels"):
        name = module_name(path)
        if name != PACKAGE:  # the lazy API names of __init__ resolve from api on first use
            bad += [f"{path.relative_to(ROOT)}:{v}" for v in
                    layer_violations(name, path.read_text(encoding="utf-8"),
                                     path.name == "__init__.py")]
    assert bad == []


@pytest.mark.parametrize("name, source, ok", [
    (f"{PACKAGE}.nn.ops", "from taichi_nerf.training.trainer import Trainer", False),
    (f"{PACKAGE}.training.trainer", "from taichi_nerf.nn import ops", True),
    (f"{PACKAGE}.render.camera_paths", "from taichi_nerf.render.frames import to_image", False),
    (f"{PACKAGE}.render.frames", "from taichi_nerf.render.camera_paths import CameraPath", True),
    (f"{PACKAGE}.export.mesh", "def f():\n    from taichi_nerf.viewer import app", False),
    (f"{PACKAGE}.export.depth", "from .mesh import Mesh", True),
    (f"{PACKAGE}.kernels.march", "from taichi_nerf.data import poses", False),
])
def test_the_layer_check_sees_upward_and_sideways_imports(name, source, ok):
    assert (layer_violations(name, source) == []) == ok


def test_every_package_folder_is_installed():
    """A folder with an __init__.py that pyproject's package list misses would be left out of a
    non-editable install (the editable one used here would still find it)."""
    import re
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    listed = set(re.findall(r'"(taichi_nerf(?:\.\w+)*)"', text.split("packages =", 1)[1]
                            .split("]", 1)[0]))
    folders = {module_name(p) for p in sources(PACKAGE, "kernels") if p.name == "__init__.py"}
    assert folders == listed


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
    files = [p for p in sources(PACKAGE, "kernels") if ROOT / PACKAGE / "cli" not in p.parents]
    assert violations(files, lambda n: within(n, (f"{PACKAGE}.cli",))) == []


def test_atomic_writes_and_option_errors_need_only_the_standard_library():
    files = [ROOT / PACKAGE / "atomic.py", ROOT / PACKAGE / "options.py"]
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
