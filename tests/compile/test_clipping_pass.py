"""The ``clipping`` pass on a hand-written step graph: one global norm for all gradients whose
coefficient every update multiplies in (``norm``), or a clamp where the update reads the gradient
(``value``); compared with ``clip_grad_norm_``/``clip_grad_value_`` on the gradients, then the update."""
from __future__ import annotations

import pytest
import torch

from trainer.compile.passes import StepConfig, update_nodes
from trainer.compile.passes.clipping import clipping
from trainer.optim import HAS_CPP

from .pass_graphs import ToyStep, calls, clone_all, loss_and_grads, rewrite

CPP = [pytest.param(True, marks=pytest.mark.skipif(not HAS_CPP, reason="trainer._C not built")), False]


def _run_and_reference(toy, gm, clip_grads):
    """Runs ``gm``; the reference clips the eager gradients with ``clip_grads`` (in place), then updates."""
    inputs = toy.inputs(x_scale=4.0)  # large gradients: the clip is active
    ref = toy.split(clone_all(inputs))
    gm(*inputs)
    _, grads = loss_and_grads(ref["param"], *ref["batch"])
    clip_grads(grads)
    toy.update_eagerly(ref, grads)
    return toy.split(inputs), ref, grads


@pytest.mark.parametrize("use_cpp", CPP)
@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_norm_clipping_is_one_norm_and_a_coefficient_in_every_update(opt, use_cpp):
    toy = ToyStep(opt=opt)
    gm = rewrite(toy.graph(), clipping, StepConfig(variant="step", clip_val=0.5, use_cpp=use_cpp))
    coefs = {u.kwargs.get("clip_coef") for u in update_nodes(gm.graph)}
    assert len(coefs) == 1 and None not in coefs  # one coefficient shared by every update
    norms = [n for n in gm.graph.nodes if n.op == "call_function" and "norm" in str(n.target)]
    assert len(norms) == 1 and len(norms[0].args[0]) == 3  # one norm over all three gradients
    total_norm = {}

    def clip_norm(grads):  # what the eager engine does: clip_grad_norm_ on the .grad tensors, in place
        params = [torch.nn.Parameter(torch.zeros_like(g)) for g in grads]
        for p, g in zip(params, grads):
            p.grad = g
        total_norm["v"] = torch.nn.utils.clip_grad_norm_(params, 0.5, foreach=False)

    parts, ref, _ = _run_and_reference(toy, gm, clip_norm)
    assert total_norm["v"] > 0.5  # the clip was active
    for kind in ("param",) + toy.state_kinds():
        for got, want in zip(parts[kind], ref[kind]):
            torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7, msg=kind)


def test_value_clipping_clamps_each_gradient_exactly():
    toy = ToyStep(opt="adam")
    gm = rewrite(toy.graph(), clipping, StepConfig(variant="step", clip_val=0.05, clip_algorithm="value"))
    assert len(calls(gm, torch.ops.aten.clamp.default)) == 3
    inputs = toy.inputs(x_scale=4.0)
    ref = toy.split(clone_all(inputs))
    gm(*inputs)
    _, grads = loss_and_grads(ref["param"], *ref["batch"])
    assert max(float(g.abs().max()) for g in grads) > 0.05
    toy.update_eagerly(ref, [g.clamp(-0.05, 0.05) for g in grads])
    parts = toy.split(inputs)
    for kind in ("param",) + toy.state_kinds():
        for got, want in zip(parts[kind], ref[kind]):
            assert torch.equal(got, want), kind


def test_untouched_without_a_clip_value_and_on_micro_steps():
    gm = ToyStep().graph()
    code = gm.code
    assert clipping(gm, [], StepConfig(variant="step")).code == code
    assert clipping(gm, [], StepConfig(variant="micro", accumulate=2, clip_val=1.0)).code == code
