"""Short-sequence attention for the compiled CPU step (``csrc/attention.cpp``).

While the training step is captured on the CPU, calls of ``F.scaled_dot_product_attention`` that
this kernel covers are traced as ``trainer::small_attention_fwd`` (and its backward,
``trainer::small_attention_bwd``) instead of ATen's flash-attention kernels, which are blocked for
long sequences: at the sizes of small language models (sequence <= 128, head size <= 128) one
(batch, head) pair fits in the caches and is best done in one go (timings: benchmarks/RESULTS.md).
Results agree with ATen's within float rounding.

Covered: float32 CPU tensors ``[B, H, T, D]`` of one shape with a contiguous head dimension, no
``attn_mask``, ``dropout_p=0``, causal or not, any ``scale``, no GQA. Anything else goes to
``F.scaled_dot_product_attention`` unchanged. ``CompileConfig(cpu_attention=False)`` turns the
substitution off.
"""
from __future__ import annotations

import math
import operator
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import TorchFunctionMode

from trainer.compile._ext import register_once
from trainer.compile.lowering import VIEW_OPS as _VIEWS
from trainer.compile.lowering import substitute, without_bias

MAX_T = 128  # measured: 1.0-1.5x ATen's flash kernels up to 128; mixed (0.8-1.1x) at 256
MAX_D = 128

def available() -> bool:
    """Whether ``trainer._C`` (with the attention kernels) is built; registers the Python parts once."""
    return register_once("small_attention_fwd", _register)


def _empty_bhtd(q: Tensor) -> Tensor:
    # the kernel's output layout: [B, T, H, D]-contiguous, seen as [B, H, T, D]
    b, h, t, d = q.shape
    return q.new_empty((b, t, h, d)).transpose(1, 2)


def _register() -> None:
    @torch.library.register_fake("trainer::small_attention_fwd")
    def _fwd_fake(q: Tensor, k: Tensor, v: Tensor, causal: bool, scale: float, q_bias: Optional[Tensor] = None,
                  k_bias: Optional[Tensor] = None, v_bias: Optional[Tensor] = None):
        b, h, t, _ = q.shape
        return _empty_bhtd(q), q.new_empty((b, h, t, t))

    @torch.library.register_fake("trainer::small_attention_bwd")
    def _bwd_fake(grad_out: Tensor, q: Tensor, k: Tensor, v: Tensor, p: Tensor, causal: bool, scale: float,
                  q_bias: Optional[Tensor] = None, k_bias: Optional[Tensor] = None, v_bias: Optional[Tensor] = None):
        return _empty_bhtd(q), _empty_bhtd(q), _empty_bhtd(q)

    @torch.library.register_fake("trainer::small_attention_bwd_packed")
    def _bwd_packed_fake(grad_out: Tensor, q: Tensor, k: Tensor, v: Tensor, p: Tensor, causal: bool, scale: float,
                         q_bias: Optional[Tensor] = None, k_bias: Optional[Tensor] = None,
                         v_bias: Optional[Tensor] = None):
        b, h, t, d = q.shape
        return q.new_empty((b, t, 3 * h * d))


def _only_user(node: Any) -> Any:
    users = list(node.users)
    return users[0] if len(users) == 1 else None


def pack_grads(gm: Any) -> int:
    """Where the backward of a fused qkv projection concatenates the three attention gradients
    (``cat([dq, dk, dv] as [B, T, H * D], -1)``, the split's backward), have the kernel write them
    into that packed tensor itself (``small_attention_bwd_packed``): no copy of dq, dk and dv, no
    three separate buffers. Returns how many backward calls were rewritten."""
    if not available() or not hasattr(torch.ops.trainer, "small_attention_bwd_packed"):
        return 0
    aten = torch.ops.aten
    graph = gm.graph
    count = 0
    for bwd in list(graph.nodes):
        if bwd.op != "call_function" or bwd.target is not torch.ops.trainer.small_attention_bwd.default:
            continue
        items = sorted(bwd.users, key=lambda n: n.args[1] if n.target is operator.getitem else -1)
        if len(items) != 3 or any(n.target is not operator.getitem or n.args[1] != i for i, n in enumerate(items)):
            continue
        qval = bwd.args[1].meta.get("val")
        if not isinstance(qval, Tensor):
            continue
        b, h, t, d = qval.shape
        chain, views = [], []
        for item in items:
            tr = _only_user(item)
            if tr is None or tr.target is not aten.transpose.int or sorted(tr.args[1:]) != [1, 2]:
                break
            view = _only_user(tr)
            if view is None or view.target not in _VIEWS or list(view.args[1]) != [b, t, h * d]:
                break
            chain += [view, tr, item]
            views.append(view)
        else:
            cat = _only_user(views[0])
            if (cat is None or cat.target is not aten.cat.default or list(cat.args[0]) != views
                    or (cat.args[1] if len(cat.args) > 1 else cat.kwargs.get("dim", 0)) not in (2, -1)):
                continue
            substitute(graph, cat, torch.ops.trainer.small_attention_bwd_packed.default, bwd.args, dict(bwd.kwargs))
            for node in chain:
                graph.erase_node(node)
            graph.erase_node(bwd)
            count += 1
    if count:
        graph.lint()
        gm.recompile()
    return count


def _ops() -> tuple:
    t = torch.ops.trainer
    return (t.small_attention_fwd.default, t.small_attention_bwd.default, t.small_attention_bwd_packed.default)


def fold_qkv_bias(gm: Any) -> int:  # noqa: C901
    """Where q, k and v are the heads of one biased projection (``addmm(bias, x, w)`` -> view
    ``[B, T, 3 * H * D]`` -> ``split(H * D, 2)`` -> each ``view [B, T, H, D]`` -> ``transpose(1, 2)``)
    read by these kernels only, the projection becomes ``mm(x, w)`` and the kernels add the bias as
    they load q, k, v (``q_bias``, ``k_bias``, ``v_bias``): ``addmm`` otherwise copies the bias into
    every row of its output before the GEMM. The bias gradient (a sum over the packed gradient) is
    unchanged. Returns how many projections were rewritten."""
    if not available():
        return 0
    aten = torch.ops.aten
    graph = gm.graph
    ops = _ops()
    count = 0
    for fwd in list(graph.nodes):
        if fwd.op != "call_function" or fwd.target is not ops[0] or fwd.kwargs:
            continue
        heads = fwd.args[:3]
        chains = []
        for i, tr in enumerate(heads):
            view = tr.args[0] if tr.target is aten.transpose.int and sorted(tr.args[1:]) == [1, 2] else None
            item = view.args[0] if view is not None and view.target in _VIEWS and len(view.users) == 1 else None
            if item is None or item.target is not operator.getitem or item.args[1] != i or len(item.users) != 1:
                break
            chains.append((tr, view, item))
        else:
            split = chains[0][2].args[0]
            if any(c[2].args[0] is not split for c in chains) or split.target is not aten.split.Tensor:
                continue
            qval = fwd.args[0].meta.get("val")
            if not isinstance(qval, Tensor):
                continue
            b, h, t, d = qval.shape
            dim = split.args[2] if len(split.args) > 2 else split.kwargs.get("dim", 0)
            packed_view = split.args[0]
            if split.args[1] != h * d or dim not in (2, -1) or len(split.users) != 3:
                continue
            if packed_view.target not in _VIEWS or list(packed_view.args[1]) != [b, t, 3 * h * d] \
                    or len(packed_view.users) != 1:
                continue
            mm = packed_view.args[0]
            if mm.target is not aten.addmm.default or len(mm.users) != 1 or len(mm.args) != 3 \
                    or mm.kwargs.get("beta", 1) != 1 or mm.kwargs.get("alpha", 1) != 1:
                continue
            bias = mm.args[0]
            bval = bias.meta.get("val") if isinstance(bias, torch.fx.Node) else None
            if not isinstance(bval, Tensor) or bval.shape != (3 * h * d,) or bval.dtype != torch.float32:
                continue
            # every reader of q, k, v must be one of these kernels, with q, k, v in their places
            readers = {u for tr, _, _ in chains for u in tr.users}
            if not all(u.op == "call_function" and u.target in ops and not u.kwargs
                       and tuple(u.args[:3] if u.target is ops[0] else u.args[1:4]) == tuple(heads)
                       for u in readers):
                continue
            kwargs, cursor = {}, without_bias(graph, mm)
            for i, key in enumerate(("q_bias", "k_bias", "v_bias")):
                with graph.inserting_after(cursor):
                    part = graph.call_function(aten.slice.Tensor, (bias, 0, i * h * d, (i + 1) * h * d))
                part.meta["val"] = bval[i * h * d:(i + 1) * h * d]
                with graph.inserting_after(part):
                    cursor = kwargs[key] = graph.call_function(aten.view.default, (part, [h, d]))
                cursor.meta["val"] = part.meta["val"].view(h, d)
            for u in readers:
                u.kwargs = kwargs
            count += 1
    if count:
        graph.lint()
        gm.recompile()
    return count



class _SmallAttention(torch.autograd.Function):
    """Forward and backward kernels as one differentiable op (the functorch form: ``setup_context``,
    so ``torch.func.grad`` in the capture differentiates it)."""

    @staticmethod
    def forward(q: Tensor, k: Tensor, v: Tensor, causal: bool, scale: float) -> Any:
        return torch.ops.trainer.small_attention_fwd(q, k, v, causal, scale)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: tuple) -> None:
        q, k, v, causal, scale = inputs
        ctx.save_for_backward(q, k, v, output[1])
        ctx.causal, ctx.scale = causal, scale
        ctx.mark_non_differentiable(output[1])

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor, grad_p: Optional[Tensor]) -> tuple:
        q, k, v, p = ctx.saved_tensors
        dq, dk, dv = torch.ops.trainer.small_attention_bwd(grad_out, q, k, v, p, ctx.causal, ctx.scale)
        return dq, dk, dv, None, None


def covers(q: Any, k: Any, v: Any, attn_mask: Any = None, dropout_p: float = 0.0, enable_gqa: bool = False) -> bool:
    if attn_mask is not None or dropout_p != 0.0 or enable_gqa:
        return False
    if not all(isinstance(t, Tensor) for t in (q, k, v)):
        return False
    if q.dim() != 4 or k.shape != q.shape or v.shape != q.shape:
        return False
    if any(t.dtype != torch.float32 or t.device.type != "cpu" or t.stride(-1) != 1 for t in (q, k, v)):
        return False
    return 0 < q.shape[2] <= MAX_T and 0 < q.shape[3] <= MAX_D


def small_attention(q: Tensor, k: Tensor, v: Tensor, is_causal: bool = False, scale: Optional[float] = None) -> Tensor:
    s = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    return _SmallAttention.apply(q, k, v, bool(is_causal), s)[0]


class SmallAttention(TorchFunctionMode):
    """Routes the covered ``F.scaled_dot_product_attention`` calls to :func:`small_attention`."""

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: Optional[dict] = None) -> Any:
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention:
            names = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")
            bound = dict(zip(names, args))
            bound.update(kwargs)
            q, k, v = bound.get("query"), bound.get("key"), bound.get("value")
            if covers(q, k, v, bound.get("attn_mask"), bound.get("dropout_p", 0.0), bound.get("enable_gqa", False)):
                return small_attention(q, k, v, bound.get("is_causal", False), bound.get("scale"))
        return func(*args, **kwargs)


__all__ = ["MAX_D", "MAX_T", "SmallAttention", "available", "covers", "fold_qkv_bias", "pack_grads",
           "small_attention"]
