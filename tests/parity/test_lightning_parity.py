"""Same LightningModule code under pytorch-lightning 2.6.6 and under `trainer`: same results.

Every scenario is a function ``(L, root) -> result`` written once against the framework module
``L``. The ``run_both`` fixture runs it under Lightning first (so the scenario itself is exercised
even while `trainer` has not landed; where a count is known, it is also asserted literally on
Lightning's result), then under `trainer`, and ``assert_same`` compares the results recursively.

Tolerances: fp32 and fp64 results within 1e-6 relative (atol 1e-7 for values near zero);
bf16-mixed within 1e-2 relative / 1e-3 absolute (bf16 keeps 8 mantissa bits, ~4e-3 relative per
rounding, and a different but equally valid op order in autocast may round differently).

Initial weights come from a private seeded RNG inside the module (tests/helpers/models.py), and
loaders do not shuffle, so the two runs see identical weights and batches.
"""
from __future__ import annotations

import math
import warnings
from typing import Any, Callable, Dict, List

import pytest
import torch
from helpers import (
    datamodule_class,
    import_framework,
    make_loader,
    mlp_module_class,
    quiet_trainer_kwargs,
    state,
)
from helpers.data import InputOnlyDataset

pytestmark = [pytest.mark.parity, pytest.mark.filterwarnings("ignore::UserWarning")]

FP32_RTOL, FP32_ATOL = 1e-6, 1e-7
BF16_RTOL, BF16_ATOL = 1e-2, 1e-3


# --------------------------------------------------------------------------------------------
# Comparison machinery
# --------------------------------------------------------------------------------------------


def _to_plain(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu()
    if isinstance(x, dict):
        return {k: _to_plain(v) for k, v in x.items()}
    if isinstance(x, tuple):
        return tuple(_to_plain(v) for v in x)
    if isinstance(x, list):
        return [_to_plain(v) for v in x]
    return x


def assert_same(got: Any, expected: Any, rtol: float = FP32_RTOL, atol: float = FP32_ATOL, path: str = "result"):
    """Recursive equality: dict keys exact, lists same length, tensors/floats within tolerance."""
    if isinstance(expected, dict):
        assert isinstance(got, dict), f"{path}: expected a dict, got {type(got).__name__}: {got!r}"
        assert sorted(map(str, got)) == sorted(map(str, expected)), (
            f"{path}: keys differ: got {sorted(map(str, got))} expected {sorted(map(str, expected))}"
        )
        for k in expected:
            assert_same(got[k], expected[k], rtol, atol, f"{path}[{k!r}]")
    elif isinstance(expected, (list, tuple)):
        assert isinstance(got, (list, tuple)), f"{path}: expected a list, got {type(got).__name__}: {got!r}"
        assert len(got) == len(expected), f"{path}: length {len(got)} != expected {len(expected)}"
        for i, (g, e) in enumerate(zip(got, expected)):
            assert_same(g, e, rtol, atol, f"{path}[{i}]")
    elif isinstance(expected, torch.Tensor):
        assert isinstance(got, torch.Tensor), f"{path}: expected a tensor, got {type(got).__name__}: {got!r}"
        assert got.shape == expected.shape, f"{path}: shape {tuple(got.shape)} != expected {tuple(expected.shape)}"
        assert got.dtype == expected.dtype, f"{path}: dtype {got.dtype} != expected {expected.dtype}"
        torch.testing.assert_close(got, expected, rtol=rtol, atol=atol, msg=lambda m: f"{path}: {m}")
    elif isinstance(expected, float):
        assert isinstance(got, (float, int)) and not isinstance(got, bool), f"{path}: got {got!r} expected {expected!r}"
        assert math.isclose(got, expected, rel_tol=rtol, abs_tol=atol), f"{path}: got {got!r} expected {expected!r}"
    else:
        assert got == expected, f"{path}: got {got!r} expected {expected!r}"


class Runner:
    """``lightning(scenario, **kw)`` then ``trainer(scenario, **kw)``: the same scenario under each.

    Tests assert their literal expectations on Lightning's result BEFORE asking for `trainer`'s,
    so those checks run (and keep the expectations honest) even while `trainer` is absent.
    """

    def __init__(self, root):
        self.root = root

    def lightning(self, scenario: Callable, **kw):
        return _to_plain(scenario(import_framework("lightning"), self.root / "lightning", **kw))

    def trainer(self, scenario: Callable, **kw):
        TL = import_framework("trainer")  # skips here only while trainer/trainer.py is absent
        return _to_plain(scenario(TL, self.root / "trainer", **kw))


@pytest.fixture
def run(tmp_path):
    return Runner(tmp_path)


def metrics_as_floats(metrics: Dict[str, Any]) -> Dict[str, float]:
    return {k: float(v) for k, v in metrics.items()}


def lrs(trainer) -> List[List[float]]:
    return [[float(g["lr"]) for g in opt.param_groups] for opt in trainer.optimizers]


def make_counter(L):
    class CountingCallback(L.Callback):
        def __init__(self):
            self.val_runs: List[tuple] = []  # (current_epoch, global_step) at each non-sanity validation end
            self.train_batches = 0
            self.val_batches = 0
            self.train_batch_sums: List[float] = []
            self.val_batch_sums: List[float] = []

        def on_validation_end(self, trainer, pl_module):
            if not trainer.sanity_checking:
                self.val_runs.append((trainer.current_epoch, trainer.global_step))

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.train_batches += 1
            self.train_batch_sums.append(round(float(batch[0].sum()), 4))

        def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
            if not trainer.sanity_checking:
                self.val_batches += 1
                self.val_batch_sums.append(round(float(batch[0].sum()), 4))

    return CountingCallback()


# --------------------------------------------------------------------------------------------
# Final weights under various optimisation set-ups
# --------------------------------------------------------------------------------------------


def _optim_module(L, kind: str):
    Base = mlp_module_class(L)

    class M(Base):
        def configure_optimizers(self):
            if kind == "sgd":
                return torch.optim.SGD(self.parameters(), lr=0.1)
            if kind == "sgd_momentum":
                return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
            opt = torch.optim.AdamW(self.parameters(), lr=0.01, weight_decay=0.1)
            if kind == "adamw_steplr_step":
                sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
                return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
            if kind == "adamw_steplr_epoch":
                sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
                return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}
            if kind == "adamw_plateau":
                # threshold=10 (relative) makes every epoch "no improvement": lr halves after each
                # validation, so the test fails if the plateau scheduler is not stepped (or stepped
                # at the wrong time).
                sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=0, threshold=10.0)
                return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "monitor": "val_loss"}}
            return opt

        def validation_step(self, batch, batch_idx):
            loss = self.loss(batch)
            self.log("val_loss", loss)
            return loss

    return M()


def scenario_weights(L, root, kind="sgd", n_train=16, with_val=False, max_epochs=2, **trainer_kw):
    model = _optim_module(L, kind)
    trainer = L.Trainer(max_epochs=max_epochs, num_sanity_val_steps=0, **quiet_trainer_kwargs(root), **trainer_kw)
    val = make_loader(8, 4, seed=1) if with_val else None
    trainer.fit(model, make_loader(n_train, 4), val)
    return {"weights": state(model), "global_step": trainer.global_step, "lr": lrs(trainer)}


@pytest.mark.parametrize(
    "kind, kw, expected_steps",
    [
        pytest.param("sgd", {}, 8, id="plain_sgd"),
        pytest.param("sgd_momentum", {}, 8, id="sgd_momentum_wd"),
        pytest.param("adamw_steplr_step", {}, 8, id="adamw_steplr_interval_step"),
        pytest.param("adamw_steplr_epoch", {}, 8, id="adamw_steplr_interval_epoch"),
        # 7 batches/epoch, k=3: steps after batches 3, 6 and the last (7): 3 per epoch.
        pytest.param(
            "sgd",
            dict(n_train=28, accumulate_grad_batches=3, gradient_clip_val=0.3),
            6,
            id="accumulate3_clip_norm",
        ),
        pytest.param(
            "adamw",
            dict(n_train=28, accumulate_grad_batches=3, gradient_clip_val=0.3, gradient_clip_algorithm="norm"),
            6,
            id="adamw_accumulate3_clip_norm",
        ),
        pytest.param("sgd", dict(gradient_clip_val=0.05, gradient_clip_algorithm="value"), 8, id="clip_value"),
        pytest.param("adamw_plateau", dict(with_val=True, max_epochs=3), 12, id="reduce_lr_on_plateau_val_loss"),
    ],
)
def test_final_weights(run, kind, kw, expected_steps):
    expected = run.lightning(scenario_weights, kind=kind, **kw)
    assert expected["global_step"] == expected_steps
    got = run.trainer(scenario_weights, kind=kind, **kw)
    assert_same(got, expected)


def test_schedulers_changed_lr_in_lightning(tmp_path):
    """Guards the scenarios above: the schedulers really move the lr (else parity proves little)."""
    PL = import_framework("lightning")
    assert scenario_weights(PL, tmp_path, kind="adamw_steplr_step")["lr"] == [[pytest.approx(0.01 * 0.5**4)]]
    assert scenario_weights(PL, tmp_path, kind="adamw_steplr_epoch")["lr"] == [[pytest.approx(0.01 * 0.5**2)]]
    plateau = scenario_weights(PL, tmp_path, kind="adamw_plateau", with_val=True, max_epochs=3)["lr"]
    assert plateau == [[pytest.approx(0.01 * 0.5**3)]]


def scenario_manual_two_optimizers(L, root):
    Base = mlp_module_class(L)

    class Manual(Base):
        def __init__(self):
            super().__init__()
            self.automatic_optimization = False

        def configure_optimizers(self):
            opt_a = torch.optim.SGD(self.net[0].parameters(), lr=0.1, momentum=0.5)
            opt_b = torch.optim.Adam(self.net[2].parameters(), lr=0.01)
            sched_b = torch.optim.lr_scheduler.StepLR(opt_b, step_size=1, gamma=0.7)
            return [opt_a, opt_b], [sched_b]

        def training_step(self, batch, batch_idx):
            opt_a, opt_b = self.optimizers()
            loss = self.loss(batch)
            opt_a.zero_grad()
            opt_b.zero_grad()
            self.manual_backward(loss)
            self.clip_gradients(opt_a, gradient_clip_val=0.5, gradient_clip_algorithm="norm")
            opt_a.step()
            if batch_idx % 2 == 1:
                opt_b.step()
            self.log("manual_loss", loss)
            return loss

        def on_train_epoch_end(self):
            self.lr_schedulers().step()

    model = Manual()
    trainer = L.Trainer(max_epochs=2, **quiet_trainer_kwargs(root))
    trainer.fit(model, make_loader(16, 4))
    return {
        "weights": state(model),
        "global_step": trainer.global_step,
        "lr": lrs(trainer),
        "callback_metrics": metrics_as_floats(trainer.callback_metrics),
    }


def test_manual_optimization_two_optimizers(run):
    expected = run.lightning(scenario_manual_two_optimizers)
    # global_step counts optimizer steps of all optimizers in manual optimization: 8 + 4.
    assert expected["global_step"] == 12
    assert expected["lr"] == [[0.1], [pytest.approx(0.01 * 0.7**2)]]
    got = run.trainer(scenario_manual_two_optimizers)
    assert_same(got, expected)


# --------------------------------------------------------------------------------------------
# self.log / log_dict
# --------------------------------------------------------------------------------------------


def scenario_logging(L, root, logger=False):
    Base = mlp_module_class(L)

    class Logging(Base):
        def training_step(self, batch, batch_idx):
            loss = self.loss(batch)
            self.log("train_loss", loss, prog_bar=True)  # training_step default: on_step only
            self.log("both", loss, on_step=True, on_epoch=True)  # -> both_step / both_epoch
            self.log("mx", loss, on_epoch=True, reduce_fx="max", logger=False)
            self.log("epoch_only", loss, on_step=False, on_epoch=True, prog_bar=True)
            self.log("explicit_bs", float(batch_idx), on_step=False, on_epoch=True, batch_size=1 + batch_idx)
            self.log_dict({"a": batch_idx * 1.0, "b": torch.tensor(2.0 * batch_idx)}, on_epoch=True)
            return loss

        def on_train_epoch_end(self):
            self.log("epoch_end_metric", float(self.current_epoch) + 0.5)  # default on_epoch

        def on_train_epoch_start(self):
            self.log("epoch_start_metric", float(self.current_epoch))  # default on_epoch

        def on_train_batch_end(self, outputs, batch, batch_idx):
            self.log("batch_end_metric", float(batch_idx) * 10)  # default on_step (like training_step)
            self.log("batch_end_mean", float(batch_idx), on_epoch=True, batch_size=2)  # -> _step/_epoch

        def validation_step(self, batch, batch_idx):
            loss = self.loss(batch)
            self.log("val_loss", loss, prog_bar=True)  # validation default: on_epoch only
            self.log("val_step_too", loss, on_step=True)  # on_step in validation -> val_step_too_step?
            self.log("val_max", loss, reduce_fx="max")
            return loss

        def on_validation_epoch_end(self):
            self.log_dict({"val_epoch_end_a": 1.0, "val_epoch_end_b": 2.0}, prog_bar=True)

    model = Logging()
    kw = quiet_trainer_kwargs(root)
    kw["logger"] = logger
    trainer = L.Trainer(max_epochs=2, log_every_n_steps=1, num_sanity_val_steps=0, **kw)
    # 10 train samples in batches of 4 -> 4, 4, 2 (uneven: epoch means are batch-size weighted);
    # 6 val samples -> 4, 2.
    trainer.fit(model, make_loader(10, 4), make_loader(6, 4, seed=1))
    return {
        "callback_metrics": metrics_as_floats(trainer.callback_metrics),
        "logged_metrics": metrics_as_floats(trainer.logged_metrics),
        "progress_bar_metrics": metrics_as_floats(trainer.progress_bar_metrics),
    }


@pytest.mark.parametrize("logger", [False, True], ids=["logger_off", "default_logger"])
def test_logging(run, logger):
    expected = run.lightning(scenario_logging, logger=logger)
    cb = expected["callback_metrics"]
    # Literal checks of Lightning's naming rules (so a Lightning upgrade that changes them shows up).
    assert {"both_step", "both_epoch", "both", "mx", "mx_step", "mx_epoch", "a_step", "a_epoch"} <= set(cb)
    assert "train_loss_epoch" not in cb and "val_loss_step" not in cb
    assert set(expected["progress_bar_metrics"]) == {
        "train_loss",
        "epoch_only",
        "val_loss",
        "val_epoch_end_a",
        "val_epoch_end_b",
    }
    assert "mx_epoch" not in expected["logged_metrics"] and "mx_step" not in expected["logged_metrics"]
    assert cb["a_epoch"] == pytest.approx((0 * 4 + 1 * 4 + 2 * 2) / 10)  # batch-size weighted
    assert cb["explicit_bs"] == pytest.approx((0 * 1 + 1 * 2 + 2 * 3) / 6)
    assert cb["batch_end_metric"] == 20.0 and "batch_end_metric_epoch" not in cb
    assert cb["batch_end_mean_epoch"] == pytest.approx(1.0) and cb["batch_end_mean_step"] == 2.0
    assert cb["epoch_start_metric"] == 1.0 and "epoch_start_metric_step" not in cb
    got = run.trainer(scenario_logging, logger=logger)
    assert_same(got, expected)


# --------------------------------------------------------------------------------------------
# validate / test / predict return values
# --------------------------------------------------------------------------------------------


def _eval_module(L):
    Base = mlp_module_class(L)

    class Eval(Base):
        def validation_step(self, batch, batch_idx, dataloader_idx=0):
            loss = self.loss(batch)
            self.log("val_loss", loss)
            self.log("val_max", loss, reduce_fx="max")
            return loss

        def test_step(self, batch, batch_idx, dataloader_idx=0):
            loss = self.loss(batch)
            self.log("test_loss", loss)
            self.log_dict({"test_const": 3.0})
            return loss

    return Eval()


def scenario_eval(L, root, fn="validate", two_loaders=False):
    model = _eval_module(L)
    trainer = L.Trainer(**quiet_trainer_kwargs(root))
    loaders = [make_loader(6, 4, seed=1), make_loader(8, 3, seed=2)] if two_loaders else make_loader(6, 4, seed=1)
    out = getattr(trainer, fn)(model, dataloaders=loaders)
    return {"returned": [metrics_as_floats(d) for d in out], "callback_metrics": metrics_as_floats(trainer.callback_metrics)}


@pytest.mark.parametrize("fn", ["validate", "test"])
@pytest.mark.parametrize("two_loaders", [False, True], ids=["one_loader", "two_loaders"])
def test_eval_return_values(run, fn, two_loaders):
    expected = run.lightning(scenario_eval, fn=fn, two_loaders=two_loaders)
    prefix = "val" if fn == "validate" else "test"
    if two_loaders:
        assert len(expected["returned"]) == 2
        assert f"{prefix}_loss/dataloader_idx_0" in expected["returned"][0]
        assert f"{prefix}_loss/dataloader_idx_1" in expected["returned"][1]
    else:
        assert len(expected["returned"]) == 1 and f"{prefix}_loss" in expected["returned"][0]
    got = run.trainer(scenario_eval, fn=fn, two_loaders=two_loaders)
    assert_same(got, expected)


def scenario_predict(L, root, two_loaders=False, return_predictions=None):
    model = mlp_module_class(L)()
    trainer = L.Trainer(**quiet_trainer_kwargs(root))
    loader = torch.utils.data.DataLoader(InputOnlyDataset(10), batch_size=4)
    loaders = [loader, torch.utils.data.DataLoader(InputOnlyDataset(3, seed=5), batch_size=2)] if two_loaders else loader
    kw = {} if return_predictions is None else {"return_predictions": return_predictions}
    return {"predictions": trainer.predict(model, dataloaders=loaders, **kw)}


@pytest.mark.parametrize("two_loaders", [False, True], ids=["one_loader", "two_loaders"])
def test_predict_outputs(run, two_loaders):
    expected = run.lightning(scenario_predict, two_loaders=two_loaders)
    if two_loaders:  # a list per dataloader
        assert [len(p) for p in expected["predictions"]] == [3, 2]
    else:
        assert [tuple(p.shape) for p in expected["predictions"]] == [(4, 2), (4, 2), (2, 2)]
    got = run.trainer(scenario_predict, two_loaders=two_loaders)
    assert_same(got, expected)


def test_predict_return_predictions_false(run):
    expected = run.lightning(scenario_predict, return_predictions=False)
    assert expected["predictions"] is None
    got = run.trainer(scenario_predict, return_predictions=False)
    assert_same(got, expected)


# --------------------------------------------------------------------------------------------
# Loop control: when validation runs, when training stops, how many batches
# --------------------------------------------------------------------------------------------


def scenario_loop(L, root, n_train=16, n_val=8, stop_at_first_batch=False, **trainer_kw):
    Base = mlp_module_class(L)

    class M(Base):
        def training_step(self, batch, batch_idx):
            if stop_at_first_batch:
                self.trainer.should_stop = True
            return super().training_step(batch, batch_idx)

    counter = make_counter(L)
    model = M()
    kw = quiet_trainer_kwargs(root)
    kw.update(trainer_kw)
    kw.setdefault("max_epochs", 1)
    kw.setdefault("num_sanity_val_steps", 0)
    trainer = L.Trainer(callbacks=[counter], **kw)
    trainer.fit(model, make_loader(n_train, 4), make_loader(n_val, 4, seed=1))
    return {
        "val_runs": counter.val_runs,
        "train_batches": counter.train_batches,
        "val_batches": counter.val_batches,
        "train_batch_sums": counter.train_batch_sums,
        "val_batch_sums": counter.val_batch_sums,
        "global_step": trainer.global_step,
        "current_epoch": trainer.current_epoch,
        "should_stop": bool(trainer.should_stop),
        "weights": state(model),
    }


# (trainer kwargs, literal expectations checked on Lightning's result). 16 train samples = 4 batches,
# 8 val samples = 2 batches, unless n_train says otherwise. val_runs are (current_epoch, global_step).
LOOP_CASES = {
    "val_check_interval_float": (dict(val_check_interval=0.5, max_epochs=2), dict(val_runs=[(0, 2), (0, 4), (1, 6), (1, 8)])),
    # int val_check_interval: every 3 batches within the epoch, not additionally at the epoch end.
    "val_check_interval_int": (dict(n_train=32, val_check_interval=3), dict(val_runs=[(0, 3), (0, 6)])),
    "check_val_every_n_epoch_2": (dict(check_val_every_n_epoch=2, max_epochs=4), dict(val_runs=[(1, 8), (3, 16)])),
    # check_val_every_n_epoch=None: val_check_interval counts batches across epoch boundaries.
    "check_val_every_n_epoch_none": (
        dict(check_val_every_n_epoch=None, val_check_interval=5, max_epochs=3),
        dict(val_runs=[(1, 5), (2, 10)], global_step=12),
    ),
    # Lightning reports current_epoch=2 after stopping mid-epoch-1 at max_steps.
    "max_steps": (dict(max_steps=5, max_epochs=10), dict(global_step=5, train_batches=5, current_epoch=2)),
    # should_stop=True set in every training_step is deferred until min_epochs / min_steps are met
    # (whole epochs are run: min_steps=6 stops after batch 6, in the middle of epoch 1).
    "min_epochs_should_stop": (
        dict(min_epochs=3, max_epochs=10, stop_at_first_batch=True, limit_val_batches=0),
        dict(train_batches=12, global_step=12, current_epoch=3, should_stop=True),
    ),
    "min_steps_should_stop": (
        dict(min_steps=6, max_epochs=10, stop_at_first_batch=True, limit_val_batches=0),
        dict(train_batches=6, global_step=6, current_epoch=2, should_stop=True),
    ),
    # Without a minimum, should_stop ends the epoch after the current batch; validation still runs.
    "should_stop_no_minimum": (
        dict(max_epochs=10, stop_at_first_batch=True),
        dict(train_batches=1, global_step=1, current_epoch=1, val_runs=[(0, 1)]),
    ),
    "limit_batches_int": (dict(limit_train_batches=3, limit_val_batches=1), dict(train_batches=3, val_batches=1)),
    "limit_batches_float": (dict(limit_train_batches=0.5, limit_val_batches=0.5), dict(train_batches=2, val_batches=1)),
    "limit_train_batches_float_rounding": (dict(n_train=20, limit_train_batches=0.7), dict(train_batches=3)),
    "fast_dev_run_true": (dict(fast_dev_run=True), dict(train_batches=1, val_batches=1, global_step=1)),
    "fast_dev_run_int": (dict(fast_dev_run=2, max_epochs=5), dict(train_batches=2, val_batches=2, global_step=2)),
    # overfit_batches: the same first batches every epoch (no shuffling), val limited likewise.
    "overfit_batches_int": (dict(overfit_batches=2, max_epochs=2), dict(train_batches=4, val_batches=4)),
    "overfit_batches_float": (dict(overfit_batches=0.5, max_epochs=2), dict(train_batches=4, val_batches=2)),
    "sanity_check_default": (dict(num_sanity_val_steps=2, max_epochs=1), dict(val_runs=[(0, 4)], val_batches=2)),
}


@pytest.mark.parametrize("case", list(LOOP_CASES))
def test_loop_control(run, case):
    kw, literal = LOOP_CASES[case]
    expected = run.lightning(scenario_loop, **kw)
    for key, value in literal.items():  # keeps the table honest against Lightning
        assert expected[key] == value, f"{case}: Lightning gives {key}={expected[key]!r}, table says {value!r}"
    got = run.trainer(scenario_loop, **kw)
    for key in ("val_runs", "train_batches", "val_batches", "global_step", "current_epoch", "should_stop"):
        assert got[key] == expected[key], f"{case}: {key}: got {got[key]!r}, Lightning gives {expected[key]!r}"
    assert_same(got, expected)


# --------------------------------------------------------------------------------------------
# training_step return values
# --------------------------------------------------------------------------------------------


def scenario_step_returns(L, root, mode="dict"):
    Base = mlp_module_class(L)

    class M(Base):
        def training_step(self, batch, batch_idx):
            loss = self.loss(batch)
            if mode == "dict":
                return {"loss": loss, "extra": loss.detach() * 2}
            if mode == "none_on_odd" and batch_idx % 2 == 1:
                return None  # skip this batch
            return loss

    outputs: List[Any] = []

    class Outputs(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, out, batch, batch_idx):
            if isinstance(out, dict):
                outputs.append({k: v.detach().clone() for k, v in out.items()})
            else:
                outputs.append(out)

    model = M()
    trainer = L.Trainer(max_epochs=1, callbacks=[Outputs()], **quiet_trainer_kwargs(root))
    trainer.fit(model, make_loader(16, 4))
    return {"weights": state(model), "global_step": trainer.global_step, "outputs": outputs}


@pytest.mark.parametrize("mode", ["dict", "none_on_odd"])
def test_training_step_returns(run, mode):
    expected = run.lightning(scenario_step_returns, mode=mode)
    if mode == "dict":
        assert all(set(o) == {"loss", "extra"} for o in expected["outputs"])
    else:
        # A skipped batch (None) still counts as an optimizer step (the step runs with no grads)
        # and on_train_batch_end receives {}; a returned tensor arrives as {"loss": tensor}.
        assert expected["global_step"] == 4
        assert [set(o) for o in expected["outputs"]] == [{"loss"}, set(), {"loss"}, set()]
    got = run.trainer(scenario_step_returns, mode=mode)
    assert_same(got, expected)


# --------------------------------------------------------------------------------------------
# LightningDataModule
# --------------------------------------------------------------------------------------------


def scenario_datamodule(L, root):
    dm = datamodule_class(L)(n_train=12, n_val=8, batch_size=4)
    Base = mlp_module_class(L)

    class M(Base):
        def validation_step(self, batch, batch_idx):
            loss = self.loss(batch)
            self.log("val_loss", loss)
            return loss

        def test_step(self, batch, batch_idx):
            loss = self.loss(batch)
            self.log("test_loss", loss)
            return loss

    model = M()
    trainer = L.Trainer(max_epochs=2, **quiet_trainer_kwargs(root))
    trainer.fit(model, datamodule=dm)
    tested = trainer.test(model, datamodule=dm)
    return {
        "weights": state(model),
        "prepare_data_calls": dm.prepare_data_calls,
        "setup_stages": list(dm.setup_stages),
        "test": [metrics_as_floats(d) for d in tested],
        "trainer_datamodule_is_dm": trainer.datamodule is dm,
    }


def test_datamodule(run):
    expected = run.lightning(scenario_datamodule)
    assert expected["setup_stages"] == ["fit", "test"]
    assert expected["prepare_data_calls"] == 2  # once per trainer entry point (fit, test)
    got = run.trainer(scenario_datamodule)
    assert_same(got, expected)


# --------------------------------------------------------------------------------------------
# Precision
# --------------------------------------------------------------------------------------------


def scenario_precision(L, root, precision):
    Base = mlp_module_class(L)
    seen_dtypes: List[str] = []

    class M(Base):
        def training_step(self, batch, batch_idx):
            out = self(batch[0])
            seen_dtypes.append(str(out.dtype))
            return torch.nn.functional.mse_loss(out.float(), batch[1].to(out.device).float())

    model = M()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = L.Trainer(max_epochs=1, precision=precision, **quiet_trainer_kwargs(root))
    trainer.fit(model, make_loader(16, 4))
    return {
        "weights": state(model),
        "trainer_precision": str(trainer.precision),
        "param_dtype": str(next(model.parameters()).dtype),
        "forward_dtypes": sorted(set(seen_dtypes)),
        "fp16_on_cpu_warned": any("not supported on CPU" in str(w.message) for w in caught),
    }


def test_precision_64_true(run):
    expected = run.lightning(scenario_precision, precision="64-true")
    assert expected["param_dtype"] == "torch.float64" and expected["forward_dtypes"] == ["torch.float64"]
    got = run.trainer(scenario_precision, precision="64-true")
    assert_same(got, expected, rtol=1e-12, atol=1e-14)


def test_precision_bf16_mixed_cpu(run):
    expected = run.lightning(scenario_precision, precision="bf16-mixed")
    assert expected["param_dtype"] == "torch.float32" and expected["forward_dtypes"] == ["torch.bfloat16"]
    got = run.trainer(scenario_precision, precision="bf16-mixed")
    assert_same(got, expected, rtol=BF16_RTOL, atol=BF16_ATOL)


def test_precision_16_mixed_on_cpu_becomes_bf16(run):
    """Lightning 2.6.6 on CPU: warns "AMP with fp16 is not supported on CPU. Using
    `precision='bf16-mixed'` instead." and runs bf16 autocast; `trainer.precision` reads "bf16-mixed"."""
    expected = run.lightning(scenario_precision, precision="16-mixed")
    assert expected["trainer_precision"] == "bf16-mixed"
    assert expected["fp16_on_cpu_warned"] is True
    assert expected["forward_dtypes"] == ["torch.bfloat16"]
    got = run.trainer(scenario_precision, precision="16-mixed")
    assert_same(got, expected, rtol=BF16_RTOL, atol=BF16_ATOL)


# --------------------------------------------------------------------------------------------
# seed_everything
# --------------------------------------------------------------------------------------------


def scenario_seed(L, root):
    import random

    import numpy as np

    returned = L.seed_everything(1234)
    return {
        "returned": returned,
        "torch": torch.rand(3),
        "python": random.random(),
        "numpy": float(np.random.rand()),
    }


def test_seed_everything(run):
    expected = run.lightning(scenario_seed)
    assert expected["returned"] == 1234
    got = run.trainer(scenario_seed)
    assert_same(got, expected, rtol=0, atol=0)


# --------------------------------------------------------------------------------------------
# Logging torchmetrics Metric objects (the common Lightning pattern: self.log("acc", self.acc))
# --------------------------------------------------------------------------------------------


def scenario_torchmetrics(L, root, max_epochs=2, num_sanity_val_steps=1):
    import torchmetrics  # installed with pytorch-lightning (test extra)
    Base = mlp_module_class(L)

    class WithMetrics(Base):
        def __init__(self):
            super().__init__()
            self.train_mse = torchmetrics.MeanSquaredError()
            self.val_mse = torchmetrics.MeanSquaredError()

        def training_step(self, batch, batch_idx):
            x, y = batch
            out = self(x)
            self.train_mse(out, y)  # forward: updates state, returns the batch value
            self.log("train_mse", self.train_mse, on_step=True, on_epoch=True)
            return torch.nn.functional.mse_loss(out, y)

        def validation_step(self, batch, batch_idx):
            x, y = batch
            self.val_mse.update(self(x), y)
            self.log("val_mse", self.val_mse)  # computed and RESET by the loop at epoch end

    model = WithMetrics()
    trainer = L.Trainer(max_epochs=max_epochs, num_sanity_val_steps=num_sanity_val_steps, **quiet_trainer_kwargs(root))
    trainer.fit(model, make_loader(10, 4), make_loader(8, 4, seed=1))
    return {
        "callback_metrics": metrics_as_floats(trainer.callback_metrics),
        "logged_metrics": metrics_as_floats(trainer.logged_metrics),
    }


@pytest.mark.parametrize(
    "max_epochs, num_sanity_val_steps",
    [(1, 0), (1, 1), (2, 0)],
    ids=["one_epoch", "after_sanity_check", "second_epoch"],
)
def test_logging_torchmetrics_objects(run, max_epochs, num_sanity_val_steps):
    """Lightning computes a logged Metric at epoch end and resets it after the sanity check and after
    every epoch, so each epoch value covers that epoch's batches only."""
    kw = dict(max_epochs=max_epochs, num_sanity_val_steps=num_sanity_val_steps)
    expected = run.lightning(scenario_torchmetrics, **kw)
    assert {"train_mse_step", "train_mse_epoch", "val_mse"} <= set(expected["callback_metrics"])
    got = run.trainer(scenario_torchmetrics, **kw)
    assert_same(got, expected)
