"""The per-parameter update ops (:mod:`trainer.compile.ops`) under fp16 loss scaling: the step that
GradScaler skips is skipped on the device (no host sync), with torch.optim's and GradScaler's
semantics: a kept step equals torch.optim's step on the unscaled gradient, a skipped step changes
nothing, not even the step counter. These ops run when ``optimizer_fusion`` is disabled."""
from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from trainer.compile import CompileConfig
from trainer.compile.ops import adam_param_, sgd_param_

from .equivalence import rel_diff
from .models import max_rel_diff

# ATen calls that copy a tensor's value to the host (``bool(t)``, ``t.item()``, ``float(t)``)
_HOST_READS = ("aten::_local_scalar_dense", "aten::is_nonzero", "aten::item")
SCALE = 2.0 ** 10


class HostReads(TorchDispatchMode):
    """Records the ATen calls that read a tensor's value on the host."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func._schema.name in _HOST_READS:
            self.seen.append(func._schema.name)
        return func(*args, **(kwargs or {}))


def _run_op(op, *args, **kwargs):
    """The op's Python implementation (what inductor's fallback kernel calls) under HostReads: a
    dispatch mode sees the ops inside it only when the implementation is called directly."""
    mode = HostReads()
    with mode:
        op._init_fn(*args, **kwargs)
    return mode.seen


def _grads(shape, n):
    g = torch.Generator().manual_seed(1)
    return [torch.randn(shape, generator=g) for _ in range(n)]


# (found_inf per step): a skip at the very first step (step counter 0: the bias correction of the
# discarded update divides by zero), kept steps, a skip in between
SCHEDULE = (1, 0, 0, 1, 0)


@pytest.mark.parametrize("amsgrad, decoupled", [(True, False), (False, True)], ids=["adam_amsgrad", "adamw"])
def test_adam_param_skips_on_the_device_like_gradscaler(amsgrad, decoupled):
    torch.manual_seed(0)
    ref_p = torch.nn.Parameter(torch.randn(5, 3))
    param = ref_p.detach().clone()
    cls = torch.optim.AdamW if decoupled else torch.optim.Adam
    ref = cls([ref_p], lr=1e-2, betas=(0.8, 0.95), eps=1e-8, weight_decay=0.1, amsgrad=amsgrad)
    exp_avg, exp_avg_sq, max_sq = torch.zeros_like(param), torch.zeros_like(param), torch.zeros_like(param)
    step, lr = torch.tensor(0.0), torch.tensor(1e-2)
    for g, inf in zip(_grads(param.shape, len(SCHEDULE)), SCHEDULE):
        before = [t.clone() for t in (param, exp_avg, exp_avg_sq, max_sq, step)]
        seen = _run_op(adam_param_, param, g * SCALE, exp_avg, exp_avg_sq, max_sq if amsgrad else None, step, lr,
                       0.8, 0.95, 1e-8, 0.1, amsgrad, False, decoupled, clip_coef=torch.tensor(0.5),
                       grad_scale=torch.tensor(SCALE), found_inf=torch.tensor([float(inf)]))
        assert seen == [], f"host reads in the fp16 update: {seen}"
        if inf:  # GradScaler.step: optimizer.step() is not called at all
            for t, b in zip((param, exp_avg, exp_avg_sq, max_sq, step), before):
                assert torch.equal(t, b)
            continue
        ref_p.grad = g * 0.5  # unscaled, then clipped by the coefficient
        ref.step()
        st = ref.state[ref_p]
        assert step.item() == st["step"].item()
        assert rel_diff(param, ref_p.detach()) < 1e-6
        assert rel_diff(exp_avg, st["exp_avg"]) < 1e-6 and rel_diff(exp_avg_sq, st["exp_avg_sq"]) < 1e-6
        if amsgrad:
            assert rel_diff(max_sq, st["max_exp_avg_sq"]) < 1e-6
    assert step.item() == SCHEDULE.count(0)


def test_sgd_param_skips_on_the_device_like_gradscaler():
    torch.manual_seed(0)
    ref_p = torch.nn.Parameter(torch.randn(4, 6))
    param = ref_p.detach().clone()
    ref = torch.optim.SGD([ref_p], lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-2)
    buf, lr = torch.zeros_like(param), torch.tensor(0.1)
    for g, inf in zip(_grads(param.shape, len(SCHEDULE)), SCHEDULE):
        before = [param.clone(), buf.clone()]
        seen = _run_op(sgd_param_, param, g * SCALE, buf, lr, 0.9, 0.0, 1e-2, True, False,
                       grad_scale=torch.tensor(SCALE), found_inf=torch.tensor([float(inf)]))
        assert seen == [], f"host reads in the fp16 update: {seen}"
        if inf:
            assert torch.equal(param, before[0]) and torch.equal(buf, before[1])
            continue
        ref_p.grad = g
        ref.step()
        assert rel_diff(param, ref_p.detach()) < 1e-6
        assert rel_diff(buf, ref.state[ref_p]["momentum_buffer"]) < 1e-6


def test_fp16_graph_with_the_per_parameter_ops_matches_eager_gradscaler():
    """With ``optimizer_fusion`` off the fp16 step graph calls these ops (skips included: the scale
    starts at 2**20 and overflows) and ends where the eager engine's GradScaler does."""
    from .test_fp16 import _fp16_fit

    eager, eager_scaler = _fp16_fit(False, "adamw", gradient_clip_val=0.5)
    compiled, scaler = _fp16_fit(CompileConfig(mode="strict", disable=("optimizer_fusion",)), "adamw",
                                 gradient_clip_val=0.5)
    assert compiled.compile_report.mode == "full", compiled.compile_report
    assert scaler.state_dict() == eager_scaler.state_dict()
    assert eager_scaler.state_dict()["scale"] < 2.0 ** 20  # steps were skipped
    se, sc = eager.optimizers[0].state_dict()["state"], compiled.optimizers[0].state_dict()["state"]
    assert se.keys() == sc.keys()
    for i in se:
        assert sc[i]["step"].item() == se[i]["step"].item() < compiled.global_step  # skips not counted
    assert max_rel_diff(compiled.lightning_module, eager.lightning_module) < 1e-3  # fp16 autocast rounding
