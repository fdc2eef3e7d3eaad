"""GELU after a GEMM, for the compiled CPU step (``csrc/gelu.cpp``).

In a transformer MLP the exact GELU reads a GEMM's output: ``gelu(addmm(bias, x, w))`` forward and
``gelu_backward(grad, addmm(...))`` backward. inductor turns each into a loop around ATen's
vectorised ``erf`` and Sleef's ``exp`` (with the bias add fused in by :mod:`lowering`).
:func:`fold_bias_gelu` rewrites such a pair before inductor to ``mm`` plus ``trainer::bias_gelu`` /
``trainer::bias_gelu_backward``, kernels that add the bias and evaluate the same erf approximation
as ATen with one cheaper ``exp`` shared by the erf and the density (as close to float64 as ATen's
own GELU; timings: benchmarks/RESULTS.md). Only
float32 CPU graphs whose GELU input is a GEMM output (materialised anyway) are rewritten: a GELU of
anything else stays with inductor, which fuses it into its producer.
"""
from __future__ import annotations

from typing import Any, List, Optional

import torch
from torch import Tensor

from trainer.compile._ext import register_once
from trainer.compile.lowering import VIEW_OPS as _VIEWS
from trainer.compile.lowering import substitute, without_bias


def _register() -> None:
    @torch.library.register_fake("trainer::bias_gelu")
    def _fwd_fake(x: Tensor, bias: Optional[Tensor] = None) -> Tensor:
        return torch.empty_like(x, memory_format=torch.contiguous_format)

    @torch.library.register_fake("trainer::bias_gelu_backward")
    def _bwd_fake(grad: Tensor, x: Tensor, bias: Optional[Tensor] = None) -> Tensor:
        return torch.empty_like(x, memory_format=torch.contiguous_format)


def available() -> bool:
    """Whether ``trainer._C`` has the kernels; registers their fake (shape) functions once."""
    return register_once("bias_gelu", _register)


def _exact(node: Any) -> bool:
    """An exact-GELU node (``approximate="none"``): gelu(self, approximate) or
    gelu_backward(grad_output, self, approximate)."""
    pos = 2 if node.target is torch.ops.aten.gelu_backward.default else 1
    approx = node.args[pos] if len(node.args) > pos else node.kwargs.get("approximate", "none")
    return approx == "none"


def _float32_cpu(node: Any) -> bool:
    val = node.meta.get("val")
    return isinstance(val, Tensor) and val.dtype == torch.float32 and val.device.type == "cpu"


def fold_bias_gelu(gm: Any) -> int:  # noqa: C901
    """``gelu(view(addmm(bias, x, w)))`` and ``gelu_backward(g, view(addmm(...)))`` ->
    ``bias_gelu(view(mm(x, w)), bias)`` and ``bias_gelu_backward(g, view(mm(x, w)), bias)``, where
    every reader of the GEMM's output is such a GELU (through views); and ``gelu``/``gelu_backward``
    of a plain ``mm`` -> the kernels without a bias. Returns how many GEMM outputs were rewritten."""
    if not available():
        return 0
    aten = torch.ops.aten
    graph = gm.graph
    gelus = (aten.gelu.default, aten.gelu_backward.default)
    count = 0
    for gemm in list(graph.nodes):
        if gemm.op != "call_function" or gemm.target not in (aten.addmm.default, aten.mm.default):
            continue
        if not _float32_cpu(gemm):
            continue
        readers: List[Any] = []  # (gelu node, the view it reads the GEMM through)
        ok = bool(gemm.users)
        for view in gemm.users:
            chain = list(view.users) if view.target in _VIEWS else [view]
            x = view if view.target in _VIEWS else gemm
            for node in chain:
                # the GEMM output must be gelu's input or gelu_backward's second input, and nothing else
                if node.op != "call_function" or node.target not in gelus or not _exact(node):
                    ok = False
                elif node.target is aten.gelu.default and node.args[0] is not x:
                    ok = False
                elif node.target is aten.gelu_backward.default and (node.args[1] is not x or node.args[0] is x):
                    ok = False
                else:
                    readers.append(node)
        if not ok or not readers:
            continue
        bias = None
        if gemm.target is aten.addmm.default:
            if gemm.kwargs.get("beta", 1) != 1 or gemm.kwargs.get("alpha", 1) != 1 or len(gemm.args) != 3:
                continue
            bias = gemm.args[0]
            bval = bias.meta.get("val") if isinstance(bias, torch.fx.Node) else None
            gval = gemm.meta["val"]
            if not isinstance(bval, Tensor) or bval.dim() != 1 or bval.shape[0] != gval.shape[-1] \
                    or bval.dtype != torch.float32:
                continue
            without_bias(graph, gemm)
        for node in readers:
            if node.target is aten.gelu.default:
                substitute(graph, node, torch.ops.trainer.bias_gelu.default, (node.args[0], bias))
            else:
                substitute(graph, node, torch.ops.trainer.bias_gelu_backward.default,
                           (node.args[0], node.args[1], bias))
        count += 1
    if count:
        graph.lint()
        gm.recompile()
    return count


__all__ = ["available", "fold_bias_gelu"]
