"""The compiled step's per-batch fast paths (``CompiledEngine._run_full``): the graph lookup by the
flat batch's tensor signature, and the counters-only ``on_before_zero_grad`` when nothing hooks it.
Results, counters and hook calls must equal the eager engine's."""
from __future__ import annotations

import torch

import trainer as L

from .models import MLP, fit, max_rel_diff


class _WeightDecayAt(L.Callback):
    """Changes weight decay (baked into the step graph) at a given global step: the graphs are rebuilt."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            for g in trainer.optimizers[0].param_groups:
                g["weight_decay"] = 0.3


class _ZeroGradCounter(L.Callback):
    def __init__(self) -> None:
        self.calls = []

    def on_before_zero_grad(self, trainer, pl_module, optimizer):
        self.calls.append((trainer.global_step, pl_module._current_fx_name))


def _progress(trainer):
    return trainer.fit_loop.epoch_loop.automatic_optimization.optim_progress.state_dict()


def test_fast_graph_lookup_follows_rebuilt_graphs():
    """Two batch shapes (16 and the short last 4); weight decay changes at step 8 (epoch 1), so every graph is
    rebuilt: the fast lookup must run the new graphs (else the weights drift from eager's)."""
    eager = fit(MLP(opt="adamw"), False, epochs=2, callbacks=[_WeightDecayAt(8)])
    compiled = fit(MLP(opt="adamw"), True, epochs=2, callbacks=[_WeightDecayAt(8)])
    report = compiled.compile_report
    assert report.mode == "full" and report.fallback_reason is None, report
    # 2 shapes, each built again after the change: the rebuilds are the recompiles
    assert report.graphs_built == 4 and report.recompiles == 2, report
    assert compiled.global_step == eager.global_step == 14
    assert max_rel_diff(compiled.lightning_module, eager.lightning_module) < 1e-5
    assert _progress(compiled) == _progress(eager)
    engine = compiled.fit_loop.epoch_loop.automatic_optimization._engine
    fast = engine.__dict__["_fast_graphs"]
    assert fast and all(g in engine._graphs.values() for g in fast.values())
    for key, v in eager.callback_metrics.items():
        torch.testing.assert_close(compiled.callback_metrics[key], v, rtol=1e-5, atol=1e-6)


def test_on_before_zero_grad_hooked_under_compile():
    """A callback on on_before_zero_grad is still called once per window, inside its hook name."""
    runs = []
    for compile in (False, True):
        counter = _ZeroGradCounter()
        trainer = fit(MLP(opt="sgd"), compile, epochs=1, accumulate_grad_batches=2, callbacks=[counter])
        runs.append((counter.calls, _progress(trainer)))
    (calls_e, prog_e), (calls_c, prog_c) = runs
    assert calls_c == calls_e and len(calls_e) == 4  # 7 batches in windows of 2
    assert all(name == "on_before_zero_grad" for _, name in calls_e)
    assert prog_c == prog_e
