"""The ``optimizer_fusion`` pass on a hand-written step graph: the per-parameter update nodes become one
multi-tensor call per param group (``torch.ops.trainer.*`` or the foreach expressions), which updates
params and state as the per-parameter ops do, with clipping's coefficient and fp16's unscale/skip
passed through."""
from __future__ import annotations

import pytest
import torch

from trainer.compile.ops import foreach_adam_, foreach_sgd_
from trainer.compile.passes import StepConfig, update_nodes
from trainer.compile.passes.amp import amp
from trainer.compile.passes.clipping import clipping
from trainer.compile.passes.optimizer_fusion import optimizer_fusion
from trainer.optim import HAS_CPP

from .pass_graphs import ToyStep, calls, clone_all, rewrite

CPP = [pytest.param(True, marks=pytest.mark.skipif(not HAS_CPP, reason="trainer._C not built")), False]


def _fused_target(opt, use_cpp):
    if use_cpp:
        return torch.ops.trainer.fused_sgd_.default if opt == "sgd" else torch.ops.trainer.fused_adamw_.default
    return foreach_sgd_ if opt == "sgd" else foreach_adam_


def _tol(toy, use_cpp):
    """Within a few fp32 ulps, except the foreach Adam expression: its bias corrections are fp32 tensor
    math on the step count (as torch's capturable Adam's), 1 - 0.999**4 loses ~1.5e-5 relative to
    cancellation where the per-parameter op uses Python doubles; a lost coefficient or a wrong lr is
    orders of magnitude more (and shows in exp_avg)."""
    return dict(rtol=1e-5, atol=1e-6) if (toy.opt == "adam" and not use_cpp) else dict(rtol=1e-6, atol=1e-7)


def _compare(toy, unfused, fused, tol, **input_kw):
    """Both graphs from the same inputs: params and state within ``tol`` of each other."""
    a, b = toy.inputs(**input_kw), toy.inputs(**input_kw)
    unfused(*a)
    fused(*b)
    pa, pb = toy.split(a), toy.split(b)
    for kind in ("param",) + toy.state_kinds() + (("scale", "growth") if toy.scaled else ()):
        for i, (want, got) in enumerate(zip(pa[kind], pb[kind])):
            torch.testing.assert_close(got, want, **tol, msg=lambda m: f"{kind}[{i}]: {m}")


@pytest.mark.parametrize("use_cpp", CPP)
@pytest.mark.parametrize("opt", ["sgd", "adam"])
@pytest.mark.parametrize("two_groups", [False, True])
def test_one_call_per_param_group_same_result(opt, use_cpp, two_groups):
    toy = ToyStep(opt=opt, two_groups=two_groups)
    cfg = StepConfig(variant="step", use_cpp=use_cpp)
    fused = rewrite(toy.graph(), optimizer_fusion, cfg)
    assert update_nodes(fused.graph) == []
    groups = calls(fused, _fused_target(opt, use_cpp))
    assert len(groups) == (2 if two_groups else 1)
    lrs = {n.args[7 if (use_cpp and opt == "adam") else (4 if use_cpp else (6 if opt == "adam" else 3))]
           for n in groups}
    assert {lr.meta["role"] for lr in lrs} == ({("lr", 0), ("lr", 1)} if two_groups else {("lr", 0)})
    _compare(toy, toy.graph(), fused, _tol(toy, use_cpp))


@pytest.mark.parametrize("use_cpp", CPP)
@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_clip_coefficient_passes_through(opt, use_cpp):
    toy = ToyStep(opt=opt)
    cfg = StepConfig(variant="step", clip_val=0.5, use_cpp=use_cpp)
    clipped = rewrite(toy.graph(), clipping, cfg)
    fused = rewrite(rewrite(toy.graph(), clipping, cfg), optimizer_fusion, cfg)
    _compare(toy, clipped, fused, _tol(toy, use_cpp), x_scale=4.0)


@pytest.mark.parametrize("use_cpp", CPP)
@pytest.mark.parametrize("opt", ["sgd", "adam"])
@pytest.mark.parametrize("finite", [True, False])
def test_fp16_unscale_and_skip_pass_through(opt, use_cpp, finite):
    toy = ToyStep(opt=opt, scaled=True)
    cfg = StepConfig(variant="step", precision="16-mixed", scaler=(2.0, 0.5, 2000), use_cpp=use_cpp)
    unfused = rewrite(toy.graph(), amp, cfg)
    fused = rewrite(rewrite(toy.graph(), amp, cfg), optimizer_fusion, cfg)
    a, b = toy.inputs(), toy.inputs()
    if not finite:
        for inputs in (a, b):
            inputs[toy.roles().index(("batch", 0))][0, 0] = float("nan")
    before = toy.split(clone_all(b))
    unfused(*a)
    fused(*b)
    pa, pb = toy.split(a), toy.split(b)
    for kind in ("param",) + toy.state_kinds() + ("scale", "growth"):
        for want, got, orig in zip(pa[kind], pb[kind], before[kind]):
            torch.testing.assert_close(got, want, **_tol(toy, use_cpp), msg=kind)
            if not finite and kind not in ("scale", "growth"):
                assert torch.equal(got, orig), kind  # skipped: untouched, Adam's step not counted


@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_unfused_fallbacks_inline_to_aten_ops_for_the_compile_caches(opt):
    """Without trainer._C the passes leave Python functions in the graph (the foreach update, the
    gradient norm); the engine traces them into ATen ops before inductor, which AOT autograd's cache can
    key (it bypasses a graph with any other callable and compiles it again in every process). Same
    updates, bit for bit."""
    from torch._functorch._aot_autograd.autograd_cache import check_node_safe
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.experimental.symbolic_shapes import ShapeEnv

    from trainer.compile.engine import _python_calls_inlined

    toy = ToyStep(opt=opt)
    cfg = StepConfig(variant="step", clip_val=0.5, use_cpp=False)
    gm = rewrite(rewrite(toy.graph(), clipping, cfg), optimizer_fusion, cfg)
    assert calls(gm, _fused_target(opt, False))  # a Python function: the cache would refuse the graph
    mode = FakeTensorMode(shape_env=ShapeEnv(), static_shapes=True)
    inlined = _python_calls_inlined(gm, [mode.from_tensor(t) for t in toy.inputs()], mode)
    for node in inlined.graph.nodes:
        check_node_safe(node)  # raises BypassAOTAutogradCache on a node the cache cannot key
    a, b = toy.inputs(x_scale=4.0), toy.inputs(x_scale=4.0)
    torch.testing.assert_close(inlined(*b), gm(*a), rtol=0, atol=0)
    for kind, want in toy.split(a).items():
        for i, (w, g) in enumerate(zip(want, toy.split(b)[kind])):
            torch.testing.assert_close(g, w, rtol=0, atol=0, msg=lambda m: f"{kind}[{i}]: {m}")
    assert _python_calls_inlined(inlined, [], mode) is inlined  # nothing left to inline: the graph as is
