"""Compile is on by default (``Trainer()`` without ``compile=``), with ``$TRAINER_COMPILE`` as the
environment's escape hatch. tests/conftest.py sets ``TRAINER_COMPILE=0`` for the eager parity
suites; these tests remove it to see the real default."""
from __future__ import annotations

import pytest
import torch

import trainer as L
from trainer.exceptions import MisconfigurationException

from .models import MLP, fit, max_rel_diff


def _default_trainer(**kw):
    # a Lightning script's Trainer: no `compile=` anywhere
    return L.Trainer(max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, **kw)


@pytest.fixture(scope="module")
def default_args_run():
    """A Lightning script with default Trainer arguments (no env var) against the eager engine."""
    mp = pytest.MonkeyPatch()
    mp.delenv("TRAINER_COMPILE", raising=False)
    try:
        model = MLP(opt="adamw")
        trainer = _default_trainer()
        trainer.fit(model)
    finally:
        mp.undo()
    eager_model = MLP(opt="adamw")
    eager = fit(eager_model, False)
    return trainer, eager


def test_default_is_compile_on(default_args_run):
    trainer, _ = default_args_run
    assert trainer._compile_config.enabled and not trainer._compile_config.strict
    report = trainer.compile_report
    assert report.enabled and report.mode == "full" and report.fallback_reason is None, report
    assert report.steps_run == trainer.global_step == 14


def test_default_run_matches_eager(default_args_run):
    trainer, eager = default_args_run
    assert max_rel_diff(trainer.lightning_module, eager.lightning_module) < 1e-5
    for key, v in eager.callback_metrics.items():
        torch.testing.assert_close(trainer.callback_metrics[key], v, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("value, enabled, strict", [("0", False, False), ("false", False, False), ("1", True, False),
                                                    ("strict", True, True)])
def test_env_var(monkeypatch, value, enabled, strict):
    monkeypatch.setenv("TRAINER_COMPILE", value)
    cfg = L.Trainer()._compile_config
    assert (cfg.enabled, cfg.strict) == (enabled, strict)
    # an explicit argument wins over the environment
    assert L.Trainer(compile=not enabled)._compile_config.enabled is (not enabled)


def test_env_var_invalid(monkeypatch):
    monkeypatch.setenv("TRAINER_COMPILE", "maybe")
    with pytest.raises(MisconfigurationException, match="TRAINER_COMPILE"):
        L.Trainer()


def test_unset_env_var_means_on(monkeypatch):
    monkeypatch.delenv("TRAINER_COMPILE", raising=False)
    assert L.Trainer()._compile_config.enabled


def test_config_arguments_are_checked_at_construction():
    from trainer.compile import CompileConfig

    with pytest.raises(MisconfigurationException, match="cudagraph_warmup=0"):
        CompileConfig(cudagraphs=True, cudagraph_warmup=0)
    with pytest.raises(MisconfigurationException, match="cudagraphs='yes'"):
        CompileConfig(cudagraphs="yes")
    with pytest.raises(MisconfigurationException, match="unknown pass 'nope'"):
        CompileConfig(disable=("nope",))
    with pytest.raises(MisconfigurationException, match="mode='fast'"):
        CompileConfig(mode="fast")
    assert CompileConfig(disable=("gradient_sync",)).active_passes == (
        "accumulation", "amp", "clipping", "optimizer_fusion")
