"""Optimizer fusion: the per-parameter update nodes become ONE multi-tensor update call.

Nodes with the same op, the same hyperparameters and the same ``lr`` tensor (one parameter
group) are replaced by one call placed after the last of them:

- Adam/AdamW -> ``torch.ops.trainer.fused_adamw_`` (``decoupled`` selects AdamW), preceded by
  one ``_foreach_add_(steps, 1)`` (the op expects the count of this update);
- SGD -> ``torch.ops.trainer.fused_sgd_`` (``is_first_step=False``: buffers start at zero,
  equal to torch's copy-of-the-gradient start because dampening is 0);

or, without ``trainer._C``, the foreach torch expressions of :mod:`trainer.compile.ops`, which
inductor fuses into a few loops. The ``clip_coef`` set by ``clipping`` and the ``grad_scale``/
``found_inf`` set by ``amp`` (fp16) are passed through; under fp16 the step count is increased only
for a step that is not skipped.
"""
from __future__ import annotations

from typing import Any, Dict, List, Sequence, Tuple

import torch
from torch import fx

from trainer.compile.ops import ADAM, SGD, count_step, foreach_adam_, foreach_sgd_

from . import StepConfig, update_nodes

aten = torch.ops.aten


def _group_key(node: fx.Node) -> Tuple[Any, ...]:
    args = node.args
    scalars = args[6:] if node.target is ADAM else args[3:]  # lr node onwards (lr, hyperparameters)
    kw = node.kwargs
    return (node.target, tuple(scalars), kw.get("clip_coef"), kw.get("grad_scale"), kw.get("found_inf"))


def optimizer_fusion(gm: fx.GraphModule, example_inputs: Sequence[Any], cfg: StepConfig) -> fx.GraphModule:
    graph = gm.graph
    groups: Dict[Tuple[Any, ...], List[fx.Node]] = {}
    for node in update_nodes(graph):
        groups.setdefault(_group_key(node), []).append(node)
    for key, nodes in groups.items():
        target, scalars, coef, scale, inf = key
        last = nodes[-1]
        col = lambda i: [n.args[i] for n in nodes]  # noqa: E731
        with graph.inserting_after(last):
            if target is ADAM:
                lr, beta1, beta2, eps, wd, amsgrad, maximize, decoupled = scalars
                steps = col(5)
                maxs = col(4) if amsgrad else []
                # fp16: a skipped step is not counted (torch.optim's step() never ran)
                inc = (graph.call_function(aten._foreach_add_.Scalar, (steps, 1)) if inf is None
                       else graph.call_function(count_step, (steps, inf)))
                with graph.inserting_after(inc):
                    if cfg.use_cpp:
                        graph.call_function(torch.ops.trainer.fused_adamw_.default, (
                            col(0), col(1), col(2), col(3), maxs, [], steps, lr, beta1, beta2, eps, wd, amsgrad,
                            maximize, decoupled, scale, inf, coef))
                    else:
                        graph.call_function(foreach_adam_, (
                            col(0), col(1), col(2), col(3), maxs, steps, lr, beta1, beta2, eps, wd, amsgrad, maximize,
                            decoupled, coef, scale, inf))
            else:
                assert target is SGD
                lr, momentum, dampening, wd, nesterov, maximize = scalars
                bufs = col(2) if momentum != 0 else []
                if cfg.use_cpp:
                    graph.call_function(torch.ops.trainer.fused_sgd_.default, (
                        col(0), col(1), bufs, [], lr, momentum, dampening, wd, nesterov, maximize, False, scale, inf,
                        coef))
                else:
                    graph.call_function(foreach_sgd_, (
                        col(0), col(1), bufs, lr, momentum, dampening, wd, nesterov, maximize, coef, scale, inf))
        for node in nodes:
            graph.erase_node(node)
    return gm
