"""The ``gradient_sync`` pass on a hand-made step graph (no compile): buckets, order, numerics.

A one-process gloo group makes the functional all-reduce runnable in this process (the
multi-process behaviour is tested in ``tests/distributed/test_ddp_compiled.py``).
"""
from __future__ import annotations

import os
import tempfile

import pytest
import torch
from torch.fx.experimental.proxy_tensor import make_fx

import trainer.compile.ops  # noqa: F401  (registers trainer_compile::sgd_param_)
from trainer.compile.passes import StepConfig, update_nodes
from trainer.compile.passes.gradient_sync import gradient_sync

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="needs torch.distributed")
SGD = torch.ops.trainer_compile.sgd_param_.default


@pytest.fixture(scope="module")
def group_name():
    import torch.distributed as dist

    if dist.is_initialized():  # pragma: no cover
        pytest.skip("a process group is already initialised in this process")
    with tempfile.TemporaryDirectory() as d:
        store = dist.FileStore(os.path.join(d, "store"), 1)
        dist.init_process_group("gloo", store=store, rank=0, world_size=1)
        try:
            yield dist.group.WORLD.group_name
        finally:
            dist.destroy_process_group()


def _step(w1, b1, w2, lr, x, y):
    """A 2-layer net's SGD step, written out: forward, hand-written backward, one update per param."""
    h = torch.tanh(x @ w1.t() + b1)
    out = h @ w2.t()
    d_out = 2 * (out - y) / out.numel()
    g_w2 = d_out.t() @ h
    d_h = (d_out @ w2) * (1 - h * h)
    g_w1 = d_h.t() @ x
    g_b1 = d_h.sum(0)
    for p, g in ((w1, g_w1), (b1, g_b1), (w2, g_w2)):
        SGD(p, g, None, lr, 0.0, 0.0, 0.0, False, False)
    return ((out - y) ** 2).mean()


def _inputs():
    g = torch.Generator().manual_seed(0)
    return [torch.randn(8, 4, generator=g), torch.randn(8, generator=g), torch.randn(2, 8, generator=g),
            torch.tensor(0.1), torch.randn(5, 4, generator=g), torch.randn(5, 2, generator=g)]


def _graph():
    gm = make_fx(_step, tracing_mode="fake")(*_inputs())
    return gm


def _run(gm):
    inputs = _inputs()
    loss = gm(*inputs)
    return loss, inputs[:3]


def test_one_bucket_one_all_reduce_before_the_updates(group_name):
    gm = _graph()
    before = gm.code
    gm = gradient_sync(gm, [], StepConfig(variant="step", sync=(group_name, 1, 25 << 20)))
    gm.graph.lint()
    gm.recompile()
    nodes = list(gm.graph.nodes)
    assert "_c10d_functional.all_reduce" not in before
    assert sum(n.target is torch.ops._c10d_functional.all_reduce.default for n in nodes) == 1
    assert sum(n.target is torch.ops._c10d_functional.wait_tensor.default for n in nodes) == 1
    wait = next(n for n in nodes if n.target is torch.ops._c10d_functional.wait_tensor.default)
    assert nodes.index(wait) < nodes.index(update_nodes(gm.graph)[0])  # reduced before any update reads it
    # a world of one: the update is the plain step's
    ref_loss, ref_params = _run(_graph())
    loss, params = _run(gm)
    assert torch.equal(loss, ref_loss)
    for a, b in zip(params, ref_params):
        assert torch.equal(a, b)


def test_buckets_follow_reverse_parameter_order_and_the_byte_cap(group_name):
    gm = _graph()
    # w2 (16 floats = 64 B), b1 (32 B), w1 (128 B): a 100-byte cap gives [w2, b1] and [w1]
    gm = gradient_sync(gm, [], StepConfig(variant="step", sync=(group_name, 1, 100)))
    gm.graph.lint()
    gm.recompile()
    reduces = [n for n in gm.graph.nodes if n.target is torch.ops._c10d_functional.all_reduce.default]
    assert len(reduces) == 2
    flats = [n.args[0].args[0] for n in reduces]  # all_reduce(mul(flat, 1/world))
    by_size = sorted(flats, key=lambda f: len(f.args[0]) if f.target is torch.ops.aten.cat.default else 1)
    assert by_size[0].target is torch.ops.aten.view.default  # [w1] alone
    assert by_size[1].target is torch.ops.aten.cat.default and len(by_size[1].args[0]) == 2  # [w2, b1]
    # each collective is issued right after its bucket's last gradient, not at the end of the graph
    nodes = list(gm.graph.nodes)
    first_update = nodes.index(update_nodes(gm.graph)[0])
    assert all(nodes.index(r) < first_update for r in reduces)
    ref_loss, ref_params = _run(_graph())
    loss, params = _run(gm)
    for a, b in zip(params, ref_params):
        assert torch.equal(a, b)


def test_micro_graphs_and_single_process_are_untouched(group_name):
    gm = _graph()
    code = gm.code
    assert gradient_sync(gm, [], StepConfig(variant="micro", accumulate=2, sync=(group_name, 2, 1 << 20))).code == code
    assert gradient_sync(gm, [], StepConfig(variant="step")).code == code
