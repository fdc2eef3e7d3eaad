"""Compiled-vs-eager comparison helpers shared by the tests that check a compiled fit against the
eager engine (``Trainer(compile=False)``, the oracle) on split-tier runs too, where
``test_engine._assert_same`` (which requires the ``full`` tier) does not apply."""
from __future__ import annotations

from typing import Callable, Optional

import torch

from .models import MLP, fit, max_rel_diff

FP32_TOL = 1e-5
_SQUARED = ("exp_avg_sq", "max_exp_avg_sq", "square_avg")


class OptMLP(MLP):
    """The shared 8-16-4 MLP with the optimizer built by ``make_opt(module)`` (any torch.optim)."""

    def __init__(self, make_opt: Callable[[torch.nn.Module], torch.optim.Optimizer], **kw) -> None:
        super().__init__(**kw)
        self.make_opt = make_opt

    def configure_optimizers(self):
        return self.make_opt(self)


def fit_pair(make_model: Callable[[], MLP], compile_cfg=True, epochs: int = 2, **trainer_kw):
    """(eager, compiled) Trainers after fitting two identically initialised models."""
    eager = fit(make_model(), False, epochs=epochs, **trainer_kw)
    compiled = fit(make_model(), compile_cfg, epochs=epochs, **trainer_kw)
    return eager, compiled


def rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b|: the relative error of ``max_rel_diff``, for one tensor."""
    return ((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-12)).item()


def assert_optimizer_state_same(eager, compiled, tol: float = FP32_TOL) -> None:
    """Same param_groups and the same state entries: keys, dtype, device, shape; step counters
    equal, tensors within ``tol`` relative (to the entry's largest magnitude, as the weights)."""
    se, sc = eager.optimizers[0].state_dict(), compiled.optimizers[0].state_dict()
    assert se["param_groups"] == sc["param_groups"]
    assert se["state"].keys() == sc["state"].keys()
    for i in se["state"]:
        assert se["state"][i].keys() == sc["state"][i].keys(), i
        for key, v in se["state"][i].items():
            c = sc["state"][i][key]
            if v is None:  # torch.optim stores None for some entries (e.g. SGD's buffer before a step)
                assert c is None, key
                continue
            assert v.dtype == c.dtype and v.device == c.device and v.shape == c.shape, key
            if key == "step":
                assert torch.equal(c, v), (i, c, v)
            else:  # a second moment squares the gradient: twice its relative error
                bound = 2 * tol if key in _SQUARED else tol
                assert rel_diff(c, v) < bound, (i, key, rel_diff(c, v))


def assert_matches_eager(eager, compiled, tol: float = FP32_TOL, mode: Optional[str] = "full",
                         min_steps: int = 10, state: bool = True) -> None:
    """The compiled run ran ``mode`` (None: any tier but eager), the same number of optimizer steps
    (>= ``min_steps``), and ends with the eager run's weights, optimizer state and metrics."""
    report = compiled.compile_report
    assert report.mode != "eager", report
    if mode is not None:
        assert report.mode == mode, report
    assert compiled.global_step == eager.global_step >= min_steps
    assert max_rel_diff(compiled.lightning_module, eager.lightning_module) < tol
    if state:
        assert_optimizer_state_same(eager, compiled, tol=tol)
    assert compiled.callback_metrics.keys() == eager.callback_metrics.keys()
    for key, v in eager.callback_metrics.items():
        torch.testing.assert_close(compiled.callback_metrics[key], v, rtol=tol, atol=1e-6)
