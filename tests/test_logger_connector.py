"""ResultCollection naming and reductions, LoggerConnector views and logger calls."""
from __future__ import annotations

import pytest
import torch

from trainer.exceptions import MisconfigurationException
from trainer.logger_connector import LoggerConnector, ResultCollection, check_logging_levels


def _floats(d):
    return {k: float(v) for k, v in d.items()}


# ----------------------------------------------------------------------------- levels
@pytest.mark.parametrize("fx, expected", [
    ("training_step", (True, False)), ("on_train_batch_end", (True, False)), ("on_before_backward", (True, False)),
    ("validation_step", (False, True)), ("test_step", (False, True)), ("on_validation_batch_end", (False, True)),
    ("on_train_epoch_end", (False, True)), ("on_validation_epoch_end", (False, True)), ("on_train_start", (False, True)),
])
def test_default_levels(fx, expected):
    assert check_logging_levels(fx, None, None) == expected


def test_default_levels_match_lightning():
    from pytorch_lightning.trainer.connectors.logger_connector.fx_validator import _FxValidator

    for fx, opts in _FxValidator.functions.items():
        if opts is None:
            with pytest.raises(MisconfigurationException):
                check_logging_levels(fx, None, None)
        else:
            assert check_logging_levels(fx, None, None) == (opts["default_on_step"], opts["default_on_epoch"]), fx


def test_levels_errors():
    with pytest.raises(MisconfigurationException, match="on_step"):
        check_logging_levels("on_train_epoch_end", True, None)
    with pytest.raises(MisconfigurationException, match="setup"):
        check_logging_levels("setup", None, None)
    with pytest.raises(RuntimeError, match="not implemented"):
        check_logging_levels("my_custom_hook", None, None)


# ----------------------------------------------------------------------------- ResultCollection
def test_names_step_epoch_and_dicts():
    r = ResultCollection(training=True)
    r.log("training_step", "both", torch.tensor(1.0), on_step=True, on_epoch=True, prog_bar=True)
    r.log("training_step", "step", torch.tensor(2.0), on_step=True, on_epoch=False)
    r.log("training_step", "epoch", torch.tensor(3.0), on_step=False, on_epoch=True, logger=False)
    r.log("training_step", "both", torch.tensor(3.0), on_step=True, on_epoch=True, prog_bar=True)
    step = r.metrics(on_step=True)
    assert _floats(step["log"]) == {"both_step": 3.0, "step": 2.0}
    assert _floats(step["callback"]) == {"both": 3.0, "both_step": 3.0, "step": 2.0}
    assert _floats(step["pbar"]) == {"both_step": 3.0}
    epoch = r.metrics(on_step=False)
    assert _floats(epoch["log"]) == {"both_epoch": 2.0}
    assert _floats(epoch["callback"]) == {"both": 2.0, "both_epoch": 2.0, "epoch": 3.0}
    assert _floats(epoch["pbar"]) == {"both_epoch": 2.0}


def test_eval_callback_metrics_only_on_epoch():
    r = ResultCollection(training=False)
    r.log("validation_step", "s", torch.tensor(1.0), on_step=True, on_epoch=False)
    r.log("validation_step", "e", torch.tensor(2.0), on_step=False, on_epoch=True)
    assert r.metrics(on_step=True)["callback"] == {}
    assert set(r.metrics(on_step=False)["callback"]) == {"e"}


def test_dataloader_suffix():
    r = ResultCollection(training=False)
    for idx in (0, 1):
        r.dataloader_idx = idx
        r.log("validation_step", "loss", torch.tensor(float(idx)), on_step=False, on_epoch=True)
        assert set(r.metrics(on_step=False)["log"]) == {f"loss/dataloader_idx_{idx}"}
    r.dataloader_idx = 1
    r.log("validation_step", "raw", torch.tensor(5.0), on_step=False, on_epoch=True, add_dataloader_idx=False)
    assert "raw" in r.metrics(on_step=False)["log"]


@pytest.mark.parametrize("reduce, expected", [("mean", 2.0), ("sum", 6.0), ("max", 3.0), ("min", 1.0), ("avg", 2.0)])
def test_reductions(reduce, expected):
    r = ResultCollection(training=False)
    for v in (1.0, 3.0, 2.0):
        r.log("validation_step", "m", torch.tensor(v), on_step=False, on_epoch=True, reduce_fx=reduce, batch_size=4)
    assert float(r.metrics(on_step=False)["log"]["m"]) == expected


def test_mean_weighted_by_batch_size_inferred_and_explicit():
    r = ResultCollection(training=False)
    for v, bs in ((1.0, 4), (2.0, 4), (4.0, 2)):
        r.batch = torch.zeros(bs, 3)
        r.batch_size = None
        r.log("validation_step", "inferred", torch.tensor(v), on_step=False, on_epoch=True)
        r.log("validation_step", "explicit", torch.tensor(v), on_step=False, on_epoch=True, batch_size=1)
    out = _floats(r.metrics(on_step=False)["log"])
    assert out["inferred"] == pytest.approx((4 + 8 + 8) / 10)
    assert out["explicit"] == pytest.approx(7 / 3)


def test_invalid_reduce_and_flags():
    r = ResultCollection(training=True)
    with pytest.raises(MisconfigurationException, match="reduce_fx"):
        r.log("training_step", "x", torch.tensor(1.0), reduce_fx="median")
    with pytest.raises(MisconfigurationException, match="on_step=False, on_epoch=False"):
        r.log("training_step", "x", torch.tensor(1.0), on_step=False, on_epoch=False)
    r.log("training_step", "x", torch.tensor(1.0), on_step=True, on_epoch=False)
    with pytest.raises(MisconfigurationException, match="twice"):
        r.log("training_step", "x", torch.tensor(1.0), on_step=True, on_epoch=True)


def test_integer_value_warns_and_becomes_float():
    r = ResultCollection(training=True)
    with pytest.warns(UserWarning, match="floating"):
        r.log("training_step", "i", torch.tensor(3), on_step=True, on_epoch=False)
    assert r.metrics(on_step=True)["log"]["i"].dtype == torch.float32


def test_values_are_detached_unless_enable_graph():
    r = ResultCollection(training=True)
    w = torch.ones((), requires_grad=True)
    r.log("training_step", "d", w * 2, on_step=True, on_epoch=False)
    r.log("training_step", "g", w * 2, on_step=True, on_epoch=False, enable_graph=True)
    m = r.metrics(on_step=True)["callback"]
    assert not m["d"].requires_grad and m["g"].requires_grad


def test_reset_by_fx_and_has_reset():
    r = ResultCollection(training=True)
    r.log("training_step", "a", torch.tensor(1.0), on_step=True, on_epoch=False)
    r.log("on_train_epoch_end", "b", torch.tensor(1.0), on_step=False, on_epoch=True)
    r.reset(fx="training_step")
    assert set(r.metrics(on_step=False)["log"]) == {"b"}
    assert r["training_step.a"].has_reset
    r.reset()
    assert r.metrics(on_step=False)["log"] == {}


# ----------------------------------------------------------------------------- LoggerConnector
class _Rec:
    def __init__(self):
        self.calls = []
        self.saves = 0

    def log_metrics(self, metrics, step):
        self.calls.append((dict(metrics), step))

    def save(self):
        self.saves += 1


class _FakeTrainer:
    """Just what LoggerConnector reads."""

    def __init__(self, results, loggers=()):
        from types import SimpleNamespace

        self._results = results
        self.loggers = list(loggers)
        self.current_epoch = 3
        self.fit_loop = SimpleNamespace(epoch_loop=SimpleNamespace(_batches_that_stepped=11))
        self.log_every_n_steps = 1
        self.should_stop = False
        self.sanity_checking = False


def test_log_metrics_adds_epoch_and_step():
    rec = _Rec()
    conn = LoggerConnector(_FakeTrainer(ResultCollection(True), [rec]))
    conn.log_metrics({"a": torch.tensor(1.5), "b": 2})
    assert rec.calls == [({"a": 1.5, "b": 2.0, "epoch": 3}, 11)]
    assert rec.saves == 1
    conn.log_metrics({"c": torch.tensor(1.0), "step": torch.tensor(5.0)})
    assert rec.calls[-1] == ({"c": 1.0}, 5)
    conn.log_metrics({"d": 1.0}, step=2)
    assert rec.calls[-1] == ({"d": 1.0}, 2)
    assert set(conn._logged_metrics) >= {"a", "b", "c", "d"}


def test_log_metrics_without_loggers_is_noop():
    conn = LoggerConnector(_FakeTrainer(ResultCollection(True), []))
    conn.log_metrics({"a": 1.0})
    assert conn._logged_metrics == {}


def test_reset_if_new_fx_resets_only_first_iteration():
    r = ResultCollection(training=True)
    conn = LoggerConnector(_FakeTrainer(r))
    r.log("on_train_batch_end", "x", torch.tensor(1.0), on_step=True, on_epoch=True)
    conn.reset_if_new_fx("on_train_batch_end")  # first iteration, new fx: its tensor results restart (Lightning)
    assert r["on_train_batch_end.x"].has_reset
    r.log("training_step", "y", torch.tensor(1.0), on_step=True, on_epoch=True)
    conn.reset_if_new_fx("on_train_batch_end")  # other fx keys are untouched
    assert not r["training_step.y"].has_reset
    conn._current_fx = "training_step"
    conn._first_loop_iter = False
    r["on_train_batch_end.x"].has_reset = False
    conn.reset_if_new_fx("on_train_batch_end")
    assert not r["on_train_batch_end.x"].has_reset


def test_connector_views_and_progress_bar_floats():
    r = ResultCollection(training=True)
    conn = LoggerConnector(_FakeTrainer(r))
    r.log("training_step", "p", torch.tensor(0.25), on_step=True, on_epoch=True, prog_bar=True)
    conn.on_batch_start(torch.zeros(2, 1))
    assert conn._first_loop_iter is True
    pbar = conn.progress_bar_metrics
    assert pbar == {"p_step": 0.25} and type(pbar["p_step"]) is float
    assert set(conn.callback_metrics) == {"p", "p_step"}
    conn.on_batch_end()
    conn.epoch_end_reached()
    assert set(conn.callback_metrics) == {"p", "p_step", "p_epoch"}
    conn.reset_metrics()
    conn.trainer._results = None
    assert conn.callback_metrics == {}
