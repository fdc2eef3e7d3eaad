"""A training step written out by hand and traced to an FX graph the way the capture emits one.

The graph has the capture's conventions (``trainer/compile/passes/__init__.py``): placeholders carry
``meta["role"] = (kind, index)`` and the optimizer is one ``trainer_compile::*_param_`` node per
parameter. Each pass's unit test rewrites such a graph and runs it against the same step computed
eagerly with the rewrite's meaning spelled out (summed gradients, clipped gradients, unscaled ...).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import torch
from torch.fx.experimental.proxy_tensor import make_fx

import trainer.compile.ops  # noqa: F401  (registers the trainer_compile::*_param_ ops)

SGD = torch.ops.trainer_compile.sgd_param_.default
ADAM = torch.ops.trainer_compile.adam_param_.default
PARAM_SHAPES = ((8, 4), (8,), (2, 8))  # a 4-8-2 tanh net: w1, b1, w2
SGD_HP = (0.9, 0.0, 0.01, True, False)  # momentum, dampening, weight_decay, nesterov, maximize
ADAM_HP = (0.9, 0.999, 1e-8, 0.01, False, False, True)  # beta1, beta2, eps, wd, amsgrad, maximize, decoupled


def loss_and_grads(params: Sequence[torch.Tensor], x: torch.Tensor, y: torch.Tensor):
    """MSE of the 4-8-2 net and its gradients, backward written out (no autograd in the graph)."""
    w1, b1, w2 = params
    h = torch.tanh(x @ w1.t() + b1)
    out = h @ w2.t()
    d_out = 2 * (out - y) / out.numel()
    d_h = (d_out @ w2) * (1 - h * h)
    return ((out - y) ** 2).mean(), [d_h.t() @ x, d_h.sum(0), d_out.t() @ h]


@dataclass
class ToyStep:
    """The step's flat inputs in the capture's order, with their roles.

    opt: "sgd" (momentum buffers) or "adam" (exp_avg, exp_avg_sq, step per param); accumulate: with
    ``acc`` buffers; scaled: 16-mixed (gradients of ``loss * scale``, ``scale``/``growth`` inputs);
    grad_dtype: the gradients reach the update in this dtype (what autocast can leave); two_groups:
    b1 has its own ``lr`` tensor (a second param group)."""

    opt: str = "sgd"
    accumulate: bool = False
    scaled: bool = False
    grad_dtype: Optional[torch.dtype] = None
    two_groups: bool = False

    def state_kinds(self) -> Tuple[str, ...]:
        return ("momentum_buffer",) if self.opt == "sgd" else ("exp_avg", "exp_avg_sq", "step")

    def roles(self) -> List[Tuple[str, int]]:
        n = len(PARAM_SHAPES)
        out = [("param", i) for i in range(n)]
        out += [(k, i) for k in self.state_kinds() for i in range(n)]
        out += [("acc", i) for i in range(n)] if self.accumulate else []
        out += [("lr", i) for i in range(2 if self.two_groups else 1)]
        out += [("scale", 0), ("growth", 0)] if self.scaled else []
        return out + [("batch", 0), ("batch", 1)]

    def inputs(self, seed: int = 0, x_scale: float = 1.0) -> List[torch.Tensor]:
        """Fresh inputs: the same values for the same seed (the params, state, batch)."""
        g = torch.Generator().manual_seed(seed)
        out: List[torch.Tensor] = []
        for kind, i in self.roles():
            if kind == "param":
                out.append(torch.randn(PARAM_SHAPES[i], generator=g))
            elif kind == "step":
                out.append(torch.tensor(3.0))  # a few steps in: bias corrections are not 0
            elif kind in ("momentum_buffer", "exp_avg", "acc"):
                out.append(torch.randn(PARAM_SHAPES[i], generator=g) * 0.1)
            elif kind == "exp_avg_sq":
                out.append(torch.rand(PARAM_SHAPES[i], generator=g) * 0.01)
            elif kind == "lr":
                out.append(torch.tensor(0.05 if i == 0 else 0.02))
            elif kind == "scale":
                out.append(torch.tensor([1024.0]))
            elif kind == "growth":
                out.append(torch.tensor([0], dtype=torch.int32))
            else:  # batch: x then y
                out.append(torch.randn((5, 4) if i == 0 else (5, 2), generator=g) * (x_scale if i == 0 else 1.0))
        return out

    def split(self, inputs: Sequence[torch.Tensor]) -> dict:
        """{kind: [tensors by index]} of flat inputs."""
        out: dict = {}
        for (kind, i), t in zip(self.roles(), inputs):
            out.setdefault(kind, []).append(t)
        return out

    def lr_of(self, parts: dict, i: int) -> torch.Tensor:
        return parts["lr"][1] if self.two_groups and i == 1 else parts["lr"][0]

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        """The captured step: forward, backward, one update node per parameter; returns the loss."""
        parts = self.split(inputs)
        loss, grads = loss_and_grads(parts["param"], *parts["batch"])
        if self.scaled:
            grads = [g * parts["scale"][0] for g in grads]
        if self.grad_dtype is not None:
            grads = [g.to(self.grad_dtype) for g in grads]
        for i, (p, grad) in enumerate(zip(parts["param"], grads)):
            lr = self.lr_of(parts, i)
            if self.opt == "sgd":
                SGD(p, grad, parts["momentum_buffer"][i], lr, *SGD_HP)
            else:
                ADAM(p, grad, parts["exp_avg"][i], parts["exp_avg_sq"][i], None, parts["step"][i], lr, *ADAM_HP)
        return loss

    def graph(self) -> torch.fx.GraphModule:
        """The step traced with fake tensors, placeholders tagged with their roles."""
        gm = make_fx(self, tracing_mode="fake")(*self.inputs())
        phs = [n for n in gm.graph.nodes if n.op == "placeholder"]
        assert len(phs) == len(self.roles())
        for node, r in zip(phs, self.roles()):
            node.meta["role"] = r
        return gm

    def update_eagerly(self, parts: dict, grads: Sequence[torch.Tensor], clip_coef=None) -> None:
        """The optimizer update of ``grads`` (already final: summed, unscaled), torch.optim's arithmetic."""
        for i, (p, grad) in enumerate(zip(parts["param"], grads)):
            lr = self.lr_of(parts, i)
            if self.opt == "sgd":
                SGD(p, grad, parts["momentum_buffer"][i], lr, *SGD_HP, clip_coef=clip_coef)
            else:
                ADAM(p, grad, parts["exp_avg"][i], parts["exp_avg_sq"][i], None, parts["step"][i], lr, *ADAM_HP,
                     clip_coef=clip_coef)


def rewrite(gm: torch.fx.GraphModule, pass_fn, cfg) -> torch.fx.GraphModule:
    """``pass_fn`` applied as ``run_passes`` applies it: the result lints and is recompiled."""
    gm = pass_fn(gm, [], cfg)
    gm.graph.lint()
    gm.recompile()
    return gm


def clone_all(inputs: Sequence[torch.Tensor]) -> List[torch.Tensor]:
    return [t.clone() for t in inputs]


def calls(gm: torch.fx.GraphModule, target) -> List[torch.fx.Node]:
    return [n for n in gm.graph.nodes if n.op == "call_function" and n.target is target]
