"""Gradient clipping folded into the optimizer update.

- ``norm``: ONE global-norm node over all gradients (``torch.ops.trainer.grad_norm`` when
  ``trainer._C`` is loaded, else the foreach norm ``clip_grad_norm_`` uses), then
  ``clip_coef = min(1, max_norm / (norm + 1e-6))`` which is passed to every update node's
  ``clip_coef`` argument: the update kernel multiplies it in while it reads the gradient, so
  the gradients are never rewritten in a separate pass over memory.
- ``value``: each gradient is clamped to ``[-v, v]`` where the update reads it (inductor fuses
  the clamp into the kernel that produces the gradient).

Runs on the graphs that update (``step``/``final``) after accumulation, so it sees the summed
gradients, as the eager engine clips the accumulated ``.grad``.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import fx

from trainer.compile.ops import foreach_grad_norm, foreach_grad_norm_unscaled

from . import StepConfig, update_nodes

aten = torch.ops.aten


def clip_coef(graph: fx.Graph, total_norm: fx.Node, max_norm: float) -> fx.Node:
    """``clamp(max_norm / (total_norm + 1e-6), max=1)`` as ``clip_grad_norm_`` computes it, emitted as the
    ATen ops eager runs (``float / Tensor`` is ``reciprocal`` then ``mul``): no Python function in the
    graph, which AOT autograd's cache could not key (it would trace and compile the step again in
    every new process)."""
    shifted = graph.call_function(aten.add.Tensor, (total_norm, 1e-6))
    coef = graph.call_function(aten.mul.Tensor, (graph.call_function(aten.reciprocal.default, (shifted,)), max_norm))
    return graph.call_function(aten.clamp.default, (coef, None, 1.0))


def clipping(gm: fx.GraphModule, example_inputs: Sequence[Any], cfg: StepConfig) -> fx.GraphModule:
    if not cfg.clip_val or not cfg.variant.updates:
        return gm
    graph = gm.graph
    updates = update_nodes(graph)
    if not updates:
        return gm
    first = updates[0]
    scale = first.kwargs.get("grad_scale")  # 16-mixed: the gradients are still scaled here
    if cfg.clip_algorithm == "value":
        with graph.inserting_before(first):
            if scale is None:
                lo, hi = -cfg.clip_val, cfg.clip_val
                op = aten.clamp.default
            else:  # clamp(g, +-v*s) / s == clamp(g / s, +-v) exactly: s is a power of two
                hi = graph.call_function(aten.mul.Tensor, (scale, cfg.clip_val))
                lo = graph.call_function(aten.neg.default, (hi,))
                op = aten.clamp.Tensor
            for node in updates:
                node.update_arg(1, graph.call_function(op, (node.args[1], lo, hi)))
        return gm
    grads = [n.args[1] for n in updates]
    with graph.inserting_before(first):
        if scale is None:
            norm_fn = torch.ops.trainer.grad_norm.default if cfg.use_cpp else foreach_grad_norm
            norm = graph.call_function(norm_fn, (grads,))
        elif cfg.use_cpp:
            norm = graph.call_function(torch.ops.trainer.grad_norm.default, (grads, scale))
        else:
            norm = graph.call_function(foreach_grad_norm_unscaled, (grads, scale))
        coef = clip_coef(graph, norm, float(cfg.clip_val))
    for node in updates:
        node.update_kwarg("clip_coef", coef)
    return gm
