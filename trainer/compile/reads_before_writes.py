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

The same context lowers ``aten.bernoulli.p`` (dropout's mask where random ops fall back to ATen, as the
engine has them on the CPU) into a fresh buffer that ``bernoulli_`` fills. Inductor's own lowering fills a
``clone`` of its input in place, and the scheduler could fuse that clone's kernel with the mask's readers
(``mask / (1 - p) * x``): the fused loop read the buffer before ``bernoulli_`` had filled it (torch 2.13: a
dropout MLP beside an embedding with ``max_norm`` trained on uninitialised masks, 1.7e-2 off eager in one
step). A fresh buffer has no kernel to fuse with.
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
        with _bernoulli_into_fresh_buffer():
            yield
    finally:
        GraphLowering.run_node = original  # type: ignore[method-assign]


@contextlib.contextmanager
def _bernoulli_into_fresh_buffer() -> Iterator[None]:
    import torch
    from torch._inductor import ir
    from torch._inductor import lowering as L

    aten = torch.ops.aten
    original = L.lowerings.get(aten.bernoulli.p)
    if original is None:  # pragma: no cover - inductor without this lowering: nothing to replace
        yield
        return

    def bernoulli_p(x: Any, *args: Any) -> Any:
        out = L.empty_strided(list(x.get_size()), None, dtype=x.get_dtype(), device=x.get_device())
        overload = aten.bernoulli_.float if not args or isinstance(args[0], float) else aten.bernoulli_.Tensor
        ir.InplaceBernoulliFallback(overload, out, *args)
        return out

    L.lowerings[aten.bernoulli.p] = bernoulli_p
    try:
        yield
    finally:
        L.lowerings[aten.bernoulli.p] = original


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
