"""Compile choices for the captured step graph on its way into inductor (CPU training).

With the GEMMs and the attention kernels the same ATen calls as in eager, what the compiled step
can win is in what inductor generates around them; where one of inductor's CPU defaults costs more
than eager (profiles and timings: benchmarks/RESULTS.md, "Small GPT, compiled (profile)"), this
module changes it:

- ``embedding_dense_backward``: inductor decomposes it into an index_put scatter-add that its C++
  backend runs as one *atomic* float add per element (``atomic_add_vec``), many times slower than
  ATen's kernel for a token embedding. :func:`decompositions` keeps
  the op whole and registers an explicit ATen fallback lowering for it, so inductor calls ATen's
  kernel (same arithmetic as eager). Relying on inductor's *implicit* fallback instead fails under
  ``CI=1``, where inductor asserts that an op with a decomposition never reaches an implicit fallback.
- ``addmm`` with a broadcast bias: MKL first copies the bias into every row of the output, then
  runs the GEMM with ``beta=1`` (read-modify-write of the output). When every consumer of the
  result is pointwise (GELU, the residual add), ``mm`` plus an ``add`` that inductor fuses into the
  consumer's loop saves that pass over the output. inductor does this itself only on GPUs
  (``should_prefer_unfused_addmm``), and on CPUs it even fuses ``mm`` + bias ``add`` back into
  ``addmm``; :func:`post_grad_pass` does the rewrite after inductor's own post-grad patterns.
- ``gelu_backward`` (exact GELU): the stock decomposition computes ``erf(x/sqrt 2)``, whose
  vectorised form (ATen's ``Vectorized<float>::erf``, Abramowitz-Stegun 7.1.26) evaluates
  ``exp(-x^2/2)`` inside, and then ``exp(-x^2/2)`` once more for the density. :func:`gelu_backward`
  spells the same erf out in pointwise ops so that both uses share one ``exp`` (inductor CSEs it
  within the fused kernel): the same polynomial and constants as ATen's, within 1e-6 of
  ``aten.gelu_backward``.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Optional

import torch
from torch import fx

aten = torch.ops.aten

# ops a consumer may reach the addmm result through without materialising it elsewhere
VIEW_OPS = frozenset({aten.view.default, aten._unsafe_view.default, aten.reshape.default})
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


# ATen's vectorised erf (aten/src/ATen/cpu/vec/vec512/vec512_float.h): erf(s) = sign(s) (1 - r(t) t
# exp(-s^2)), t = 1 / (1 + p |s|), r a quartic in t (Abramowitz-Stegun 7.1.26)
_ERF_P = 0.3275911
_ERF_A = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)
_SQRT1_2 = 0.7071067811865476
_INV_SQRT_2PI = 0.3989422804014327


def gelu_backward(grad: torch.Tensor, x: torch.Tensor, approximate: str = "none") -> torch.Tensor:
    """``aten.gelu_backward`` for the exact GELU with one ``exp`` per element instead of two:
    d/dx [x Phi(x)] = Phi(x) + x phi(x), Phi from ATen's erf approximation, phi = exp(-x^2/2) /
    sqrt(2 pi) taken from the ``exp(-s^2)`` (s = x / sqrt 2) that the erf evaluates anyway."""
    if approximate != "none" or x.dtype != torch.float32:
        return _STOCK_GELU_BACKWARD(grad, x, approximate=approximate)
    s = x * _SQRT1_2
    t = torch.reciprocal(torch.abs(s) * _ERF_P + 1.0)
    a1, a2, a3, a4, a5 = _ERF_A
    r = (((a5 * t + a4) * t + a3) * t + a2) * t + a1
    e = torch.exp(-(s * s))
    erf_abs = 1.0 - r * t * e
    erf = torch.where(s < 0, -erf_abs, erf_abs)
    return grad * ((erf + 1.0) * 0.5 + x * (e * _INV_SQRT_2PI))


_STOCK_GELU_BACKWARD: Callable = None  # type: ignore[assignment]  # set on first use of decompositions()


class DecompTable(dict):
    """The table :func:`decompositions` returns, with a cache key of its own.

    inductor puts a custom decomposition table into its FX-graph (and AOT-autograd) cache key by
    pickling it, and some of its entries are pybind11 functions, which do not pickle: every graph
    compiled with the table would bypass the on-disk caches (a second run of a script recompiling
    everything). This table pickles as a reference to :func:`decompositions` plus a digest of this
    file (what decides the table's contents besides torch's version, already in the key)."""

    def __reduce__(self) -> Any:
        return (_table_for, (_source_digest(),))


def _table_for(digest: str) -> Dict[Any, Callable]:
    return decompositions()


_DIGEST: Optional[str] = None


def _source_digest() -> str:
    global _DIGEST
    if _DIGEST is None:
        import hashlib

        with open(__file__, "rb") as f:
            _DIGEST = hashlib.sha256(f.read()).hexdigest()
    return _DIGEST


def decompositions() -> Dict[Any, Callable]:
    """inductor's decomposition table without the ops in :data:`KEEP_WHOLE` (which get an explicit
    ATen fallback lowering instead), and with :func:`gelu_backward` for the exact GELU."""
    global _STOCK_GELU_BACKWARD
    from torch._inductor.decomposition import select_decomp_table

    _register_fallbacks()
    table = DecompTable((op, fn) for op, fn in select_decomp_table().items()
                        if getattr(op, "overloadpacket", None) not in KEEP_WHOLE)
    if _STOCK_GELU_BACKWARD is None:
        _STOCK_GELU_BACKWARD = table[aten.gelu_backward.default]
    table[aten.gelu_backward.default] = gelu_backward
    return table


def _pointwise_users(node: fx.Node) -> bool:
    users = list(node.users)
    if not users:
        return False
    for user in users:
        if user.op != "call_function":
            return False
        if user.target in VIEW_OPS:
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


def rewrite(gm: fx.GraphModule) -> None:
    """Rewrites of a CPU step graph before it goes to inductor (semantics unchanged): the attention
    gradients written packed where the backward concatenates them (:func:`attention.pack_grads`),
    a fused qkv projection's bias added by the attention kernels (:func:`attention.fold_qkv_bias`),
    the GELU of a GEMM's output by trainer's kernels (:func:`gelu.fold_bias_gelu`)."""
    from trainer.compile import attention, gelu

    attention.pack_grads(gm)
    attention.fold_qkv_bias(gm)
    gelu.fold_bias_gelu(gm)


def substitute(graph: fx.Graph, old: fx.Node, target: Any, args: tuple, kwargs: Optional[dict] = None) -> fx.Node:
    """A call of ``target`` in place of ``old`` (same value, same shape metadata): inserted before it,
    ``old``'s readers moved to it, ``old`` erased. Returns the new node."""
    with graph.inserting_before(old):
        new = graph.call_function(target, args, kwargs or {})
    new.meta["val"] = old.meta.get("val")
    old.replace_all_uses_with(new)
    graph.erase_node(old)
    return new


def without_bias(graph: fx.Graph, addmm: fx.Node) -> fx.Node:
    """Replaces ``addmm(bias, x, w)`` by ``mm(x, w)`` in place (for a rewrite that adds the bias
    elsewhere) and returns the ``mm`` node."""
    return substitute(graph, addmm, aten.mm.default, tuple(addmm.args[1:]))


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


__all__ = ["KEEP_WHOLE", "VIEW_OPS", "decompositions", "gelu_backward", "post_grad_pass", "rewrite",
           "substitute", "unfuse_bias_addmm", "without_bias"]
