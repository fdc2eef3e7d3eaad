"""Compile choices for the captured step graph on its way into inductor (CPU training).

Measured on the small GPT of ``benchmarks/compare.py`` (2 cores, AVX-512; see
benchmarks/RESULTS.md, "Small GPT, compiled (profile)"): with the GEMMs (MKL, ~20 ms of a ~35 ms
step) and the fused flash-attention kernels (~4 ms) the same ATen calls as in eager, what the
compiled step can win is in what inductor generates around them. Two of its defaults cost more
than eager there:

- ``embedding_dense_backward``: inductor decomposes it into an index_put scatter-add that its C++
  backend runs as one *atomic* float add per element (``atomic_add_vec``; 1024 x 128 per step for
  the token embedding): 0.8 ms, where ATen's kernel takes ~0.05 ms. :func:`decompositions` keeps
  the op whole and registers an explicit ATen fallback lowering for it, so inductor calls ATen's
  kernel (same arithmetic as eager). Relying on inductor's *implicit* fallback instead fails under
  ``CI=1``, where inductor asserts that an op with a decomposition never reaches an implicit fallback.
- ``addmm`` with a broadcast bias: MKL first copies the bias into every row of the output, then
  runs the GEMM with ``beta=1`` (read-modify-write of the output). When every consumer of the
  result is pointwise (GELU, the residual add), ``mm`` plus an ``add`` that inductor fuses into the
  consumer's loop saves that pass over the output. inductor does this itself only on GPUs
  (``should_prefer_unfused_addmm``), and on CPUs it even fuses ``mm`` + bias ``add`` back into
  ``addmm``; :func:`post_grad_pass` does the rewrite after inductor's own post-grad patterns.
"""
from __future__ import annotations

from typing import Any, Callable, Dict

import torch
from torch import fx

aten = torch.ops.aten

# ops a consumer may reach the addmm result through without materialising it elsewhere
_VIEWS = {aten.view.default, aten._unsafe_view.default, aten.reshape.default}
# inductor's fallbacks on CPU that beat its decomposition (see the module docstring)
KEEP_WHOLE = (aten.embedding_dense_backward,)


def _register_fallbacks() -> None:
    """An explicit ATen fallback lowering for each op kept whole. Registered once per process; it
    changes nothing for other compiles, whose decomposition table removes these ops before lowering.
    Inputs are made contiguous, as inductor does for implicit fallbacks in the backward."""
    from torch._inductor import lowering as L

    for packet in KEEP_WHOLE:
        for name in packet.overloads():
            op = getattr(packet, name)
            if op not in L.lowerings:
                L.make_fallback(op, layout_constraint=L.require_contiguous, warn=False,
                                override_decomp=True)


def decompositions() -> Dict[Any, Callable]:
    """inductor's decomposition table without the ops in :data:`KEEP_WHOLE` (which get an explicit
    ATen fallback lowering instead)."""
    from torch._inductor.decomposition import select_decomp_table

    _register_fallbacks()
    return {op: fn for op, fn in select_decomp_table().items()
            if getattr(op, "overloadpacket", None) not in KEEP_WHOLE}


def _pointwise_users(node: fx.Node) -> bool:
    users = list(node.users)
    if not users:
        return False
    for user in users:
        if user.op != "call_function":
            return False
        if user.target in _VIEWS:
            if not _pointwise_users(user):
                return False
        elif torch.Tag.pointwise not in getattr(user.target, "tags", ()):
            return False
    return True


def unfuse_bias_addmm(gm: fx.GraphModule) -> int:
    """``addmm(bias, x, w)`` -> ``add(mm(x, w), bias)`` where the bias is a 1-D row broadcast and every
    consumer of the result is pointwise (so the add fuses into its loop). Returns the count."""
    count = _unfuse_bias_addmm(gm.graph)
    if count:
        gm.graph.lint()
        gm.recompile()
    return count


def _unfuse_bias_addmm(graph: fx.Graph) -> int:
    count = 0
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target is not aten.addmm.default:
            continue
        if node.kwargs.get("beta", 1) != 1 or node.kwargs.get("alpha", 1) != 1 or len(node.args) != 3:
            continue
        bias, x, w = node.args
        val = node.meta.get("val")
        bval = bias.meta.get("val") if isinstance(bias, fx.Node) else None
        if not isinstance(val, torch.Tensor) or not isinstance(bval, torch.Tensor) or bval.dim() != 1:
            continue
        if bval.dtype != val.dtype or not _pointwise_users(node):
            continue
        with graph.inserting_before(node):
            mm = graph.call_function(aten.mm.default, (x, w))
            mm.meta["val"] = val
            add = graph.call_function(aten.add.Tensor, (mm, bias))
            add.meta["val"] = val
        node.replace_all_uses_with(add)
        graph.erase_node(node)
        count += 1
    return count


def post_grad_pass() -> Any:
    """:func:`unfuse_bias_addmm` as inductor's ``post_grad_custom_post_pass``. It has to run there:
    inductor's own post-grad patterns turn ``add(mm(x, w), bias)`` back into ``addmm`` on CPUs
    (``is_valid_addmm_fusion``), so a rewrite of the graph handed to inductor is undone."""
    from torch._inductor.custom_graph_pass import CustomGraphPass, get_hash_for_files

    class UnfuseBiasAddmm(CustomGraphPass):
        def __call__(self, graph: fx.Graph) -> None:
            _unfuse_bias_addmm(graph)

        def uuid(self) -> Any:  # part of the FX graph cache key
            return get_hash_for_files((__file__,))

    return UnfuseBiasAddmm()


__all__ = ["KEEP_WHOLE", "decompositions", "post_grad_pass", "unfuse_bias_addmm"]
