"""The ``accumulation`` pass on a hand-written step graph: micro-steps only add into the buffers;
the final step updates from ``acc + grad`` and zeroes the buffers (see pass_graphs.py)."""
from __future__ import annotations

import pytest
import torch

from trainer.compile.passes import StepConfig, update_nodes
from trainer.compile.passes.accumulation import accumulation

from .pass_graphs import ToyStep, calls, clone_all, loss_and_grads, rewrite


@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_micro_adds_gradients_into_the_buffers_and_updates_nothing(opt):
    toy = ToyStep(opt=opt, accumulate=True)
    gm = rewrite(toy.graph(), accumulation, StepConfig(variant="micro", accumulate=2))
    assert update_nodes(gm.graph) == []
    inputs = toy.inputs()
    before = clone_all(inputs)
    loss = gm(*inputs)
    parts, ref = toy.split(inputs), toy.split(before)
    ref_loss, grads = loss_and_grads(ref["param"], *ref["batch"])
    assert torch.equal(loss, ref_loss)
    for kind in ("param",) + toy.state_kinds():  # nothing the optimizer owns is touched
        for got, want in zip(parts[kind], ref[kind]):
            assert torch.equal(got, want), kind
    for acc, acc0, g in zip(parts["acc"], ref["acc"], grads):
        assert torch.equal(acc, acc0 + g)


@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_final_updates_from_the_summed_window_then_zeroes_the_buffers(opt):
    toy = ToyStep(opt=opt, accumulate=True)
    gm = rewrite(toy.graph(), accumulation, StepConfig(variant="final", accumulate=2))
    nodes = list(gm.graph.nodes)
    updates = update_nodes(gm.graph)
    zeros = calls(gm, torch.ops.aten.zero_.default)
    assert len(updates) == 3 and len(zeros) == 3
    assert all(nodes.index(z) > nodes.index(updates[-1]) for z in zeros)  # zeroed after every update read it
    sums = [u.args[1] for u in updates]  # every summed gradient exists before the first update: clipping
    assert all(s.target is torch.ops.aten.add.Tensor and nodes.index(s) < nodes.index(updates[0]) for s in sums)
    inputs = toy.inputs()
    ref = toy.split(clone_all(inputs))
    gm(*inputs)
    _, grads = loss_and_grads(ref["param"], *ref["batch"])
    toy.update_eagerly(ref, [a + g for a, g in zip(ref["acc"], grads)])
    parts = toy.split(inputs)
    for kind in ("param",) + toy.state_kinds():
        for got, want in zip(parts[kind], ref[kind]):
            assert torch.equal(got, want), kind
    assert all(int(torch.count_nonzero(a)) == 0 for a in parts["acc"])


def test_nothing_to_do_without_accumulation():
    toy = ToyStep(accumulate=True)
    gm = toy.graph()
    code = gm.code
    assert accumulation(gm, [], StepConfig(variant="step", accumulate=1)).code == code
    assert accumulation(gm, [], StepConfig(variant="fwd_bwd", accumulate=2)).code == code
