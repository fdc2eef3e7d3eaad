"""Unit tests of ``trainer.Trainer``: entry points, loop limits, validation placement, checkpoints.

Most tests take the ``L`` fixture (tests/conftest.py) and run the same code under
``pytorch_lightning`` (the oracle) and ``trainer``; the asserted literal values are Lightning 2.6's.
"""
from __future__ import annotations

import collections
import functools
import os
import warnings

import pytest
import torch
import torch.nn.functional as F
from helpers import (
    InputOnlyDataset,
    datamodule_class,
    make_dataset,
    make_loader,
    misconfiguration_exception,
    quiet_trainer_kwargs,
)
from torch import nn
from torch.utils.data import DataLoader


def _seeded_linear(seed: int = 0) -> nn.Linear:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Linear(8, 2)


@functools.lru_cache(maxsize=None)
def toy_class(L):
    """Linear regression with its own loaders; counts what ran in ``self.calls``."""

    class Toy(L.LightningModule):
        def __init__(self, n_train=16, n_val=8, n_test=8, bs=4, lr=0.1, shuffle=False):
            super().__init__()
            self.n_train, self.n_val, self.n_test, self.bs, self.lr, self.shuffle = n_train, n_val, n_test, bs, lr, shuffle
            self.layer = _seeded_linear(0)
            self.calls = collections.Counter()

        def forward(self, x):
            return self.layer(x)

        def training_step(self, batch, batch_idx):
            self.calls["train"] += 1
            x, y = batch
            return F.mse_loss(self(x), y)

        def validation_step(self, batch, batch_idx):
            self.calls["sanity" if self.trainer.sanity_checking else "val"] += 1
            x, y = batch
            loss = F.mse_loss(self(x), y)
            self.log("val_loss", loss)
            return loss

        def test_step(self, batch, batch_idx):
            x, y = batch
            loss = F.mse_loss(self(x), y)
            self.log("test_loss", loss)
            return loss

        def predict_step(self, batch, batch_idx, dataloader_idx=0):
            x = batch[0] if isinstance(batch, (list, tuple)) else batch
            return self(x)

        def on_validation_epoch_start(self):
            self.calls["sanity_runs" if self.trainer.sanity_checking else "val_runs"] += 1

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=self.lr)

        def train_dataloader(self):
            self.calls["train_dl"] += 1
            return DataLoader(make_dataset(self.n_train, seed=0), batch_size=self.bs, shuffle=self.shuffle)

        def val_dataloader(self):
            self.calls["val_dl"] += 1
            return make_loader(self.n_val, self.bs, seed=1)

        def test_dataloader(self):
            return make_loader(self.n_test, self.bs, seed=2)

        def predict_dataloader(self):
            return DataLoader(InputOnlyDataset(8), batch_size=self.bs)

    return Toy


def make_trainer(L, tmp_path, **kw):
    args = quiet_trainer_kwargs(tmp_path)
    args.update(kw)
    return L.Trainer(**args)


def is_trainer(L) -> bool:
    return L.__name__ == "trainer"


def params(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def assert_same_params(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


# ----------------------------------------------------------------------------- entry points
def test_fit_returns_none_and_trains(L, tmp_path):
    model = toy_class(L)()
    before = params(model)
    trainer = make_trainer(L, tmp_path, max_epochs=1)
    assert trainer.fit(model) is None
    assert trainer.global_step == 4
    assert trainer.current_epoch == 1
    assert not torch.equal(before["layer.weight"], model.layer.weight)
    assert trainer.state.finished


def test_validate_and_test_return_list_of_float_dicts(L, tmp_path):
    model = toy_class(L)()
    trainer = make_trainer(L, tmp_path)
    val = trainer.validate(model, verbose=False)
    test = trainer.test(model, verbose=False)
    assert isinstance(val, list) and len(val) == 1 and list(val[0]) == ["val_loss"]
    assert isinstance(test, list) and len(test) == 1 and list(test[0]) == ["test_loss"]
    assert type(val[0]["val_loss"]) is float and type(test[0]["test_loss"]) is float
    # the value is the mean over the batches (equal batch sizes)
    x, y = make_dataset(8, seed=1).tensors
    with torch.no_grad():
        expected = torch.stack([F.mse_loss(model(x[i:i + 4]), y[i:i + 4]) for i in (0, 4)]).mean().item()
    assert val[0]["val_loss"] == pytest.approx(expected, rel=1e-6)


def test_validate_two_loaders_suffixes(L, tmp_path):
    class Two(toy_class(L)):
        def validation_step(self, batch, batch_idx, dataloader_idx=0):
            x, y = batch
            self.log("loss", F.mse_loss(self(x), y) + dataloader_idx)

    model = Two()
    trainer = make_trainer(L, tmp_path)
    out = trainer.validate(model, dataloaders=[make_loader(8, 4, seed=1), make_loader(4, 4, seed=2)], verbose=False)
    assert len(out) == 2
    assert list(out[0]) == ["loss/dataloader_idx_0"]
    assert list(out[1]) == ["loss/dataloader_idx_1"]
    assert out[1]["loss/dataloader_idx_1"] >= 1.0


def test_predict_outputs(L, tmp_path):
    model = toy_class(L)()
    trainer = make_trainer(L, tmp_path)
    preds = trainer.predict(model)
    assert isinstance(preds, list) and len(preds) == 2
    assert all(isinstance(p, torch.Tensor) and p.shape == (4, 2) for p in preds)
    x = InputOnlyDataset(8).x
    with torch.no_grad():
        assert torch.allclose(torch.cat(preds), model(x))
    two = trainer.predict(model, dataloaders=[DataLoader(InputOnlyDataset(8), batch_size=4),
                                              DataLoader(InputOnlyDataset(3), batch_size=4)])
    assert isinstance(two, list) and len(two) == 2
    assert [len(p) for p in two] == [2, 1]
    assert two[1][0].shape == (3, 2)
    assert trainer.predict(model, return_predictions=False) is None


def test_datamodule_stages_and_positional_fit(L, tmp_path):
    DM = datamodule_class(L)

    class RecDM(DM):
        teardown_stages: list

        def teardown(self, stage):
            self.__dict__.setdefault("teardown_stages", []).append(stage)

    class NoLoaders(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = _seeded_linear()

        def training_step(self, batch, batch_idx):
            return F.mse_loss(self.layer(batch[0]), batch[1])

        def validation_step(self, batch, batch_idx):
            self.log("v", F.mse_loss(self.layer(batch[0]), batch[1]))

        def test_step(self, batch, batch_idx):
            self.log("t", F.mse_loss(self.layer(batch[0]), batch[1]))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    dm = RecDM()
    model = NoLoaders()
    trainer = make_trainer(L, tmp_path, max_epochs=1, num_sanity_val_steps=0)
    trainer.fit(model, dm)  # datamodule passed positionally
    assert trainer.datamodule is dm
    assert trainer.global_step == 4
    trainer.validate(model, datamodule=dm, verbose=False)
    trainer.test(model, dm, verbose=False)
    assert dm.prepare_data_calls == 3
    assert dm.setup_stages == ["fit", "validate", "test"]
    assert dm.teardown_stages == ["fit", "validate", "test"]


def test_fit_datamodule_and_loaders_conflict(L, tmp_path):
    trainer = make_trainer(L, tmp_path, max_epochs=1)
    with pytest.raises(misconfiguration_exception(L)):
        trainer.fit(toy_class(L)(), train_dataloaders=make_loader(), datamodule=datamodule_class(L)())


# ----------------------------------------------------------------------------- loop limits
@pytest.mark.parametrize("kw, steps, epoch, calls", [
    (dict(max_steps=3, max_epochs=10), 3, 1, 3),
    (dict(max_epochs=2), 8, 2, 8),
    (dict(max_steps=6, max_epochs=1), 4, 1, 4),
])
def test_max_steps_max_epochs(L, tmp_path, kw, steps, epoch, calls):
    model = toy_class(L)()
    trainer = make_trainer(L, tmp_path, num_sanity_val_steps=0, **kw)
    trainer.fit(model)
    assert (trainer.global_step, trainer.current_epoch, model.calls["train"]) == (steps, epoch, calls)


def test_should_stop_in_hook_stops(L, tmp_path):
    class Stop(toy_class(L)):
        def training_step(self, batch, batch_idx):
            if batch_idx == 1:
                self.trainer.should_stop = True
            return super().training_step(batch, batch_idx)

    model = Stop()
    trainer = make_trainer(L, tmp_path, max_epochs=5, num_sanity_val_steps=0)
    trainer.fit(model)
    assert trainer.should_stop
    assert (trainer.global_step, trainer.current_epoch, model.calls["train"]) == (2, 1, 2)


@pytest.mark.parametrize("kw, steps, epoch", [
    (dict(min_epochs=3), 12, 3),
    (dict(min_steps=6), 6, 2),
])
def test_min_epochs_min_steps_override_should_stop(L, tmp_path, kw, steps, epoch):
    class Stop(toy_class(L)):
        def training_step(self, batch, batch_idx):
            self.trainer.should_stop = True
            return super().training_step(batch, batch_idx)

    model = Stop()
    trainer = make_trainer(L, tmp_path, max_epochs=10, num_sanity_val_steps=0, limit_val_batches=0, **kw)
    trainer.fit(model)
    assert (trainer.global_step, trainer.current_epoch) == (steps, epoch)


def test_max_time_zero_stops_before_any_step(L, tmp_path):
    model = toy_class(L)()
    trainer = make_trainer(L, tmp_path, max_epochs=100, max_time={"seconds": 0}, num_sanity_val_steps=0)
    assert any(type(cb).__name__ == "Timer" for cb in trainer.callbacks)
    trainer.fit(model)
    assert trainer.global_step == 0
    assert trainer.should_stop


def test_max_time_stops_run(L, tmp_path):
    import time

    class Slow(toy_class(L)):
        def training_step(self, batch, batch_idx):
            time.sleep(0.05)
            return super().training_step(batch, batch_idx)

    model = Slow()
    trainer = make_trainer(L, tmp_path, max_epochs=100, max_time={"seconds": 0.2}, limit_val_batches=0)
    trainer.fit(model)
    assert trainer.should_stop
    assert 1 <= trainer.global_step <= 20  # ~4 steps; far below the 400 max_epochs allows
    assert model.calls["train"] == trainer.global_step


def test_max_time_string_parsed(L, tmp_path):
    from datetime import timedelta

    trainer = make_trainer(L, tmp_path, max_time="00:01:02:03")
    timer = next(cb for cb in trainer.callbacks if type(cb).__name__ == "Timer")
    assert timer._duration == timedelta(hours=1, minutes=2, seconds=3).total_seconds()


@pytest.mark.parametrize("limit, per_epoch", [(2, 2), (0.5, 2), (1.0, 4), (0.0, 0), (0.3, 1)])
def test_limit_train_batches(L, tmp_path, limit, per_epoch):
    model = toy_class(L)()
    trainer = make_trainer(L, tmp_path, max_epochs=2, limit_train_batches=limit, num_sanity_val_steps=0)
    trainer.fit(model)
    assert model.calls["train"] == 2 * per_epoch
    assert trainer.global_step == 2 * per_epoch
    if per_epoch:
        assert trainer.num_training_batches == per_epoch


@pytest.mark.parametrize("limit, n", [(1, 1), (0.5, 2), (0.25, 1), (0, 0)])
def test_limit_val_test_predict_batches(L, tmp_path, limit, n):
    model = toy_class(L)(n_val=16, n_test=16)
    trainer = make_trainer(L, tmp_path, limit_val_batches=limit, limit_test_batches=limit,
                           limit_predict_batches=limit)
    trainer.validate(model, verbose=False)
    assert model.calls["val"] == n
    assert trainer.num_val_batches == ([n] if n else [])
    trainer.test(model, verbose=False)
    assert trainer.num_test_batches == ([n] if n else [])
    preds = trainer.predict(model, dataloaders=DataLoader(InputOnlyDataset(16), batch_size=4))
    assert (len(preds) if preds else 0) == n


def test_limit_batches_too_small_raises(L, tmp_path):
    model = toy_class(L)()
    trainer = make_trainer(L, tmp_path, max_epochs=1, limit_train_batches=0.1)
    with pytest.raises(misconfiguration_exception(L), match="limit_train_batches"):
        trainer.fit(model)


@pytest.mark.parametrize("bad", [-1, 1.5, "a"])
def test_limit_batches_bad_values(L, tmp_path, bad):
    with pytest.raises((misconfiguration_exception(L), TypeError, ValueError)):
        make_trainer(L, tmp_path, limit_train_batches=bad)


@pytest.mark.parametrize("fdr, n", [(True, 1), (3, 3)])
def test_fast_dev_run(L, tmp_path, fdr, n):
    model = toy_class(L)(n_val=40)
    trainer = make_trainer(L, tmp_path, fast_dev_run=fdr, max_epochs=5, logger=None)
    trainer.fit(model)
    assert trainer.global_step == n
    assert model.calls["train"] == n
    assert model.calls["val"] == n
    assert model.calls["sanity"] == 0
    assert trainer.loggers == [] or type(trainer.logger).__name__ == "DummyLogger"
    assert not any(os.scandir(tmp_path))  # nothing logged or checkpointed


def test_overfit_batches_disables_shuffle_same_batches(L, tmp_path):
    class Rec(toy_class(L)):
        def on_train_epoch_start(self):
            self.__dict__.setdefault("seen", []).append([])

        def training_step(self, batch, batch_idx):
            self.seen[-1].append(batch[0].clone())
            return super().training_step(batch, batch_idx)

    model = Rec(shuffle=True)
    torch.manual_seed(1)
    trainer = make_trainer(L, tmp_path, max_epochs=3, overfit_batches=2, num_sanity_val_steps=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(model)
    assert [len(e) for e in model.seen] == [2, 2, 2]
    x = make_dataset(16, seed=0).tensors[0]
    for epoch in model.seen:
        assert torch.equal(epoch[0], x[:4]) and torch.equal(epoch[1], x[4:8])


@pytest.mark.parametrize("kw, runs", [
    (dict(val_check_interval=0.5, max_epochs=2), 4),
    (dict(val_check_interval=0.25, max_epochs=1), 4),
    (dict(val_check_interval=2, max_epochs=2), 4),
    (dict(val_check_interval=1.0, max_epochs=3), 3),
    (dict(check_val_every_n_epoch=2, max_epochs=4), 2),
    (dict(check_val_every_n_epoch=3, max_epochs=4), 1),
    (dict(check_val_every_n_epoch=None, val_check_interval=3, max_epochs=2), 2),
    (dict(check_val_every_n_epoch=None, val_check_interval=5, max_epochs=3), 2),
])
def test_validation_placement(L, tmp_path, kw, runs):
    model = toy_class(L)()
    trainer = make_trainer(L, tmp_path, num_sanity_val_steps=0, **kw)
    trainer.fit(model)
    assert model.calls["val_runs"] == runs
    assert model.calls["val"] == runs * 2


def test_val_check_interval_larger_than_epoch_raises(L, tmp_path):
    trainer = make_trainer(L, tmp_path, max_epochs=1, val_check_interval=10, num_sanity_val_steps=0)
    with pytest.raises(ValueError, match="val_check_interval"):
        trainer.fit(toy_class(L)())


@pytest.mark.parametrize("n, train_dl, val_dl", [(0, 1, 1), (1, 3, 3), (2, 2, 2)])
def test_reload_dataloaders_every_n_epochs(L, tmp_path, n, train_dl, val_dl):
    model = toy_class(L)()
    trainer = make_trainer(L, tmp_path, max_epochs=3, reload_dataloaders_every_n_epochs=n, num_sanity_val_steps=0)
    trainer.fit(model)
    assert model.calls["train_dl"] == train_dl
    assert model.calls["val_dl"] == val_dl


@pytest.mark.parametrize("steps, sanity", [(0, 0), (2, 2), (-1, 3), (None, 2)])
def test_num_sanity_val_steps(L, tmp_path, steps, sanity):
    model = toy_class(L)(n_val=12)
    kw = {} if steps is None else {"num_sanity_val_steps": steps}
    trainer = make_trainer(L, tmp_path, max_epochs=1, **kw)
    trainer.fit(model)
    assert model.calls["sanity"] == sanity
    assert model.calls["sanity_runs"] == (1 if sanity else 0)
    assert model.calls["val"] == 3
    # metrics logged during the sanity check do not survive it
    assert "val_loss" in trainer.callback_metrics


def test_sanity_check_does_not_change_training(L, tmp_path):
    class Noisy(toy_class(L)):
        def __init__(self):
            super().__init__(shuffle=True)
            self.drop = nn.Dropout(0.5)

        def forward(self, x):
            return self.layer(self.drop(x))

        def validation_step(self, batch, batch_idx):
            torch.rand(100)  # consumes the global RNG
            return super().validation_step(batch, batch_idx)

    def run(sanity):
        torch.manual_seed(123)
        model = Noisy()
        trainer = make_trainer(L, tmp_path, max_epochs=2, num_sanity_val_steps=sanity)
        trainer.fit(model)
        assert model.calls["sanity"] == sanity
        return params(model)

    assert_same_params(run(0), run(2))


# ----------------------------------------------------------------------------- training_step outputs
def test_training_step_dict_extra_keys_reach_batch_end(L, tmp_path):
    class DictOut(toy_class(L)):
        def training_step(self, batch, batch_idx):
            loss = super().training_step(batch, batch_idx)
            return {"loss": loss, "extra": torch.tensor(float(batch_idx)), "tag": "t"}

        def on_train_batch_end(self, outputs, batch, batch_idx):
            self.__dict__.setdefault("outs", []).append(outputs)

    model = DictOut()
    trainer = make_trainer(L, tmp_path, max_epochs=1, limit_val_batches=0)
    trainer.fit(model)
    assert len(model.outs) == 4
    for i, out in enumerate(model.outs):
        assert set(out) == {"loss", "extra", "tag"}
        assert out["extra"].item() == i and out["tag"] == "t"
        assert not out["loss"].requires_grad


def test_training_step_tensor_output_at_batch_end(L, tmp_path):
    class Rec(toy_class(L)):
        def on_train_batch_end(self, outputs, batch, batch_idx):
            self.__dict__.setdefault("outs", []).append(outputs)

    model = Rec()
    make_trainer(L, tmp_path, max_epochs=1, limit_val_batches=0).fit(model)
    assert all(set(o) == {"loss"} and o["loss"].ndim == 0 for o in model.outs)


def test_training_step_dict_without_loss_raises(L, tmp_path):
    class NoLoss(toy_class(L)):
        def training_step(self, batch, batch_idx):
            return {"x": super().training_step(batch, batch_idx)}

    with pytest.raises(misconfiguration_exception(L), match="loss"):
        make_trainer(L, tmp_path, max_epochs=1).fit(NoLoss())


def test_training_step_none_skips_step(L, tmp_path):
    class Skip(toy_class(L)):
        def training_step(self, batch, batch_idx):
            super().training_step(batch, batch_idx)
            return None

        def on_train_batch_end(self, outputs, batch, batch_idx):
            self.__dict__.setdefault("outs", []).append(outputs)

    model = Skip()
    before = params(model)
    trainer = make_trainer(L, tmp_path, max_epochs=1, limit_val_batches=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(model)
    assert_same_params(before, params(model))
    assert model.calls["train"] == 4
    assert model.outs == [{}] * 4
    assert model.layer.weight.grad is None


def test_training_step_non_scalar_loss_raises(TL, tmp_path):
    class Vec(toy_class(TL)):
        def training_step(self, batch, batch_idx):
            x, y = batch
            return ((self(x) - y) ** 2).mean(0)

    with pytest.raises(TL.MisconfigurationException, match="scalar"):
        make_trainer(TL, tmp_path, max_epochs=1).fit(Vec())


def test_on_train_batch_start_minus_one_ends_epoch(L, tmp_path):
    class Cut(toy_class(L)):
        def on_train_batch_start(self, batch, batch_idx):
            if batch_idx == 2:
                return -1

    model = Cut()
    trainer = make_trainer(L, tmp_path, max_epochs=2, num_sanity_val_steps=0)
    trainer.fit(model)
    assert model.calls["train"] == 4
    assert trainer.global_step == 4
    assert trainer.current_epoch == 2
    assert model.calls["val_runs"] == 0  # the epoch ends before its end-of-epoch validation


@pytest.mark.parametrize("kw, expected", [
    (dict(max_epochs=3), 12),
    (dict(max_epochs=3, accumulate_grad_batches=3), 6),
    (dict(max_epochs=2, limit_train_batches=3), 6),
    (dict(max_epochs=5, max_steps=7), 7),
])
def test_estimated_stepping_batches(L, tmp_path, kw, expected):
    class Est(toy_class(L)):
        def configure_optimizers(self):
            self.est = self.trainer.estimated_stepping_batches
            return super().configure_optimizers()

    model = Est()
    trainer = make_trainer(L, tmp_path, limit_val_batches=0, **kw)
    trainer.fit(model)
    assert model.est == expected


# ----------------------------------------------------------------------------- flags
@pytest.fixture
def restore_determinism():
    enabled = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    cudnn = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    env = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    yield
    torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn
    if env is None:
        os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
    else:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = env


@pytest.mark.parametrize("flag, warn_only", [(True, False), ("warn", True)])
def test_deterministic(L, tmp_path, restore_determinism, flag, warn_only):
    torch.use_deterministic_algorithms(False)
    make_trainer(L, tmp_path, deterministic=flag)
    assert torch.are_deterministic_algorithms_enabled()
    assert torch.is_deterministic_algorithms_warn_only_enabled() == warn_only
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    make_trainer(L, tmp_path, deterministic=False)
    assert not torch.are_deterministic_algorithms_enabled()


def test_deterministic_bad_value(TL, tmp_path, restore_determinism):
    # stricter than Lightning (which accepts anything truthy): named in the error
    with pytest.raises(TL.MisconfigurationException, match="deterministic"):
        make_trainer(TL, tmp_path, deterministic="yes")


def test_profiler_simple_summary(L, tmp_path, capsys):
    model = toy_class(L)()
    trainer = make_trainer(L, tmp_path, max_epochs=1, profiler="simple")
    trainer.fit(model)
    summary = trainer.profiler.summary()
    assert "run_training_epoch" in summary
    assert "Total" in summary


def test_detect_anomaly(L, tmp_path):
    class Check(toy_class(L)):
        def training_step(self, batch, batch_idx):
            self.calls["anomaly"] += torch.is_anomaly_enabled()
            return super().training_step(batch, batch_idx)

    model = Check()
    make_trainer(L, tmp_path, max_epochs=1, detect_anomaly=True, limit_val_batches=0).fit(model)
    assert model.calls["anomaly"] == 4
    assert not torch.is_anomaly_enabled()
    model = Check()
    make_trainer(L, tmp_path, max_epochs=1, limit_val_batches=0).fit(model)
    assert model.calls["anomaly"] == 0


def test_detect_anomaly_reports_nan_backward(L, tmp_path):
    class NaN(toy_class(L)):
        def training_step(self, batch, batch_idx):
            x, y = batch
            return torch.sqrt(self(x) * 0 - 1).sum()

    with pytest.raises(RuntimeError, match="nan|NaN"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            make_trainer(L, tmp_path, max_epochs=1, detect_anomaly=True).fit(NaN())


def test_barebones(L, tmp_path):
    class Logs(toy_class(L)):
        def training_step(self, batch, batch_idx):
            loss = super().training_step(batch, batch_idx)
            self.log("loss", loss)
            return loss

    trainer = L.Trainer(barebones=True, max_epochs=1, accelerator="cpu", default_root_dir=str(tmp_path),
                        limit_val_batches=0)
    assert trainer.loggers == [] and trainer.checkpoint_callback is None and trainer.progress_bar_callback is None
    model = Logs()
    with pytest.warns(UserWarning, match="barebones"):
        trainer.fit(model)
    assert trainer.global_step == 4
    assert trainer.callback_metrics == {}
    with pytest.raises(ValueError, match="enable_checkpointing"):
        L.Trainer(barebones=True, enable_checkpointing=True)


@pytest.mark.parametrize("inference_mode", [True, False])
def test_inference_mode(L, tmp_path, inference_mode):
    class Check(toy_class(L)):
        def validation_step(self, batch, batch_idx):
            self.__dict__.setdefault("modes", []).append(
                (self.trainer.sanity_checking or self.trainer.state.fn, torch.is_grad_enabled(),
                 torch.is_inference_mode_enabled()))
            return super().validation_step(batch, batch_idx)

    model = Check()
    trainer = make_trainer(L, tmp_path, max_epochs=1, num_sanity_val_steps=1, inference_mode=inference_mode)
    trainer.fit(model)
    assert all(not grad and not inf for _, grad, inf in model.modes)  # in fit: no_grad
    model.modes = []
    trainer.validate(model, verbose=False)
    assert {(g, i) for _, g, i in model.modes} == {(False, inference_mode)}


def test_default_root_dir_and_log_dir(L, tmp_path, monkeypatch):
    trainer = make_trainer(L, tmp_path)
    assert trainer.default_root_dir == str(tmp_path)
    assert trainer.log_dir == str(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert make_trainer(L, tmp_path, default_root_dir=None).default_root_dir == str(tmp_path)
    logged = make_trainer(L, tmp_path, logger=L.loggers.CSVLogger(str(tmp_path), name="lg"), max_epochs=1)
    logged.fit(toy_class(L)())
    assert logged.log_dir == os.path.join(str(tmp_path), "lg", "version_0")
    assert os.path.isdir(logged.log_dir)


# ----------------------------------------------------------------------------- checkpoints
class _HP:
    pass


def _hp_toy(L):
    class HP(toy_class(L)):
        def __init__(self, lr=0.1, hidden=3):
            super().__init__(lr=lr)
            self.save_hyperparameters()

    return HP


def test_save_checkpoint_keys_and_lightning_load(L, tmp_path):
    import pytorch_lightning as pl

    model = _hp_toy(L)(lr=0.2)
    trainer = make_trainer(L, tmp_path, max_epochs=2)
    trainer.fit(model)
    path = tmp_path / "m.ckpt"
    trainer.save_checkpoint(path)
    ckpt = torch.load(path, weights_only=False)
    for key in ("epoch", "global_step", "pytorch-lightning_version", "state_dict", "loops", "callbacks",
                "optimizer_states", "lr_schedulers", "hyper_parameters"):
        assert key in ckpt, key
    assert ckpt["epoch"] == 2 and ckpt["global_step"] == 8
    assert ckpt["hyper_parameters"] == {"lr": 0.2, "hidden": 3}
    assert set(ckpt["loops"]) == {"fit_loop", "validate_loop", "test_loop", "predict_loop"}
    assert len(ckpt["optimizer_states"]) == 1 and ckpt["lr_schedulers"] == []
    # Lightning's own load_from_checkpoint reads our file
    loaded = _hp_toy(pl).load_from_checkpoint(str(path))
    assert loaded.hparams.lr == 0.2
    assert_same_params(params(loaded), params(model))
    # weights-only
    trainer.save_checkpoint(tmp_path / "w.ckpt", weights_only=True)
    w = torch.load(tmp_path / "w.ckpt", weights_only=False)
    assert "optimizer_states" not in w and "state_dict" in w


def test_save_checkpoint_without_model_raises(L, tmp_path):
    with pytest.raises(AttributeError):
        make_trainer(L, tmp_path).save_checkpoint(tmp_path / "x.ckpt")


def test_trainer_loads_lightning_checkpoint(TL, tmp_path):
    import pytorch_lightning as pl

    src = toy_class(pl)()
    t = make_trainer(pl, tmp_path, max_epochs=1)
    t.fit(src)
    t.save_checkpoint(tmp_path / "pl.ckpt")
    model = toy_class(TL)()
    trainer = make_trainer(TL, tmp_path, max_epochs=3, num_sanity_val_steps=0)
    trainer.fit(model, ckpt_path=tmp_path / "pl.ckpt")
    assert trainer.global_step == 12
    assert model.calls["train"] == 8


def test_resume_at_epoch_boundary_matches_uninterrupted(L, tmp_path):
    class Mom(toy_class(L)):
        def configure_optimizers(self):
            opt = torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)
            return [opt], [torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)]

    full = Mom()
    make_trainer(L, tmp_path, max_epochs=4).fit(full)

    first = Mom()
    t1 = make_trainer(L, tmp_path, max_epochs=2)
    t1.fit(first)
    t1.save_checkpoint(tmp_path / "e2.ckpt")

    resumed = Mom()
    t2 = make_trainer(L, tmp_path, max_epochs=4)
    t2.fit(resumed, ckpt_path=str(tmp_path / "e2.ckpt"))
    assert resumed.calls["train"] == 8
    assert t2.global_step == 16 and t2.current_epoch == 4
    assert t2.lr_scheduler_configs[0].scheduler.last_epoch == 4
    assert_same_params(params(full), params(resumed))


def _ckpt_trainer(L, tmp_path, **kw):
    mc = L.callbacks.ModelCheckpoint(dirpath=str(tmp_path / "ck"), monitor="val_loss", save_last=True, save_top_k=1)
    return make_trainer(L, tmp_path, enable_checkpointing=True, callbacks=[mc], **kw), mc


def test_ckpt_path_best_and_last(L, tmp_path):
    class Worse(toy_class(L)):
        def validation_step(self, batch, batch_idx):
            self.log("val_loss", torch.tensor(float(self.current_epoch)))

    model = Worse()
    trainer, mc = _ckpt_trainer(L, tmp_path, max_epochs=3, num_sanity_val_steps=0)
    trainer.fit(model)
    assert "epoch=0" in os.path.basename(mc.best_model_path)
    assert os.path.basename(mc.last_model_path) == "last.ckpt"
    trainer.test(ckpt_path="last", verbose=False)
    assert trainer.ckpt_path == mc.last_model_path
    assert_same_params(torch.load(mc.last_model_path, weights_only=False)["state_dict"], params(model))
    trainer.validate(ckpt_path="best", verbose=False)
    assert trainer.ckpt_path == mc.best_model_path
    # the best weights (epoch 0) are now in the model
    best = torch.load(mc.best_model_path, weights_only=False)["state_dict"]
    assert_same_params(best, params(model))
    # no model passed and no ckpt_path: validate/test default to "best"
    trainer.test(verbose=False)
    assert trainer.ckpt_path == mc.best_model_path


def test_ckpt_path_best_without_checkpoint_callback_raises(L, tmp_path):
    model = toy_class(L)()
    trainer = make_trainer(L, tmp_path, max_epochs=1)
    trainer.fit(model)
    with pytest.raises(ValueError, match="best"):
        trainer.validate(ckpt_path="best", verbose=False)


def test_fit_ckpt_path_missing_file(L, tmp_path):
    with pytest.raises(FileNotFoundError):
        make_trainer(L, tmp_path, max_epochs=1).fit(toy_class(L)(), ckpt_path=str(tmp_path / "nope.ckpt"))


# ----------------------------------------------------------------------------- constructor checks
@pytest.mark.parametrize("kw", [
    dict(max_epochs=-2), dict(max_steps=-2), dict(strategy="nope"), dict(precision="8"), dict(accelerator="abc"),
    dict(gradient_clip_algorithm="x"), dict(val_check_interval=-1), dict(profiler="bogus"),
])
def test_bad_constructor_args_raise(L, tmp_path, kw):
    with pytest.raises((misconfiguration_exception(L), ValueError, TypeError)):
        make_trainer(L, tmp_path, **kw)


@pytest.mark.parametrize("kw", [
    dict(accumulate_grad_batches=0), dict(num_sanity_val_steps=-2), dict(check_val_every_n_epoch=0),
    dict(max_time="1 hour"), dict(fast_dev_run=-1), dict(gradient_clip_val=-1.0),
])
def test_bad_constructor_args_named_in_error(TL, tmp_path, kw):
    # checked at construction (Lightning accepts some of these and fails later, or never)
    (name, value), = kw.items()
    with pytest.raises(TL.MisconfigurationException, match=name):
        make_trainer(TL, tmp_path, **kw)


def test_missing_training_step_or_optimizers_raises(L, tmp_path):
    class NoOpt(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = _seeded_linear()

        def training_step(self, batch, batch_idx):
            return self.layer(batch[0]).sum()

        def train_dataloader(self):
            return make_loader()

    with pytest.raises(misconfiguration_exception(L), match="configure_optimizers"):
        make_trainer(L, tmp_path, max_epochs=1).fit(NoOpt())


def test_multiple_optimizers_need_manual_optimization(L, tmp_path):
    class Two(toy_class(L)):
        def configure_optimizers(self):
            return [torch.optim.SGD(self.parameters(), lr=0.1), torch.optim.SGD(self.parameters(), lr=0.1)]

    with pytest.raises(RuntimeError, match="manual optimization"):
        make_trainer(L, tmp_path, max_epochs=1).fit(Two())
