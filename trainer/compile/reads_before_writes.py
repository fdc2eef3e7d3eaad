"""Reads of a buffer that a later in-place op overwrites are computed before that op (an inductor fix).

Inductor lowers pointwise work lazily: a value such as ``loss`` or a logged ``self.w[0] * 2`` may stay an
unrealized expression over a parameter until something needs it as a buffer. When an in-place op that
overwrites the parameter is lowered (the optimizer update: a ``FallbackKernel`` for ``trainer::fused_*_``
or ``trainer_compile::*_param_``), ``GraphLowering.mark_buffer_mutated`` realizes those pending readers, but
only after the mutating kernel has been registered, so the scheduler orders the reads after the write and
the step returns (and logs) the value computed from the *updated* parameter (torch 2.13: e.g. a 1-element
linear's loss, or any logged pointwise function of a weight).

:func:`realize_reads_before_writes` realizes those readers before the mutating node is lowered, so they are
registered (and scheduled) first. It patches ``GraphLowering.run_node`` only while the engine's own graphs
compile; a user's ``torch.compile`` elsewhere in the process is left alone. Code compiled without the fix
must not come back from inductor's on-disk caches: :func:`cache_key_pass` puts this file's digest into
their key.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator, List

from torch import fx


def _written_args(node: fx.Node) -> List[fx.Node]:
    """FX nodes that ``node`` overwrites in place, from its schema's ``(a!)`` annotations."""
    schema = getattr(node.target, "_schema", None)
    if node.op != "call_function" or schema is None or not schema.is_mutable:
        return []
    out: List[fx.Node] = []
    for i, arg in enumerate(schema.arguments):
        if arg.alias_info is None or not arg.alias_info.is_write:
            continue
        value = node.args[i] if i < len(node.args) else node.kwargs.get(arg.name)
        for v in (value if isinstance(value, (list, tuple)) else [value]):
            if isinstance(v, fx.Node):
                out.append(v)
    return out


def _realize_readers(lowering: Any, node: fx.Node) -> None:
    for arg in _written_args(node):
        value = lowering.env.get(arg)
        try:
            name = value.get_name()
        except Exception:  # not a named buffer (a view, a constant): nothing lazy reads it by name
            continue
        for user in list(lowering.name_to_users.get(name, ())):
            user.realize()


@contextlib.contextmanager
def realize_reads_before_writes() -> Iterator[None]:
    """Within it, inductor realizes every pending read of a buffer before lowering an op that overwrites it."""
    from torch._inductor.graph import GraphLowering

    original = GraphLowering.run_node

    def run_node(self: Any, n: fx.Node) -> object:
        _realize_readers(self, n)
        return original(self, n)

    GraphLowering.run_node = run_node  # type: ignore[method-assign]
    try:
        yield
    finally:
        GraphLowering.run_node = original  # type: ignore[method-assign]


def cache_key_pass() -> Any:
    """A no-op ``post_grad_custom_pre_pass`` whose uuid (part of the FX graph and AOT cache keys) is this
    file's digest: graphs cached before the fix, or by another version of it, are compiled again."""
    from torch._inductor.custom_graph_pass import CustomGraphPass, get_hash_for_files

    class ReadsBeforeWrites(CustomGraphPass):
        def __call__(self, graph: fx.Graph) -> None:
            return None

        def uuid(self) -> Any:
            return get_hash_for_files((__file__,))

    return ReadsBeforeWrites()


__all__ = ["cache_key_pass", "realize_reads_before_writes"]
