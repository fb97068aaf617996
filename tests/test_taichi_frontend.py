"""The memoized source positions of Taichi's frontend give Taichi's own strings."""
import ast

import pytest
import taichi as ti
from taichi.lang import kernel_impl
from taichi.lang.ast import ast_transformer_utils as utils

from taichi_nerf.kernels import hash_grid, march, occupancy, taichi_frontend
from taichi_nerf.kernels import runtime as krt


def _contexts():
    """(ctx, tree) of module-level ti.funcs from three kernel modules: many nodes, some with
    the same spans in different functions and files."""
    funcs = [hash_grid.level_corners_at, hash_grid.level_lookup_at, hash_grid.grid_index,
             hash_grid.mul_mod_pow2]
    funcs += [f for mod in (march, occupancy) for f in vars(mod).values()
              if getattr(f, "_is_taichi_function", False)]
    assert len(funcs) > 5
    for f in funcs:
        tree, ctx = kernel_impl._get_tree_and_ctx(f.func, is_kernel=False)
        yield ctx, tree


def test_memoized_positions_are_taichis_strings():
    assert taichi_frontend.install()
    build = utils.ASTTransformerContext.get_pos_info
    original = build.__wrapped__
    assert build is not original
    pairs = [(ctx, node) for ctx, tree in _contexts() for node in ast.walk(tree)
             if isinstance(node, (ast.stmt, ast.expr))]
    assert len(pairs) > 500
    # first through the memo (filling it from every function), then each against Taichi's own
    memo = [build(ctx, node) for ctx, node in pairs]
    again = [build(ctx, node) for ctx, node in pairs]
    taichis = [original(ctx, node) for ctx, node in pairs]
    assert memo == again == taichis
    # the key holds all the message depends on: one string per key
    by_key = {}
    for (ctx, node), msg in zip(pairs, taichis):
        by_key.setdefault(taichi_frontend.position_key(ctx, node), set()).add(msg)
    assert all(len(v) == 1 for v in by_key.values())


def test_install_is_idempotent():
    assert taichi_frontend.install()
    first = utils.ASTTransformerContext.get_pos_info
    assert taichi_frontend.install()
    assert utils.ASTTransformerContext.get_pos_info is first


@ti.func
def _bad_level(x):
    ti.static_assert(False, "no such level")  # the error below must point here
    return x


def test_compile_errors_still_name_the_line():
    krt.init("cpu")

    @ti.kernel
    def k() -> ti.f32:
        s = 0.0
        for i in ti.static(range(3)):  # the same node, inlined three times
            s += _bad_level(1.0)
        return s

    with pytest.raises(ti.TaichiCompilationError) as err:
        k()
    msg = str(err.value)
    line = _bad_level.func.func.__code__.co_firstlineno + 2
    assert f"line {line}, in _bad_level" in msg
    assert "no such level" in msg and "static_assert" in msg and "^" in msg
