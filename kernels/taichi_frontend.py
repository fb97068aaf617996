"""A faster Taichi 1.7 frontend: each source position's message is built once, not per use.

Taichi turns a kernel's Python AST into its IR on every run, cached kernels included,
and for every statement and expression it visits it formats a "File ..., line ..."
message with the source line and a caret hint (``ASTTransformerContext.get_pos_info``,
``textwrap`` wrapping included). A ``ti.func`` inlined once per hash level or per
corner is visited again at each call site, so the same messages were built thousands
of times: about half of the frontend's time before a training run's first step
(BENCHMARKS 6c). :func:`install` memoizes that method; the strings are the ones
Taichi builds (the same error messages, the same debug info, so the same offline
cache keys). Installed by :func:`taichi_nerf.kernels.runtime.init`, never at import.
"""
from __future__ import annotations

from typing import Any, Dict, Tuple

_installed = False
_memo: Dict[Tuple[Any, ...], str] = {}


def _context_class():
    """Taichi's AST-transformer context class, or None where its layout is not 1.7's."""
    try:
        from taichi.lang.ast import ast_transformer_utils as utils
    except ImportError:
        return None
    cls = getattr(utils, "ASTTransformerContext", None)
    return cls if callable(getattr(cls, "get_pos_info", None)) else None


def position_key(ctx: Any, node: Any) -> Tuple[Any, ...]:
    """Everything ``get_pos_info(ctx, node)`` reads: the function's file, first line, indent,
    name, first source line and length, and the node's type and span (plus its body's first
    line, which bounds a multi-line For/While/If/def)."""
    body = getattr(node, "body", None)
    first_body_line = body[0].lineno if isinstance(body, list) and body else None
    return (ctx.file, ctx.lineno_offset, ctx.indent, ctx.func.func.__name__,
            ctx.src[0] if ctx.src else "", len(ctx.src), type(node).__name__, node.lineno,
            node.end_lineno, node.col_offset, node.end_col_offset, first_body_line)


def install() -> bool:
    """Memoize Taichi's source-position messages (idempotent) -> True if installed; False
    (Taichi left as it is) where Taichi lacks the 1.7 frontend method it wraps."""
    global _installed
    if _installed:
        return True
    cls = _context_class()
    if cls is None:
        return False
    build = cls.get_pos_info

    def get_pos_info(self, node):
        key = position_key(self, node)
        msg = _memo.get(key)
        if msg is None:
            msg = _memo[key] = build(self, node)
        return msg

    get_pos_info.__wrapped__ = build
    cls.get_pos_info = get_pos_info
    _installed = True
    return True
