"""Gradient accumulation: micro-steps add into buffers in place; the update runs once per k.

The capture already differentiates ``loss / k`` (Lightning's normalisation). This pass makes
two graphs out of the one captured step:

- ``micro``: every per-parameter update node becomes ``acc[i].add_(grad[i])``: no update, no
  optimizer state touched, nothing returned but the loss and the logged values.
- ``final``: the update reads ``acc[i] + grad[i]`` and the buffers are zeroed after it, so the
  next window starts clean without a separate zero_grad pass.

With ``k == 1`` (variant ``step``) it does nothing: no buffers exist at all.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import fx

from . import StepConfig, Variant, placeholders, role, update_nodes

aten = torch.ops.aten


def accumulation(gm: fx.GraphModule, example_inputs: Sequence[Any], cfg: StepConfig) -> fx.GraphModule:
    if cfg.accumulate <= 1 or cfg.variant not in (Variant.MICRO, Variant.FINAL):
        return gm
    graph = gm.graph
    updates = update_nodes(graph)
    if not updates:
        return gm
    accs = placeholders(graph, "acc")
    first = updates[0]
    if cfg.variant is Variant.MICRO:
        with graph.inserting_before(first):
            for node in updates:
                graph.call_function(aten.add_.Tensor, (accs[role(node.args[0])[1]], node.args[1]))
        for node in updates:
            graph.erase_node(node)
    else:
        with graph.inserting_before(first):  # all summed grads exist before the first update (clipping needs them)
            summed = [graph.call_function(aten.add.Tensor, (accs[role(n.args[0])[1]], n.args[1])) for n in updates]
        for node, total in zip(updates, summed):
            node.update_arg(1, total)
        with graph.inserting_after(updates[-1]):
            for node in reversed(updates):
                graph.call_function(aten.zero_.default, (accs[role(node.args[0])[1]],))
    graph.eliminate_dead_code()
    return gm
