"""The compiled engine against the eager engine (the oracle): same weights, metrics, optimizer state.

One compiled trainer per configuration, shared through module-scoped fixtures (CPU compiles take
seconds each). Each configuration covers several features at once.
"""
from __future__ import annotations

import glob
import inspect
import os
import re
import warnings

import pytest
import torch

import trainer as L
from trainer.compile import CompileConfig, CompileError
from trainer.compile.engine import CompileWarning
from trainer.exceptions import MisconfigurationException

from .models import MLP, fit, max_rel_diff

FP32_TOL = 1e-5


def _pair(model_kw, trainer_kw, compile_cfg=True, epochs=2):
    eager_model, compiled_model = MLP(**model_kw), MLP(**model_kw)
    eager = fit(eager_model, False, epochs=epochs, **trainer_kw)
    compiled = fit(compiled_model, compile_cfg, epochs=epochs, **trainer_kw)
    return eager, compiled


@pytest.fixture(scope="module")
def adamw_clipnorm(tmp_path_factory):
    """AdamW, two param groups (own lr / weight decay), clip by norm, step scheduler, dict batches,
    k=1, a short last batch (100 = 6*16 + 4), pass debug output."""
    debug = str(tmp_path_factory.mktemp("debug"))
    return _pair(dict(opt="adamw", sched="step", dict_batch=True, groups=True),
                 dict(gradient_clip_val=0.5), CompileConfig(debug_dir=debug)) + (debug,)


@pytest.fixture(scope="module")
def sgd_accum_clipvalue(tmp_path_factory):
    """SGD nesterov + weight decay, accumulate 3, clip by value, epoch scheduler, BatchNorm."""
    debug = str(tmp_path_factory.mktemp("debug"))
    return _pair(dict(opt="sgd", sched="epoch", bn=True), dict(accumulate_grad_batches=3, gradient_clip_val=0.05,
                 gradient_clip_algorithm="value"), CompileConfig(debug_dir=debug), epochs=4) + (debug,)


def _assert_same(eager, compiled, tol=FP32_TOL):
    assert compiled.compile_report.fallback_reason is None, compiled.compile_report
    assert compiled.global_step == eager.global_step >= 10
    assert max_rel_diff(compiled.lightning_module, eager.lightning_module) < tol
    se, sc = eager.optimizers[0].state_dict(), compiled.optimizers[0].state_dict()
    assert se["param_groups"] == sc["param_groups"]
    assert se["state"].keys() == sc["state"].keys()
    for i in se["state"]:
        assert se["state"][i].keys() == sc["state"][i].keys()
        for key, v in se["state"][i].items():
            assert v.dtype == sc["state"][i][key].dtype and v.device == sc["state"][i][key].device, key
            torch.testing.assert_close(sc["state"][i][key], v, rtol=tol * 10, atol=1e-6)
    for key, v in eager.callback_metrics.items():
        torch.testing.assert_close(compiled.callback_metrics[key], v, rtol=1e-5, atol=1e-6)


def test_adamw_groups_clip_norm_step_scheduler_dict_batch(adamw_clipnorm):
    eager, compiled, _ = adamw_clipnorm
    _assert_same(eager, compiled)
    report = compiled.compile_report
    assert report.mode == "full"
    # one graph for the 16-sample batches, one for the short last batch (a new graph, not a recompile);
    # lr changed 7 times: no recompile for it
    assert report.graphs_built == 2 and report.recompiles == 0, report
    assert report.passes_applied == ["clipping", "optimizer_fusion"], report  # k=1 and fp32: nothing to do for the others
    assert compiled.optimizers[0].param_groups[1]["lr"] < 1e-2  # the scheduler did run


def test_sgd_accumulation_clip_value_epoch_scheduler_batchnorm(sgd_accum_clipvalue):
    eager, compiled, _ = sgd_accum_clipvalue
    _assert_same(eager, compiled)
    report = compiled.compile_report
    # micro, final, and final for the short last batch (always an update step): three new graphs
    assert report.graphs_built == 3 and report.recompiles == 0, report
    assert report.passes_applied == ["accumulation", "clipping", "optimizer_fusion"], report
    bn_c, bn_e = compiled.lightning_module.net[1], eager.lightning_module.net[1]
    assert bn_c.num_batches_tracked.item() == bn_e.num_batches_tracked.item() == 28
    torch.testing.assert_close(bn_c.running_var, bn_e.running_var, rtol=1e-5, atol=1e-6)


def test_logged_values_match_eager(adamw_clipnorm):
    eager, compiled, _ = adamw_clipnorm
    assert set(compiled.callback_metrics) == set(eager.callback_metrics) == {"train_loss", "acc", "acc_step",
                                                                             "acc_epoch"}
    assert compiled.progress_bar_metrics.keys() == eager.progress_bar_metrics.keys()


@pytest.fixture(scope="module")
def bf16_amsgrad():
    return _pair(dict(opt="adam_amsgrad", frozen=True), dict(precision="bf16-mixed"))


def test_bf16_mixed_adam_amsgrad_frozen(bf16_amsgrad):
    eager, compiled = bf16_amsgrad
    # both engines autocast the same ops to bf16; kernels differ in accumulation order, so the
    # weights agree to bf16 rounding, not to fp32 rounding
    assert compiled.compile_report.mode == "full"
    # the autocast policy is applied by the capture; the amp pass has no cast to add for fp32 parameters
    assert compiled.compile_report.passes_applied == ["optimizer_fusion"], compiled.compile_report
    assert max_rel_diff(compiled.lightning_module, eager.lightning_module) < 2e-2
    assert compiled.lightning_module.net[0].weight.grad is None
    frozen = compiled.lightning_module.net[0].weight
    torch.testing.assert_close(frozen, MLP(frozen=True).net[0].weight)  # never updated


class GradHookMLP(MLP):
    def __init__(self) -> None:
        super().__init__(opt="adamw")
        self.seen = []

    def on_after_backward(self) -> None:
        g = self.net[0].weight.grad
        self.seen.append(None if g is None else g.clone())


def test_overridden_on_after_backward_sees_real_grads():
    eager_m, comp_m = GradHookMLP(), GradHookMLP()
    eager = fit(eager_m, False, epochs=1, accumulate_grad_batches=2, gradient_clip_val=1.0)
    compiled = fit(comp_m, True, epochs=1, accumulate_grad_batches=2, gradient_clip_val=1.0)
    report = compiled.compile_report
    assert report.mode == "fwd_bwd" and "on_after_backward" in report.fallback_reason
    # the update (clip done by the eager hooks) is a second compiled graph, not torch's step()
    assert report.update_compiled and "update" in report.graph_keys, report
    assert len(comp_m.seen) == len(eager_m.seen) == 7
    for a, b in zip(comp_m.seen, eager_m.seen):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    assert max_rel_diff(comp_m, eager_m) < FP32_TOL
    se, sc = eager.optimizers[0].state_dict(), compiled.optimizers[0].state_dict()
    assert se["param_groups"] == sc["param_groups"]
    for i in se["state"]:
        for key, v in se["state"][i].items():
            assert v.dtype == sc["state"][i][key].dtype, key
            torch.testing.assert_close(sc["state"][i][key], v, rtol=1e-4, atol=1e-6)


class _WeightDecayAt(L.Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == 8:
            for g in trainer.optimizers[0].param_groups:
                g["weight_decay"] = 0.3


def test_split_tier_new_hyperparameters_rebuild_only_the_update_graph():
    """Weight decay is baked into the update graph only: the forward+backward graphs (one per batch shape)
    are kept, the update graph is built again (the one recompile)."""
    eager_m, comp_m = GradHookMLP(), GradHookMLP()
    fit(eager_m, False, callbacks=[_WeightDecayAt()])
    compiled = fit(comp_m, True, callbacks=[_WeightDecayAt()])
    report = compiled.compile_report
    assert report.mode == "fwd_bwd", report
    assert report.graph_keys.count("update") == 2 and report.graphs_built == 4 and report.recompiles == 1, report
    assert max_rel_diff(comp_m, eager_m) < FP32_TOL


class BranchyMLP(MLP):
    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.cross_entropy(self.net(x), y)
        if loss > 100:  # data-dependent Python branch
            loss = loss * 0
        return loss


def test_data_dependent_branch_runs_as_regions():
    """A data-dependent Python branch splits the step into compiled regions (no warning: the run is the
    eager one's) and the report names the break's source line."""
    eager_m, comp_m = BranchyMLP(), BranchyMLP()
    fit(eager_m, False)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        compiled = fit(comp_m, True)
    assert not [w for w in rec if issubclass(w.category, CompileWarning)]
    report = compiled.compile_report
    assert report.mode == "regions" and "if loss > 100" in report.fallback_reason, report
    src, first = inspect.getsourcelines(BranchyMLP.training_step)
    branch = first + next(i for i, line in enumerate(src) if "if loss > 100" in line)
    assert len(report.graph_breaks) == 1 and f"test_engine.py:{branch}" in report.graph_breaks[0], report.graph_breaks
    assert report.regions and report.update_compiled, report  # after the break: `return loss`, no ops
    assert max_rel_diff(comp_m, eager_m) < FP32_TOL


def test_fallback_data_dependent_branch_one_warning_without_regions():
    eager_m, comp_m = BranchyMLP(), BranchyMLP()
    fit(eager_m, False)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        compiled = fit(comp_m, CompileConfig(regions=False))
    ours = [w for w in rec if issubclass(w.category, CompileWarning)]
    assert len(ours) == 1, [str(w.message) for w in ours]
    assert "if loss > 100" in str(ours[0].message)
    assert compiled.compile_report.mode == "eager"
    assert max_rel_diff(comp_m, eager_m) == 0.0  # the eager engine ran


def test_strict_raises():
    with pytest.raises(CompileError, match="if loss > 100"):
        fit(BranchyMLP(), "strict")


class EpochReader(MLP):
    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.cross_entropy(self.net(x), y) * (1 + self.current_epoch)


def test_python_state_read_is_guarded_and_captured_again():
    """``self.current_epoch`` read in the step is frozen in a graph: the guard on it captures the
    step again at the next epoch (the epoch factor 1, 2, 3 reaches the loss), silently and counted."""
    eager_m, comp_m = EpochReader(), EpochReader()
    fit(eager_m, False, epochs=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CompileWarning)
        compiled = fit(comp_m, True, epochs=3)
    report = compiled.compile_report
    # two changes; each sets the step up again, and both batch shapes (16 rows, the short last 4) are
    # captured again: four recompiles
    assert report.mode == "full" and len(report.recompile_reasons) == 2 and report.recompiles == 4
    assert max_rel_diff(comp_m, eager_m) < 1e-5


def test_compile_argument_validation():
    for bad in ("yes", 1):
        with pytest.raises(MisconfigurationException, match="compile"):
            L.Trainer(compile=bad)
    with pytest.raises(MisconfigurationException, match="nope"):
        CompileConfig(disable=("nope",))
    assert L.Trainer(compile="strict")._compile_config.strict


def test_module_state_dict_keys_stay_clean(adamw_clipnorm):
    eager, compiled, _ = adamw_clipnorm
    assert list(compiled.lightning_module.state_dict()) == list(eager.lightning_module.state_dict())
    assert type(compiled.lightning_module) is MLP


# ------------------------------------------------------------------ the passes, from the debug output
def _read(debug, pattern):
    files = sorted(glob.glob(os.path.join(debug, pattern)))
    assert files, pattern
    return open(files[0]).read()


def test_optimizer_fusion_pass_makes_one_update_call(adamw_clipnorm):
    _, compiled, debug = adamw_clipnorm
    before = _read(debug, "step0.*.optimizer_fusion.before.py")
    after = _read(debug, "step0.*.optimizer_fusion.after.py")
    assert before.count("trainer_compile.adam_param_") == 4  # one per parameter
    assert "trainer_compile.adam_param_" not in after
    # two param groups with different lr/weight decay: one multi-tensor call each
    from trainer.optim import HAS_CPP

    target = "torch.ops.trainer.fused_adamw_" if HAS_CPP else "foreach_adam_"
    assert after.count(target) == 2


def test_clipping_pass_folds_one_global_norm_into_the_update(adamw_clipnorm):
    _, _, debug = adamw_clipnorm
    before = _read(debug, "step0.*.clipping.before.py")
    after = _read(debug, "step0.*.clipping.after.py")
    from trainer.optim import HAS_CPP

    norm = "torch.ops.trainer.grad_norm" if HAS_CPP else "foreach_grad_norm"  # without trainer._C
    assert norm not in before and after.count(norm) == 1
    coefs = re.findall(r"clip_coef = (\w+)", after)
    assert len(coefs) == 4 and len(set(coefs)) == 1, coefs  # every update node reads the one coefficient
    assert f"{coefs[0]} = torch.ops.aten.clamp.default(" in after  # min(1, max_norm / (norm + 1e-6))


def test_accumulation_pass_micro_and_final(sgd_accum_clipvalue):
    _, _, debug = sgd_accum_clipvalue
    micro = _read(debug, "micro*.accumulation.after.py")
    before = _read(debug, "micro*.accumulation.before.py")
    assert "sgd_param_" not in micro and micro.count("aten.add_.Tensor") - before.count("aten.add_.Tensor") == 5
    final = _read(debug, "final*.accumulation.after.py")
    assert final.count("trainer_compile.sgd_param_") == 5 and final.count("aten.zero_") == 5  # 5 params (BN)
    clip = _read(debug, "final*.clipping.after.py")
    assert clip.count("aten.clamp") == 5


def test_fusion_disabled_runs_the_per_parameter_ops_and_still_matches():
    eager, compiled = _pair(dict(opt="adamw"), dict(gradient_clip_val=0.5),
                            CompileConfig(disable=("optimizer_fusion",)), epochs=2)
    # only the passes that changed the graph (k=1, fp32: accumulation and amp have nothing to do)
    assert compiled.compile_report.passes_applied == ["clipping"]
    _assert_same(eager, compiled)


@pytest.mark.parametrize("regions", [True, False])
def test_too_many_shapes_leave_the_whole_graph_tier_once(regions):
    """The short last batch is a second shape; with max_graphs=1 the step goes to compiled regions (dynamo
    makes the shape dynamic) or, without them, runs eagerly with one warning; the result is still the
    eager engine's."""
    eager_m, comp_m = MLP(), MLP()
    fit(eager_m, False, epochs=1)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        compiled = fit(comp_m, CompileConfig(max_graphs=1, regions=regions), epochs=1)
    ours = [w for w in rec if issubclass(w.category, CompileWarning)]
    report = compiled.compile_report
    if regions:
        assert not ours and report.mode == "regions" and "max_graphs" in report.fallback_reason, report
        assert report.steps_run == 7  # the short last batch too
    else:
        assert len(ours) == 1 and "max_graphs" in str(ours[0].message)
        assert report.mode == "eager" and report.steps_run == 6
    assert max_rel_diff(comp_m, eager_m) < FP32_TOL
