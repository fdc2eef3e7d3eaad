"""Mixed precision: the autocast dtype policy, the fp32 boundary of the optimizer, fp16 loss scaling.

The autocast policy itself is applied while the step is captured: ``training_step`` is traced
inside the precision plugin's ``torch.autocast`` context, so the graph holds exactly the casts
the eager engine's dispatcher makes (one policy, no re-implementation to drift). This pass
enforces the other half of the contract on the captured graph: every gradient that reaches an
optimizer update has its parameter's dtype (fp32 master weights), inserting ``_to_copy`` where
autocast left a low-precision gradient, and it records the policy on the graph
(``gm.meta["autocast"]``).

``16-mixed`` (fp16, GradScaler): the capture differentiates ``loss * scale`` where ``scale`` is
the GradScaler's own ``_scale`` tensor (a graph input, role ``scale``), so the gradients are
scaled. On the graphs that update (``step``/``final``, after accumulation so it sees the summed
window) this pass then

- computes ``found_inf`` over all gradients on the device (:func:`trainer.compile.ops.found_inf`),
- hands ``grad_scale``/``found_inf`` to every update node: the update kernel unscales while it
  reads the gradient and skips the step on the device when ``found_inf`` is set (no host sync,
  no separate unscale pass over memory),
- updates the scaler in the graph with ``aten._amp_update_scale_`` on the GradScaler's own
  ``_scale`` and ``_growth_tracker`` tensors, so ``GradScaler.state_dict()`` (and checkpoints)
  are exactly the eager engine's.

Micro-steps (``micro``) only accumulate scaled gradients, as the eager engine's ``.grad`` does.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import fx

from trainer.compile.ops import found_inf

from . import StepConfig, placeholders, update_nodes

aten = torch.ops.aten


def amp(gm: fx.GraphModule, example_inputs: Sequence[Any], cfg: StepConfig) -> fx.GraphModule:
    if cfg.precision not in ("bf16-mixed", "16-mixed"):
        return gm
    gm.meta["autocast"] = torch.bfloat16 if cfg.precision == "bf16-mixed" else torch.float16
    graph = gm.graph
    updates = update_nodes(graph)
    for node in updates:
        param, grad = node.args[0], node.args[1]
        p_val, g_val = param.meta.get("val"), getattr(grad, "meta", {}).get("val")
        if p_val is not None and g_val is not None and g_val.dtype != p_val.dtype:
            with graph.inserting_before(node):
                node.update_arg(1, graph.call_function(aten._to_copy.default, (grad,), {"dtype": p_val.dtype}))
    if cfg.precision != "16-mixed" or not updates or cfg.scaler is None:
        return gm
    scale, growth = placeholders(graph, "scale")[0], placeholders(graph, "growth")[0]
    with graph.inserting_before(updates[0]):
        inf = graph.call_function(found_inf, ([n.args[1] for n in updates],))
    for node in updates:
        node.update_kwarg("grad_scale", scale)
        node.update_kwarg("found_inf", inf)
    growth_factor, backoff_factor, growth_interval = cfg.scaler
    with graph.inserting_after(updates[-1]):
        graph.call_function(aten._amp_update_scale_.default,
                            (scale, growth, inf, growth_factor, backoff_factor, growth_interval))
    return gm
