"""Mixed precision: the autocast dtype policy and the fp32 boundary of the optimizer.

The autocast policy itself is applied while the step is captured: ``training_step`` is traced
inside the precision plugin's ``torch.autocast`` context, so the graph holds exactly the casts
the eager engine's dispatcher makes (one policy, no re-implementation to drift). This pass
enforces the other half of the contract on the captured graph: every gradient that reaches an
optimizer update has its parameter's dtype (fp32 master weights), inserting ``_to_copy`` where
autocast left a low-precision gradient, and it records the policy on the graph
(``gm.meta["autocast"]``).

fp16 loss scaling (``16-mixed``: scale, unscale + inf check fused into the update, skip on the
device) is not compiled yet: the engine runs ``16-mixed`` through the eager engine (CPU turns
16-mixed into bf16-mixed anyway).
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import fx

from . import StepConfig, update_nodes

aten = torch.ops.aten


def amp(gm: fx.GraphModule, example_inputs: Sequence[Any], cfg: StepConfig) -> fx.GraphModule:
    if cfg.precision != "bf16-mixed":
        return gm
    gm.meta["autocast"] = torch.bfloat16
    graph = gm.graph
    for node in update_nodes(graph):
        param, grad = node.args[0], node.args[1]
        p_val, g_val = param.meta.get("val"), getattr(grad, "meta", {}).get("val")
        if p_val is not None and g_val is not None and g_val.dtype != p_val.dtype:
            with graph.inserting_before(node):
                node.update_arg(1, graph.call_function(aten._to_copy.default, (grad,), {"dtype": p_val.dtype}))
    return gm
