"""``CompileConfig(passes=..., disable=...)``: leaving a pass out never changes the training results.

The semantic passes (accumulation, gradient_sync, amp, clipping) implement a feature in the step
graph; where one is left out while this fit uses its feature, the step runs as the split tier
(forward+backward compiled, the feature done by the eager machinery) and ``compile_report`` says
why. Each run here is checked against the eager engine (``compile=False``), the oracle.
"""
from __future__ import annotations

import warnings

import pytest
import torch

import trainer as L
from trainer.compile import DEFAULT_PASSES, CompileConfig
from trainer.compile.engine import CompiledEngine, CompileWarning
from trainer.compile.report import CompileReport
from trainer.exceptions import MisconfigurationException
from trainer.precision import MixedPrecision

from .models import MLP, fit, max_rel_diff

FP32_TOL = 1e-5


def _fit_quiet(model, compile, **kw):
    """A fit that must not warn CompileWarning (routing to the split tier is not a fallback)."""
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        trainer = fit(model, compile, **kw)
    ours = [str(w.message) for w in rec if issubclass(w.category, CompileWarning)]
    assert not ours, ours
    return trainer


def _assert_optimizer_state_close(eager, compiled, rtol=1e-4):
    se, sc = eager.optimizers[0].state_dict(), compiled.optimizers[0].state_dict()
    assert se["param_groups"] == sc["param_groups"]
    assert se["state"].keys() == sc["state"].keys()
    for i in se["state"]:
        for key, v in se["state"][i].items():
            torch.testing.assert_close(sc["state"][i][key], v, rtol=rtol, atol=1e-6)


# ------------------------------------------------------------------ construction
@pytest.mark.parametrize("passes, match", [
    (("clipping", "accumulation"), r"'accumulation' must come before 'clipping'"),
    (("amp", "gradient_sync", "optimizer_fusion"), r"'gradient_sync' must come before 'amp'"),
    (("optimizer_fusion", "clipping"), r"'clipping' must come before 'optimizer_fusion'"),
    (("accumulation", "amp", "amp"), r"pass 'amp' is listed twice"),
    (("clipping", "clipping"), r"pass 'clipping' is listed twice"),
])
def test_bad_pass_order_or_duplicates_raise_at_construction(passes, match):
    with pytest.raises(MisconfigurationException, match=match) as e:
        CompileConfig(passes=passes)
    message = str(e.value)
    assert f"CompileConfig(passes={passes!r})" in message  # the argument and its value
    assert repr(DEFAULT_PASSES) in message  # what is allowed


def test_pass_lists_that_keep_the_default_order_are_accepted():
    assert CompileConfig(passes=("accumulation", "clipping")).active_passes == ("accumulation", "clipping")
    assert CompileConfig(passes=()).active_passes == ()
    assert CompileConfig(passes=list(DEFAULT_PASSES), disable=("amp", "amp")).active_passes == (
        "accumulation", "gradient_sync", "clipping", "optimizer_fusion")
    with pytest.raises(MisconfigurationException, match=r"passes='clipping'.*expected a tuple"):
        CompileConfig(passes="clipping")
    with pytest.raises(MisconfigurationException, match=r"disable='clipping'.*expected a tuple"):
        CompileConfig(disable="clipping")


# ------------------------------------------------------------------ the routing decision
def _engine(config, **trainer_kw):
    trainer = L.Trainer(compile=config, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, **trainer_kw)
    return CompiledEngine(trainer, config, CompileReport())


def test_gradient_sync_left_out_under_ddp_splits_the_step():
    """DDP (``engine._sync`` set by ``_setup_ddp``) without the in-graph all-reduce: the split tier's
    ``_allreduce_grads`` averages the gradients (tests/distributed/test_ddp_compiled.py covers that tier)."""
    engine = _engine(CompileConfig(disable=("gradient_sync",)))
    assert engine._missing_pass_reason() is None  # one process: nothing to synchronise
    engine._sync = ("0", 2, 25 * 1024 * 1024)
    assert engine._missing_pass_reason() == ("pass 'gradient_sync' is disabled (CompileConfig(disable=...)) while"
                                             " the strategy is DDP over 2 processes")
    engine = _engine(CompileConfig(passes=("accumulation", "amp", "clipping", "optimizer_fusion")))
    engine._sync = ("0", 2, 25 * 1024 * 1024)
    assert "pass 'gradient_sync' is not in CompileConfig(passes=...)" in engine._missing_pass_reason()
    engine = _engine(CompileConfig())
    engine._sync = ("0", 2, 25 * 1024 * 1024)
    assert engine._missing_pass_reason() is None


def test_features_not_in_use_need_no_pass():
    engine = _engine(CompileConfig(passes=("optimizer_fusion",)))  # k=1, fp32, no clipping, one process
    assert engine._missing_pass_reason() is None
    engine = _engine(CompileConfig(disable=("amp",)), precision="bf16-mixed")  # no GradScaler under bf16
    assert engine._missing_pass_reason() is None
    engine = _engine(CompileConfig(disable=("clipping",)), gradient_clip_val=0.5)
    assert engine._missing_pass_reason() == ("pass 'clipping' is disabled (CompileConfig(disable=...)) while"
                                             " gradient_clip_val=0.5")


# ------------------------------------------------------------------ runs against the eager engine
def test_clipping_disabled_still_clips():
    """strict: the split is a correct way to run the step, not a fallback."""
    eager = fit(MLP(opt="adamw"), False, gradient_clip_val=0.5)
    compiled = _fit_quiet(MLP(opt="adamw"), CompileConfig(mode="strict", disable=("clipping",)), gradient_clip_val=0.5)
    report = compiled.compile_report
    assert report.mode == "fwd_bwd", report
    assert report.fallback_reason == ("step split (fwd+bwd compiled, rest eager): pass 'clipping' is disabled"
                                      " (CompileConfig(disable=...)) while gradient_clip_val=0.5")
    assert compiled.global_step == eager.global_step == 14
    assert max_rel_diff(compiled.lightning_module, eager.lightning_module) < FP32_TOL
    _assert_optimizer_state_close(eager, compiled)
    # the forward+backward graph is left as captured; the update graph is fused
    assert report.passes_applied == ["optimizer_fusion"] and report.update_compiled, report


def test_accumulation_left_out_still_steps_once_per_window():
    kw = dict(epochs=4, accumulate_grad_batches=3)
    eager = fit(MLP(opt="sgd"), False, **kw)
    compiled = _fit_quiet(MLP(opt="sgd"), CompileConfig(passes=("gradient_sync", "amp", "clipping",
                                                                "optimizer_fusion")), **kw)
    report = compiled.compile_report
    assert report.mode == "fwd_bwd" and report.fallback_reason.endswith(
        "pass 'accumulation' is not in CompileConfig(passes=...) while accumulate_grad_batches=3"), report
    assert compiled.global_step == eager.global_step == 12  # 7 batches an epoch: windows of 3, 3, 1
    assert report.steps_run == 28
    assert max_rel_diff(compiled.lightning_module, eager.lightning_module) < FP32_TOL
    _assert_optimizer_state_close(eager, compiled)
    assert report.passes_applied == ["optimizer_fusion"], report


def _fp16_fit(compile):
    """16-mixed on CPU with a GradScaler installed by hand (see test_fp16.py): 2**20 overflows fp16 in
    the backward, so steps are skipped and the scale backs off and grows again."""
    model = MLP(opt="adamw")
    trainer = L.Trainer(max_epochs=2, compile=compile, accelerator="cpu", precision="bf16-mixed", logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0, gradient_clip_val=0.5)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 20, growth_interval=3)
    plugin = MixedPrecision("16-mixed", "cpu", scaler=scaler)
    plugin.trainer = trainer
    trainer.strategy.precision_plugin = plugin
    trainer.fit(model)
    return trainer, scaler


def test_amp_disabled_under_16_mixed_still_scales_unscales_and_skips():
    eager, eager_scaler = _fp16_fit(False)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        compiled, scaler = _fp16_fit(CompileConfig(disable=("amp",)))
    assert not [w for w in rec if issubclass(w.category, CompileWarning)]
    report = compiled.compile_report
    assert report.mode == "fwd_bwd" and report.fallback_reason.endswith(
        "pass 'amp' is disabled (CompileConfig(disable=...)) while precision='16-mixed' (GradScaler loss scaling)")
    assert scaler.state_dict() == eager_scaler.state_dict()
    assert eager_scaler.state_dict()["scale"] < 2.0 ** 20  # steps were skipped and the scale backed off
    assert compiled.global_step == eager.global_step == 14
    # fp16 autocast: the compiled forward/backward rounds differently from eager's kernels (measured 1.2e-4;
    # the full tier's fp16 test holds the same 1e-3)
    assert max_rel_diff(compiled.lightning_module, eager.lightning_module) < 1e-3
    se, sc = eager.optimizers[0].state_dict(), compiled.optimizers[0].state_dict()
    for i in se["state"]:  # the skipped steps were skipped by both
        assert sc["state"][i]["step"].item() == se["state"][i]["step"].item()


def test_amp_disabled_under_bf16_mixed_keeps_the_full_graph():
    """bf16 needs no scaler and the autocast policy is applied by the capture: the amp pass changes no
    graph with fp32 parameters (it is not named in passes_applied), so the full tier runs."""
    eager = fit(MLP(opt="adamw"), False, precision="bf16-mixed")
    compiled = _fit_quiet(MLP(opt="adamw"), CompileConfig(mode="strict", disable=("amp",)), precision="bf16-mixed")
    report = compiled.compile_report
    assert report.mode == "full" and report.fallback_reason is None, report
    assert report.passes_applied == ["optimizer_fusion"], report
    assert compiled.global_step == eager.global_step == 14
    # bf16 autocast rounding, as test_engine.py's bf16 test
    assert max_rel_diff(compiled.lightning_module, eager.lightning_module) < 2e-2


def test_pass_left_out_without_its_feature_keeps_the_full_graph():
    """No gradient_clip_val: clipping off changes nothing; passes_applied names only what changed a graph
    (accumulation with k=1 and amp under 32-true have nothing to do)."""
    eager = fit(MLP(opt="adamw"), False)
    compiled = _fit_quiet(MLP(opt="adamw"), CompileConfig(mode="strict", disable=("clipping",)))
    report = compiled.compile_report
    assert report.mode == "full" and report.fallback_reason is None, report
    assert report.passes_applied == ["optimizer_fusion"], report
    # the 16-sample batches and the short last batch (100 = 6*16 + 4): two graphs, no recompile
    assert report.graphs_built == 2 and report.recompiles == 0, report
    assert max_rel_diff(compiled.lightning_module, eager.lightning_module) < FP32_TOL
