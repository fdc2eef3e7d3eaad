"""The compiled engine against the eager engine (the oracle) on the full cross product of the issue's
settings: accumulate k in {1, 3} x clip norm / value / none x precision 32 / bf16-mixed x SGD (momentum,
nesterov, weight decay) / AdamW (weight decay): 24 cases. Every case also has a BatchNorm1d layer, dict
batches, a short last batch (100 = 6*16 + 4), >= 10 optimizer steps and an lr scheduler.

Scheduler per case (``_sched``): SGD takes the epoch-interval scheduler (ExponentialLR) and AdamW the
step-interval one (StepLR, every 2 optimizer steps) at (k=1, 32) and (k=3, bf16-mixed); the other way
round at (k=3, 32) and (k=1, bf16-mixed). So each optimizer meets both intervals, and each (optimizer,
interval) pair meets both k, both precisions and all three clip settings.

The clip thresholds bind: against the same eager run without clipping, they move the fp32 weights by
3e-2 to 6e-1 relative.
"""
from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from .equivalence import FP32_TOL, assert_matches_eager, assert_optimizer_state_same, fit_pair, rel_diff
from .models import MLP, max_rel_diff

N, BATCH = 100, 16  # 7 batches an epoch, the last one of 4 samples
CLIP = {"norm": dict(gradient_clip_val=0.5),
        "value": dict(gradient_clip_val=0.05, gradient_clip_algorithm="value"),
        "none": {}}
BASE_LR = {"sgd": 0.1, "adamw": 1e-2}  # models.MLP.configure_optimizers

# bf16-mixed tolerances. Both engines autocast the same ops to bf16 (eps = 2**-8 ~ 3.9e-3), but inductor's
# matmuls/reductions accumulate in another order than ATen's, so an activation near a rounding boundary
# lands on the neighbouring bf16 value in one engine only (as in test_optimizers.py's
# test_bf16_mixed_sgd_accumulation_clip_norm). Gradients and the batch statistics BatchNorm folds into its
# running stats then differ by O(bf16 eps) elementwise, and >= 10 updates carry that into the fp32 state.
# Measured over the 12 bf16 cases (worst): weights and BatchNorm running stats 3.6e-3 (a running stat is
# the worst entry in every case); momentum_buffer 1.9e-2, exp_avg 2.5e-2 (gradient averages over few
# steps: one gradient element a few bf16 ulps apart shows up whole), exp_avg_sq 1.6e-2; train_loss 1.5e-3
# absolute; one sample of the 100 classified differently in one case (acc_epoch 1e-2 apart).
# Bounds: weights/stats 1e-2 (2.8x), state 4e-2 (1.6x; exp_avg_sq gets the helper's 2x: 8e-2, 5x),
# loss 1e-2 relative, accuracy at most 2 samples of an epoch / 1 of the last batch. A missed clip alone
# moves the weights by 3e-2 or more (module docstring).
BF16_TOL, BF16_STATE_TOL = 1e-2, 4e-2


class BnGeluMLP(MLP):
    """Linear(8,16)-BatchNorm1d(16)-GELU-Linear(16,4) on dict batches; optimizer and scheduler from MLP.

    No bias before the BatchNorm (as models.MLP with ``bn=True``): the batch mean cancels it, so its
    gradient is 0 in exact arithmetic and ~1e-10 of rounding noise in either engine; Adam scales that
    noise up to lr-sized steps of random sign (measured: that bias 7e-2 apart after 7 steps,
    running_mean 3e-2, its exp_avg 1.4 relative), which would compare rounding noise, not the engines."""

    def __init__(self, opt: str, sched: str) -> None:
        super().__init__(opt=opt, sched=sched, dict_batch=True, n=N, batch_size=BATCH)
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(8, 16, bias=False), nn.BatchNorm1d(16), nn.GELU(), nn.Linear(16, 4))


def _sched(k: int, precision: str, opt: str) -> str:
    step = (k == 3) ^ (precision == "bf16-mixed") ^ (opt == "adamw")
    return "step" if step else "epoch"


CASES = list(itertools.product([1, 3], list(CLIP), ["32-true", "bf16-mixed"], ["sgd", "adamw"]))


@pytest.mark.parametrize("k, clip, precision, opt", [
    pytest.param(*c, id="k{}-clip_{}-{}-{}".format(*c)) for c in CASES])
def test_matches_eager(k, clip, precision, opt):
    sched = _sched(k, precision, opt)
    epochs = 2 if k == 1 else 4  # 7 batches an epoch: k=1 7 steps, k=3 3 (the short last batch updates)
    eager, compiled = fit_pair(lambda: BnGeluMLP(opt, sched), epochs=epochs, precision=precision,
                               accumulate_grad_batches=k, **CLIP[clip])
    steps = compiled.global_step
    assert steps == eager.global_step == (14 if k == 1 else 12)

    # one graph, no split tier, for every combination; one graph per variant and batch shape: k=1 the step
    # for 16 and for 4 samples, k=3 micro and final for 16 and final for the short last batch (always an
    # update step); the lr the scheduler changed every epoch / every 2 steps rebuilt none of them
    report = compiled.compile_report
    assert report.mode == "full" and report.fallback_reason is None, report
    assert report.graphs_built == (2 if k == 1 else 3) and report.recompiles == 0, report
    assert report.steps_run == epochs * 7, report
    # the amp pass has no cast to add: the autocast policy is applied by the capture, parameters are fp32
    assert report.passes_applied == ["accumulation"] * (k == 3) + ["clipping"] * (clip != "none") + [
        "optimizer_fusion"], report

    me, mc = eager.lightning_module, compiled.lightning_module
    if precision == "32-true":  # mode, steps, weights and BatchNorm buffers, logged metrics
        assert_matches_eager(eager, compiled, tol=FP32_TOL, state=False)
        tol, state_tol = FP32_TOL, FP32_TOL
    else:
        tol, state_tol = BF16_TOL, BF16_STATE_TOL
        assert max_rel_diff(mc, me) < tol  # weights and BatchNorm buffers
        assert compiled.callback_metrics.keys() == eager.callback_metrics.keys()
        cm, em = compiled.callback_metrics, eager.callback_metrics
        torch.testing.assert_close(cm["train_loss"], em["train_loss"], rtol=1e-2, atol=1e-6)
        assert abs(cm["acc_epoch"] - em["acc_epoch"]) <= 2 / N + 1e-6 and cm["acc"] == cm["acc_epoch"]
        assert abs(cm["acc_step"] - em["acc_step"]) <= 1 / (N % BATCH) + 1e-6

    bn_c, bn_e = mc.net[1], me.net[1]
    assert bn_c.num_batches_tracked.item() == bn_e.num_batches_tracked.item() == epochs * 7
    for buf in ("running_mean", "running_var"):
        assert rel_diff(getattr(bn_c, buf), getattr(bn_e, buf)) < tol, buf

    # the scheduler changed lr the same way in both engines: as many scheduler steps, the same final lr
    lr_c, lr_e = compiled.optimizers[0].param_groups[0]["lr"], eager.optimizers[0].param_groups[0]["lr"]
    s_c, s_e = compiled.lr_scheduler_configs[0], eager.lr_scheduler_configs[0]
    assert s_c.interval == s_e.interval == sched
    assert s_c.scheduler.last_epoch == s_e.scheduler.last_epoch == (steps if sched == "step" else epochs)
    expected = BASE_LR[opt] * (0.7 ** (steps // 2) if sched == "step" else 0.5 ** epochs)
    assert lr_c == lr_e == pytest.approx(expected, rel=1e-12)

    assert_optimizer_state_same(eager, compiled, tol=state_tol)  # lr / param_groups exactly, every state entry
