"""Data-parallel gradient synchronisation inside the step graph (DDP under the compiled engine).

Under ``strategy="ddp"`` the compiled step does not go through ``DistributedDataParallel``'s
forward/backward (its reducer only sees autograd hooks, which a captured graph never fires).
Instead this pass puts the all-reduce into the graph itself, with DDP's numerics:

- gradients are grouped into buckets in *reverse* parameter order (the order backward produces
  them, as DDP's reducer buckets them), at most ``bucket_bytes`` per bucket, one dtype each;
- each bucket is flattened (``cat`` of the gradients' views), multiplied by ``1 / world_size``
  (DDP's reducer multiplies each gradient by ``1 / world_size`` while copying it into the bucket)
  and summed across ranks with ``_c10d_functional.all_reduce`` — torch.distributed's functional
  collective, which inductor lowers to an asynchronous collective on the process group (gloo on
  CPU, NCCL on CUDA);
- the ``all_reduce`` is issued right after the bucket's last gradient is computed and its
  ``wait_tensor`` is placed just before the optimizer update, so the communication of the early
  buckets overlaps the rest of the backward;
- the update nodes read slices of the reduced buckets.

It runs on the graphs that update (``step``/``final``) after the accumulation pass: a ``micro``
graph (the k-1 non-final micro-batches of an accumulation window) has no collective at all, and
the ``final`` graph reduces the window's summed gradients once, as ``DDP.no_sync()`` does in the
eager engine. It runs before ``amp`` and ``clipping`` so that the fp16 inf check and the global
clip norm read the synchronised gradients (the same value on every rank, as in eager DDP).

``cfg.sync`` is ``(group_name, world_size, bucket_bytes)``; ``None`` (one process) does nothing.
"""
from __future__ import annotations

from typing import Any, List, Sequence

import torch
from torch import fx

from . import StepConfig, update_nodes

aten = torch.ops.aten
c10d = torch.ops._c10d_functional


def _buckets(updates: List[fx.Node], bucket_bytes: int) -> List[List[int]]:
    """Indices into ``updates``, in reverse order, cut at ``bucket_bytes`` and at dtype changes."""
    out: List[List[int]] = []
    cur: List[int] = []
    size, dtype = 0, None
    for i in reversed(range(len(updates))):
        val = updates[i].args[0].meta["val"]  # the parameter placeholder: the gradient's shape and dtype
        nbytes = val.numel() * val.element_size()
        if cur and (val.dtype != dtype or size + nbytes > bucket_bytes):
            out.append(cur)
            cur, size = [], 0
        cur.append(i)
        size += nbytes
        dtype = val.dtype
    if cur:
        out.append(cur)
    return out


def gradient_sync(gm: fx.GraphModule, example_inputs: Sequence[Any], cfg: StepConfig) -> fx.GraphModule:
    if cfg.sync is None or not cfg.variant.updates:
        return gm
    group_name, world_size, bucket_bytes = cfg.sync
    graph = gm.graph
    updates = update_nodes(graph)
    if not updates:
        return gm
    position = {n: i for i, n in enumerate(graph.nodes)}
    first_update = updates[0]
    for bucket in _buckets(updates, bucket_bytes):
        grads = [updates[i].args[1] for i in bucket]
        vals = [updates[i].args[0].meta["val"] for i in bucket]
        # issue the collective as soon as the bucket's last gradient exists
        last = max(grads, key=lambda g: position.get(g, -1))
        anchor = last if isinstance(last, fx.Node) and position.get(last, -1) >= 0 else first_update.prev
        with graph.inserting_before(anchor.next):  # (inserting_after would stack the new nodes in reverse)
            views = []
            for g, v in zip(grads, vals):
                gv = g.meta.get("val") if isinstance(g, fx.Node) else None
                if gv is not None and gv.dtype != v.dtype:
                    g = graph.call_function(aten._to_copy.default, (g,), {"dtype": v.dtype})
                views.append(graph.call_function(aten.view.default, (g, [-1])))
            flat = graph.call_function(aten.cat.default, (views,)) if len(views) > 1 else views[0]
            scaled = graph.call_function(aten.mul.Tensor, (flat, 1.0 / world_size))
            reduced = graph.call_function(c10d.all_reduce.default, (scaled, "sum", group_name))
        # wait just before the update reads it; then the per-parameter slices
        with graph.inserting_before(first_update):
            done = graph.call_function(c10d.wait_tensor.default, (reduced,))
            offset = 0
            for i, v in zip(bucket, vals):
                n = v.numel()
                piece = graph.call_function(aten.slice.Tensor, (done, 0, offset, offset + n))
                updates[i].update_arg(1, graph.call_function(aten.view.default, (piece, list(v.shape))))
                offset += n
        position = {n: i for i, n in enumerate(graph.nodes)}
    return gm
