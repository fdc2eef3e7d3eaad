"""The ``amp`` pass on a hand-written step graph: low-precision gradients reach the fp32 update as
fp32; under 16-mixed the update unscales, skips on inf/nan without a host sync, and the GradScaler's
own scale/growth tensors are updated in the graph as ``GradScaler.update()`` would."""
from __future__ import annotations

import pytest
import torch

from trainer.compile.passes import StepConfig, update_nodes
from trainer.compile.passes.amp import amp
from trainer.compile.passes.clipping import clipping

from .pass_graphs import ToyStep, calls, clone_all, loss_and_grads, rewrite

SCALER = (2.0, 0.5, 2000)  # GradScaler's defaults: growth, backoff, interval


def test_bf16_gradients_reach_the_update_as_fp32():
    toy = ToyStep(opt="adam", grad_dtype=torch.bfloat16)
    gm = rewrite(toy.graph(), amp, StepConfig(variant="step", precision="bf16-mixed"))
    assert gm.meta["autocast"] is torch.bfloat16
    for u in update_nodes(gm.graph):
        cast = u.args[1]
        assert cast.target is torch.ops.aten._to_copy.default and cast.kwargs["dtype"] is torch.float32
    inputs = toy.inputs()
    ref = toy.split(clone_all(inputs))
    gm(*inputs)
    _, grads = loss_and_grads(ref["param"], *ref["batch"])
    toy.update_eagerly(ref, [g.to(torch.bfloat16).float() for g in grads])
    for kind in ("param",) + toy.state_kinds():
        for got, want in zip(toy.split(inputs)[kind], ref[kind]):
            assert torch.equal(got, want), kind


def test_full_precision_graph_is_untouched():
    gm = ToyStep().graph()
    code = gm.code
    assert amp(gm, [], StepConfig(variant="step", precision="32-true")).code == code


def _fp16_graph(toy, clip_val=None, scaler=SCALER):
    gm = rewrite(toy.graph(), amp, StepConfig(variant="step", precision="16-mixed", scaler=scaler))
    if clip_val is not None:
        gm = rewrite(gm, clipping, StepConfig(variant="step", precision="16-mixed", clip_val=clip_val, use_cpp=False))
    return gm


@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_fp16_finite_step_unscales_and_counts_toward_growth(opt):
    toy = ToyStep(opt=opt, scaled=True)
    gm = _fp16_graph(toy)
    updates = update_nodes(gm.graph)
    assert {u.kwargs["grad_scale"].meta["role"] for u in updates} == {("scale", 0)}
    assert len({u.kwargs["found_inf"] for u in updates}) == 1
    (upd,) = calls(gm, torch.ops.aten._amp_update_scale_.default)
    nodes = list(gm.graph.nodes)
    assert nodes.index(upd) > nodes.index(updates[-1])  # the scale changes after every update read it
    inputs = toy.inputs()
    ref = toy.split(clone_all(inputs))
    gm(*inputs)
    _, grads = loss_and_grads(ref["param"], *ref["batch"])
    toy.update_eagerly(ref, grads)  # x * 1024 / 1024 is exact: the unscaled step is the plain one
    parts = toy.split(inputs)
    for kind in ("param",) + toy.state_kinds():
        for got, want in zip(parts[kind], ref[kind]):
            torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7, msg=kind)
    assert parts["scale"][0].item() == 1024.0 and parts["growth"][0].item() == 1


def test_fp16_growth_interval_doubles_the_scale():
    toy = ToyStep(scaled=True)
    gm = _fp16_graph(toy, scaler=(2.0, 0.5, 1))
    inputs = toy.inputs()
    gm(*inputs)
    parts = toy.split(inputs)
    assert parts["scale"][0].item() == 2048.0 and parts["growth"][0].item() == 0


@pytest.mark.parametrize("opt", ["sgd", "adam"])
@pytest.mark.parametrize("clip_val", [None, 0.5])
def test_fp16_inf_gradient_skips_the_step_and_backs_off(opt, clip_val):
    toy = ToyStep(opt=opt, scaled=True)
    gm = _fp16_graph(toy, clip_val=clip_val)
    inputs = toy.inputs()
    inputs[toy.roles().index(("batch", 0))][0, 0] = float("inf")
    before = toy.split(clone_all(inputs))
    gm(*inputs)
    parts = toy.split(inputs)
    for kind in ("param",) + toy.state_kinds():  # params, moments, momentum and Adam's step count as they were
        for got, want in zip(parts[kind], before[kind]):
            assert torch.equal(got, want), kind
    assert parts["scale"][0].item() == 512.0 and parts["growth"][0].item() == 0
