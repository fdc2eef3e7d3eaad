"""Compiled validation/test/predict steps against the eager engine."""
from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

import trainer as L
from trainer.compile import CompileConfig
from trainer.compile.engine import CompileWarning

from .models import MLP, make_data


class EvalMLP(MLP):
    def validation_step(self, batch, batch_idx):
        x, y = batch
        out = self.net(x)
        loss = F.cross_entropy(out, y)
        self.log("val_loss", loss, prog_bar=True)
        self.log_dict({"val_acc": (out.argmax(-1) == y).float().mean(), "const": 1.5})
        return {"loss": loss, "tag": "v", "none": None}

    def test_step(self, batch, batch_idx):
        x, y = batch
        self.log("test_loss", F.cross_entropy(self.net(x), y))

    def predict_step(self, batch, batch_idx):
        x = batch[0]
        return {"probs": self.net(x).softmax(-1), "n": x.shape[0]}

    def _loader(self, seed):
        x, y = make_data(40, seed=seed)
        return DataLoader(TensorDataset(x, y), batch_size=16)  # 16, 16, 8: two shapes

    def val_dataloader(self):
        return self._loader(1)

    def test_dataloader(self):
        return self._loader(2)

    def predict_dataloader(self):
        return self._loader(3)


def _trainer(compile):
    return L.Trainer(max_epochs=1, compile=compile, logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False)


@pytest.fixture(scope="module")
def eval_runs():
    out = {}
    for key, cfg in (("eager", False), ("compiled", CompileConfig())):
        model = EvalMLP()
        trainer = _trainer(cfg)
        trainer.fit(model)
        out[key] = dict(trainer=trainer, fit_metrics=dict(trainer.callback_metrics),
                        validate=trainer.validate(model), test=trainer.test(model),
                        predict=trainer.predict(model))
    return out


def test_validate_and_test_results_match_eager(eval_runs):
    e, c = eval_runs["eager"], eval_runs["compiled"]
    for stage in ("validate", "test"):
        assert len(c[stage]) == len(e[stage]) == 1
        assert c[stage][0].keys() == e[stage][0].keys()
        for k, v in e[stage][0].items():
            assert c[stage][0][k] == pytest.approx(v, rel=1e-5, abs=1e-6), (stage, k)
    assert c["fit_metrics"].keys() == e["fit_metrics"].keys()
    for k, v in e["fit_metrics"].items():
        torch.testing.assert_close(c["fit_metrics"][k], v, rtol=1e-5, atol=1e-6)


def test_predict_outputs_match_eager(eval_runs):
    e, c = eval_runs["eager"]["predict"], eval_runs["compiled"]["predict"]
    assert len(c) == len(e) == 3
    for a, b in zip(c, e):
        assert a["n"] == b["n"]
        torch.testing.assert_close(a["probs"], b["probs"], rtol=1e-5, atol=1e-6)


def test_eval_steps_ran_compiled(eval_runs):
    engine = eval_runs["compiled"]["trainer"]._eval_engine
    assert engine.fallback_reasons == {}
    # validation (16 and 8 rows: sanity check and the fit's epoch share the 16-row graph), validate()
    # (its loader yields inference tensors, whose dispatch keys the guards check: 2 graphs of their
    # own), test, predict; none captured again
    assert engine.graphs_built == 8, engine.graphs_built
    assert engine.recompile_reasons == []
    assert engine.steps_run == 2 + 3 + 3 + 3 + 3
    # the same figures through the public report, next to the training step's
    report = eval_runs["compiled"]["trainer"].compile_report
    assert report.mode == "full" and report.eval.graphs_built == 8 and report.eval.steps_run == 14
    assert report.eval.compile_seconds > 0 and report.eval.fallback_reasons == {}
    assert "eval: 8 graph(s)" in str(report)
    assert eval_runs["eager"]["trainer"].compile_report is None  # compile off: nothing to report


class BatchIdxReader(EvalMLP):
    """Reads ``batch_idx``, which a graph would freeze: its guard fails at every batch of the same shape."""

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", F.cross_entropy(self.net(x), y) * (batch_idx + 1))

    def val_dataloader(self):
        x, y = make_data(40, seed=1)
        return DataLoader(TensorDataset(x, y), batch_size=8)  # five batches of one shape


def test_eval_fallback_one_warning_same_results():
    results = {}
    for cfg in (False, True):
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always")
            results[cfg] = _trainer(cfg).validate(BatchIdxReader())
        ours = [w for w in rec if issubclass(w.category, CompileWarning)]
        assert len(ours) == (1 if cfg else 0), [str(w.message) for w in ours]
    assert "batch_idx" in str(ours[0].message) and "at every step" in str(ours[0].message)
    assert results[True][0]["val_loss"] == pytest.approx(results[False][0]["val_loss"], rel=1e-6)
    # validate() alone: the report exists, has no training step, and names the eager eval step
    trainer = _trainer(True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.validate(BatchIdxReader())
    report = trainer.compile_report
    assert report.mode is None and "batch_idx" in report.eval.fallback_reasons["validation_step"]
    assert "no training step run" in str(report)


def test_eval_steps_can_be_turned_off():
    trainer = _trainer(CompileConfig(eval_steps=False))
    trainer.validate(EvalMLP())
    assert trainer._eval_engine is None and trainer.compile_report is None  # no compiled eval step ran


class OutputCollector(EvalMLP):
    """Lightning 2's recommended pattern: collect step outputs on the module for the epoch end."""

    def __init__(self) -> None:
        super().__init__()
        self.outs = []

    def validation_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self.net(x), y)
        self.outs.append(loss)

    def on_validation_epoch_end(self):
        self.log("mean_loss", torch.stack(self.outs).mean())
        self.outs.clear()


def test_python_side_effect_falls_back_and_is_not_duplicated():
    with pytest.warns(CompileWarning, match="changes `self.outs`"):
        compiled = _trainer(True).validate(OutputCollector())
    assert compiled == _trainer(False).validate(OutputCollector())


class MetricLogger(EvalMLP):
    def __init__(self) -> None:
        super().__init__()
        from torchmetrics.classification import MulticlassAccuracy

        self.val_acc = MulticlassAccuracy(num_classes=4)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.val_acc.update(self.net(x), y)  # state update in a submodule: Python side effect
        self.log("val_acc", self.val_acc)


def test_torchmetrics_update_is_not_frozen_into_a_graph():
    import torchmetrics  # noqa: F401  (installed with pytorch-lightning, test extra)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        compiled = _trainer(True).validate(MetricLogger())
    assert len([w for w in rec if issubclass(w.category, CompileWarning)]) == 1
    assert compiled == _trainer(False).validate(MetricLogger())


class EventRecorder(EvalMLP):
    """A validation step with Python side effects and no tensor operation at all."""

    def __init__(self):
        super().__init__()
        self.events = []

    def validation_step(self, batch, batch_idx):
        self.events.append(batch_idx)
        self.log("n", float(batch_idx))


def test_eval_step_without_tensor_ops_runs_its_python_once_per_batch():
    model = EventRecorder()
    with pytest.warns(CompileWarning, match=r"self\.events"):
        out = _trainer(True).validate(model, verbose=False)
    assert model.events == [0, 1, 2]  # not run a second time by the capture
    assert out[0]["n"] == pytest.approx((0 * 16 + 1 * 16 + 2 * 8) / 40)  # batch-size-weighted mean


CLASS_WEIGHTS = torch.ones(4)  # read by WeightedEval.validation_step; the test rebinds and scales it


class WeightedEval(EvalMLP):
    """A validation step reading tensors that are neither parameters, buffers nor the batch: a module-level
    tensor and a plain tensor attribute (graph inputs looked up at every call, not constants)."""

    def __init__(self):
        super().__init__()
        self.shift = torch.zeros(4)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", F.cross_entropy(self.net(x) + self.shift, y, weight=CLASS_WEIGHTS))


def test_eval_step_reads_free_tensors_as_they_are_now():
    global CLASS_WEIGHTS
    results = {}
    for compile_on in (False, True):
        CLASS_WEIGHTS = torch.ones(4)
        model, trainer = WeightedEval(), _trainer(compile_on)
        with warnings.catch_warnings():
            warnings.simplefilter("error", CompileWarning)  # no fallback
            first = trainer.validate(model, verbose=False)
            CLASS_WEIGHTS = torch.tensor([0.1, 1.0, 3.0, 0.5])  # rebound
            model.shift.add_(torch.tensor([2.0, 0.0, -1.0, 0.0]))  # changed in place
            second = trainer.validate(model, verbose=False)
        results[compile_on] = (first, second)
        if compile_on:
            assert trainer._eval_engine.recompile_reasons == []
    assert results[True] == results[False]
    assert results[True][0] != results[True][1]
