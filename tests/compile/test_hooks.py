"""In-step hook overrides under the compiled engine: the step splits (forward+backward one compiled
graph, the hooks eager with real tensors, the update a second graph) and keeps Lightning's
semantics: each hook is called where and as often as in the eager engine, sees the same values,
and its effect (lr warm-up, custom clipping, skipped zero_grad) lands in the weights and the
optimizer state as in eager (fp32, within 1e-5 after 14 steps)."""
from __future__ import annotations

import pytest
import torch

import trainer as L

from .equivalence import assert_matches_eager, fit_pair, rel_diff
from .models import MLP, fit


def _assert_split(compiled, hook_name):
    report = compiled.compile_report
    assert report.mode == "fwd_bwd", report
    assert hook_name in report.fallback_reason, report.fallback_reason
    assert report.update_compiled and "update" in report.graph_keys, report  # Adam/SGD: a compiled update


class WarmupStep(MLP):
    """Lightning's documented manual lr warm-up: ``optimizer.step(closure)``, then param_groups edited."""

    def __init__(self) -> None:
        super().__init__(opt="adamw")
        self.calls = []

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None):
        self.calls.append((epoch, batch_idx, optimizer.param_groups[0]["lr"]))
        optimizer.step(closure=optimizer_closure)
        scale = min(1.0, (self.trainer.global_step + 1) / 8)
        for pg in optimizer.param_groups:
            pg["lr"] = scale * 1e-2


def test_optimizer_step_override_with_lr_warmup():
    eager, compiled = fit_pair(WarmupStep)
    _assert_split(compiled, "`WarmupStep.optimizer_step` is overridden")
    assert_matches_eager(eager, compiled, mode="fwd_bwd")
    calls_c, calls_e = compiled.lightning_module.calls, eager.lightning_module.calls
    assert calls_c == calls_e and len(calls_c) == 14
    lrs = [lr for _, _, lr in calls_c]
    assert lrs[1] < lrs[5] < lrs[-1] == pytest.approx(1e-2)  # the warm-up reached the compiled update


class CustomClipping(MLP):
    """Clips (with the Trainer's settings) on even global steps only: a decision on Python state."""

    def __init__(self) -> None:
        super().__init__(opt="adamw")
        self.calls = []

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in self.parameters()]))
        self.calls.append((gradient_clip_val, gradient_clip_algorithm, norm.item()))
        if self.trainer.global_step % 2 == 0:
            self.clip_gradients(optimizer, gradient_clip_val=gradient_clip_val,
                                gradient_clip_algorithm=gradient_clip_algorithm)


def test_configure_gradient_clipping_override():
    eager, compiled = fit_pair(CustomClipping, gradient_clip_val=0.05)
    _assert_split(compiled, "`CustomClipping.configure_gradient_clipping` is overridden")
    assert_matches_eager(eager, compiled, mode="fwd_bwd")
    calls_c, calls_e = compiled.lightning_module.calls, eager.lightning_module.calls
    assert len(calls_c) == len(calls_e) == 14
    for (vc, ac, nc), (ve, ae, ne) in zip(calls_c, calls_e):
        assert (vc, ac) == (ve, ae) and vc == 0.05  # the Trainer's settings, as eager passes them
        assert nc == pytest.approx(ne, rel=1e-5)  # the hook saw the eager engine's unclipped gradients
    assert all(n > 0.05 for _, _, n in calls_c)  # so clipping on even steps changed them


class GradReader(L.Callback):
    def __init__(self) -> None:
        self.grads = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.grads.append([p.grad.clone() for p in pl_module.parameters()])


def test_callback_on_before_optimizer_step_reads_the_eager_gradients():
    seen = {}
    runs = {}
    for compile in (False, True):
        reader = GradReader()
        runs[compile] = fit(MLP(opt="adamw"), compile, callbacks=[reader], accumulate_grad_batches=2,
                            gradient_clip_val=0.5)
        seen[compile] = reader.grads
    eager, compiled = runs[False], runs[True]
    _assert_split(compiled, "callback GradReader overrides `on_before_optimizer_step`")
    assert_matches_eager(eager, compiled, mode="fwd_bwd", min_steps=7)
    # once per optimizer step (k=2, 7 batches an epoch: 4 windows, the epoch's last batch closes one),
    # with the window's summed, not yet clipped gradients
    assert len(seen[True]) == len(seen[False]) == compiled.global_step == 8
    for step, (gc, ge) in enumerate(zip(seen[True], seen[False])):
        for c, e in zip(gc, ge):
            assert rel_diff(c, e) < 1e-5, step


class ZeroEveryOtherBatch(MLP):
    """``optimizer_zero_grad`` that zeroes on even batches only: odd steps update with two batches'
    gradients summed, as in the eager engine."""

    def __init__(self) -> None:
        super().__init__(opt="sgd")
        self.calls = []

    def optimizer_zero_grad(self, epoch, batch_idx, optimizer):
        self.calls.append((epoch, batch_idx))
        if batch_idx % 2 == 0:
            optimizer.zero_grad()


def test_optimizer_zero_grad_override():
    eager, compiled = fit_pair(ZeroEveryOtherBatch)
    _assert_split(compiled, "`ZeroEveryOtherBatch.optimizer_zero_grad` is overridden")
    assert_matches_eager(eager, compiled, mode="fwd_bwd")
    assert compiled.lightning_module.calls == eager.lightning_module.calls
    assert len(compiled.lightning_module.calls) == 14
