"""Unit tests of ``trainer.LightningModule``: logging, hyper-parameters, optimizer access, clipping, state.

Tests taking ``L`` run under ``pytorch_lightning`` and ``trainer``; literal values are Lightning 2.6's.
"""
from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F
from helpers import make_loader, misconfiguration_exception, quiet_trainer_kwargs
from torch import nn


def _linear(seed=0, i=8, o=2):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Linear(i, o)


@functools.lru_cache(maxsize=None)
def base_class(L):
    class Base(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = _linear()

        def forward(self, x):
            return self.layer(x)

        def training_step(self, batch, batch_idx):
            x, y = batch
            return F.mse_loss(self(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

        def train_dataloader(self):
            return make_loader(16, 4, seed=0)

    return Base


def make_trainer(L, tmp_path, **kw):
    args = quiet_trainer_kwargs(tmp_path)
    args.update(kw)
    return L.Trainer(**args)


def is_trainer(L):
    return L.__name__ == "trainer"


def floats(d):
    return {k: float(v) for k, v in d.items()}


# ----------------------------------------------------------------------------- self.log
def test_log_per_hook_defaults(L, tmp_path):
    class Logs(base_class(L)):
        def training_step(self, batch, batch_idx):
            loss = super().training_step(batch, batch_idx)
            self.log("a", loss)                                   # on_step=True, on_epoch=False
            self.log("b", loss, on_step=True, on_epoch=True)      # forked
            self.log("p", 1.0, prog_bar=True, logger=False)
            return loss

        def on_train_epoch_end(self):
            self.log("d", 3.0)                                    # on_epoch

        def validation_step(self, batch, batch_idx):
            self.log("c", 2.0)                                    # on_step=False, on_epoch=True
            self.log("e", 4.0, on_step=True)                      # forked in validation

        def val_dataloader(self):
            return make_loader(8, 4, seed=1)

    trainer = make_trainer(L, tmp_path, max_epochs=1, num_sanity_val_steps=0, log_every_n_steps=1,
                           logger=L.loggers.CSVLogger(str(tmp_path)))
    trainer.fit(Logs())
    assert set(trainer.callback_metrics) == {"a", "b", "b_step", "b_epoch", "p", "c", "d", "e", "e_epoch"}
    assert set(trainer.logged_metrics) == {"a", "b_step", "b_epoch", "c", "d", "e_step", "e_epoch"}
    assert set(trainer.progress_bar_metrics) == {"p"}
    assert trainer.callback_metrics["c"].item() == 2.0
    assert trainer.callback_metrics["d"].item() == 3.0


def test_log_invalid_levels(L, tmp_path):
    class Bad(base_class(L)):
        def on_train_epoch_end(self):
            self.log("x", 1.0, on_step=True)

    with pytest.raises(misconfiguration_exception(L), match="on_step=True"):
        make_trainer(L, tmp_path, max_epochs=1).fit(Bad())


def test_log_in_unsupported_hook(L, tmp_path):
    class Bad(base_class(L)):
        def on_fit_start(self):
            self.log("x", 1.0)

    with pytest.raises(misconfiguration_exception(L), match="on_fit_start"):
        make_trainer(L, tmp_path, max_epochs=1).fit(Bad())


def test_log_dict(L, tmp_path):
    class Logs(base_class(L)):
        def training_step(self, batch, batch_idx):
            loss = super().training_step(batch, batch_idx)
            self.log_dict({"x": loss, "y": 2 * loss, "z": 5}, on_epoch=True, on_step=False)
            return loss

    model = Logs()
    trainer = make_trainer(L, tmp_path, max_epochs=1)
    trainer.fit(model)
    m = floats(trainer.callback_metrics)
    assert set(m) == {"x", "y", "z"}
    assert m["y"] == pytest.approx(2 * m["x"])
    assert m["z"] == 5.0


@pytest.mark.parametrize("value, match", [
    (torch.ones(2), "single element|one element|must have a single"),
    ({"a": 1.0}, "dict"),
    ("text", "str"),
])
def test_log_bad_values_raise(L, tmp_path, value, match):
    class Bad(base_class(L)):
        def training_step(self, batch, batch_idx):
            self.log("bad", value)
            return super().training_step(batch, batch_idx)

    with pytest.raises(ValueError, match=match):
        make_trainer(L, tmp_path, max_epochs=1).fit(Bad())


def test_log_without_trainer_warns(L):
    model = base_class(L)()
    with pytest.warns(UserWarning, match="trainer"):
        model.log("x", 1.0)


def _eval_log_class(L, **log_kw):
    class Red(base_class(L)):
        def validation_step(self, batch, batch_idx):
            self.log("v", float(batch_idx + 1), **log_kw)

        def val_dataloader(self):
            return make_loader(12, 4, seed=1)

    return Red


@pytest.mark.parametrize("reduce_fx, expected", [
    ("mean", 2.0), ("sum", 6.0), ("max", 3.0), ("min", 1.0), (torch.mean, 2.0), (torch.max, 3.0),
])
def test_log_reduce_fx(L, tmp_path, reduce_fx, expected):
    trainer = make_trainer(L, tmp_path)
    out = trainer.validate(_eval_log_class(L, reduce_fx=reduce_fx)(), verbose=False)
    assert out == [{"v": expected}]


def test_log_reduce_fx_invalid(L, tmp_path):
    trainer = make_trainer(L, tmp_path)
    with pytest.raises(misconfiguration_exception(L), match="reduce_fx"):
        trainer.validate(_eval_log_class(L, reduce_fx="median")(), verbose=False)


def test_log_batch_size_weighting_uneven_last_batch(L, tmp_path):
    class W(base_class(L)):
        def validation_step(self, batch, batch_idx):
            self.log("inferred", float(batch_idx))
            self.log("explicit", float(batch_idx), batch_size=1)

        def val_dataloader(self):
            return make_loader(10, 4, seed=1)  # batches of 4, 4, 2

    out = make_trainer(L, tmp_path).validate(W(), verbose=False)
    assert out[0]["inferred"] == pytest.approx((0 * 4 + 1 * 4 + 2 * 2) / 10)
    assert out[0]["explicit"] == pytest.approx(1.0)


def test_log_same_key_different_args_raises(L, tmp_path):
    class Twice(base_class(L)):
        def training_step(self, batch, batch_idx):
            self.log("k", 1.0)
            self.log("k", 1.0, prog_bar=True)
            return super().training_step(batch, batch_idx)

    with pytest.raises(misconfiguration_exception(L), match="twice"):
        make_trainer(L, tmp_path, max_epochs=1).fit(Twice())


def test_log_add_dataloader_idx_name_conflict(L, tmp_path):
    class Bad(base_class(L)):
        def validation_step(self, batch, batch_idx):
            self.log("x/dataloader_idx_0", 1.0)

        def val_dataloader(self):
            return make_loader(4, 4)

    with pytest.raises(misconfiguration_exception(L), match="dataloader_idx"):
        make_trainer(L, tmp_path).validate(Bad(), verbose=False)


# ----------------------------------------------------------------------------- hyper-parameters
@functools.lru_cache(maxsize=None)
def hp_classes(L):
    class All(L.LightningModule):
        def __init__(self, a=1, b="x", c=None):
            super().__init__()
            self.save_hyperparameters()

    class Some(L.LightningModule):
        def __init__(self, a=1, b="x", c=None):
            super().__init__()
            self.save_hyperparameters("a", "c")

    class Ignore(L.LightningModule):
        def __init__(self, a=1, net=None, c=3):
            super().__init__()
            self.save_hyperparameters(ignore=["net"])

    class FromDict(L.LightningModule):
        def __init__(self, cfg):
            super().__init__()
            self.save_hyperparameters(cfg)

    class Child(All):
        def __init__(self, d=4, **kwargs):
            super().__init__(**kwargs)

    return All, Some, Ignore, FromDict, Child


def test_save_hyperparameters(L):
    All, Some, Ignore, FromDict, _ = hp_classes(L)
    assert dict(All(a=2).hparams) == {"a": 2, "b": "x", "c": None}
    assert dict(Some(a=5, b="y").hparams) == {"a": 5, "c": None}
    assert dict(Ignore(net=nn.Linear(1, 1)).hparams) == {"a": 1, "c": 3}
    assert dict(FromDict({"lr": 0.1, "layers": [1, 2]}).hparams) == {"lr": 0.1, "layers": [1, 2]}
    m = All(a=2)
    assert m.hparams.a == 2  # attribute access
    m.hparams.a = 10
    assert m.hparams_initial.a == 2 and m.hparams.a == 10
    assert dict(base_class(L)().hparams) == {}


def test_save_hyperparameters_subclass_collects_init_chain(L):
    *_, Child = hp_classes(L)
    hp = dict(Child(d=7, a=3).hparams)
    assert hp["a"] == 3 and hp["b"] == "x" and hp["c"] is None


def test_load_from_checkpoint_with_overrides(L, tmp_path):
    class HP(base_class(L)):
        def __init__(self, lr=0.1, width=2):
            super().__init__()
            self.save_hyperparameters()
            self.layer = _linear(o=width)

        def training_step(self, batch, batch_idx):
            return self(batch[0]).pow(2).mean()

    model = HP(lr=0.3)
    trainer = make_trainer(L, tmp_path, max_epochs=1)
    trainer.fit(model)
    path = tmp_path / "hp.ckpt"
    trainer.save_checkpoint(path)
    loaded = HP.load_from_checkpoint(str(path))
    assert loaded.hparams.lr == 0.3 and loaded.hparams.width == 2
    assert torch.equal(loaded.layer.weight, model.layer.weight)
    over = HP.load_from_checkpoint(str(path), lr=0.9)
    assert over.hparams.lr == 0.9
    assert torch.equal(over.layer.weight, model.layer.weight)
    with pytest.raises(RuntimeError):  # a different shape cannot take the weights
        HP.load_from_checkpoint(str(path), width=3)
    loose = HP.load_from_checkpoint(str(path), strict=False, map_location="cpu")
    assert loose.device.type == "cpu"


# ----------------------------------------------------------------------------- optimizers
def test_optimizers_and_lr_schedulers_single(L, tmp_path):
    class One(base_class(L)):
        def configure_optimizers(self):
            opt = torch.optim.SGD(self.parameters(), lr=0.1)
            return [opt], [torch.optim.lr_scheduler.StepLR(opt, 1)]

        def training_step(self, batch, batch_idx):
            self.seen = (self.optimizers(), self.optimizers(use_pl_optimizer=False), self.lr_schedulers())
            return super().training_step(batch, batch_idx)

    model = One()
    trainer = make_trainer(L, tmp_path, max_epochs=1, limit_train_batches=1)
    trainer.fit(model)
    wrapped, raw, sched = model.seen
    assert "LightningOptimizer" in [c.__name__ for c in type(wrapped).__mro__]
    assert wrapped.optimizer is raw and raw is trainer.optimizers[0]
    assert isinstance(sched, torch.optim.lr_scheduler.StepLR)


def test_optimizers_and_lr_schedulers_multiple(L, tmp_path):
    class Two(base_class(L)):
        def __init__(self):
            super().__init__()
            self.other = _linear(1)
            self.automatic_optimization = False

        def configure_optimizers(self):
            a = torch.optim.SGD(self.layer.parameters(), lr=0.1)
            b = torch.optim.Adam(self.other.parameters(), lr=0.1)
            return [a, b], [torch.optim.lr_scheduler.StepLR(a, 1), torch.optim.lr_scheduler.StepLR(b, 1)]

        def training_step(self, batch, batch_idx):
            self.seen = (self.optimizers(), self.lr_schedulers())

    model = Two()
    make_trainer(L, tmp_path, max_epochs=1, limit_train_batches=1).fit(model)
    opts, scheds = model.seen
    assert isinstance(opts, list) and len(opts) == 2
    assert isinstance(opts[0].optimizer, torch.optim.SGD) and isinstance(opts[1].optimizer, torch.optim.Adam)
    assert isinstance(scheds, list) and len(scheds) == 2


def test_lr_schedulers_none(L, tmp_path):
    class NoSched(base_class(L)):
        def training_step(self, batch, batch_idx):
            self.seen = self.lr_schedulers()
            return super().training_step(batch, batch_idx)

    model = NoSched()
    make_trainer(L, tmp_path, max_epochs=1, limit_train_batches=1).fit(model)
    assert model.seen is None


def test_toggle_untoggle_optimizer(L, tmp_path):
    class Tog(base_class(L)):
        def __init__(self):
            super().__init__()
            self.other = _linear(1)
            self.frozen = _linear(2)
            self.frozen.weight.requires_grad_(False)
            self.automatic_optimization = False

        def configure_optimizers(self):
            return [torch.optim.SGD(list(self.layer.parameters()) + [self.frozen.weight], lr=0.1),
                    torch.optim.SGD(list(self.other.parameters()) + [self.frozen.bias], lr=0.1)]

        def training_step(self, batch, batch_idx):
            a, b = self.optimizers()
            self.toggle_optimizer(b)
            self.during = {n: p.requires_grad for n, p in self.named_parameters()}
            loss = self.other(batch[0]).pow(2).mean()
            self.manual_backward(loss)
            b.step()
            b.zero_grad()
            self.untoggle_optimizer(b)
            self.after = {n: p.requires_grad for n, p in self.named_parameters()}

    model = Tog()
    make_trainer(L, tmp_path, max_epochs=1, limit_train_batches=1).fit(model)
    assert model.during == {"layer.weight": False, "layer.bias": False, "other.weight": True, "other.bias": True,
                            "frozen.weight": False, "frozen.bias": True}
    assert model.after == {"layer.weight": True, "layer.bias": True, "other.weight": True, "other.bias": True,
                           "frozen.weight": False, "frozen.bias": True}


def test_manual_backward_raises_in_automatic_mode(L, tmp_path):
    class Bad(base_class(L)):
        def training_step(self, batch, batch_idx):
            loss = super().training_step(batch, batch_idx)
            self.manual_backward(loss)
            return loss

    with pytest.raises(misconfiguration_exception(L), match="manual_backward"):
        make_trainer(L, tmp_path, max_epochs=1).fit(Bad())


def test_manual_optimization_steps_and_global_step(L, tmp_path):
    class Manual(base_class(L)):
        def __init__(self):
            super().__init__()
            self.automatic_optimization = False

        def training_step(self, batch, batch_idx):
            opt = self.optimizers()
            loss = super().training_step(batch, batch_idx)
            opt.zero_grad()
            self.manual_backward(loss)
            if batch_idx % 2 == 0:
                opt.step()

    model = Manual()
    before = model.layer.weight.detach().clone()
    trainer = make_trainer(L, tmp_path, max_epochs=1)
    trainer.fit(model)
    assert trainer.global_step == 2
    assert not torch.equal(before, model.layer.weight)


@pytest.mark.parametrize("trainer_kw, call_kw, match", [
    (dict(gradient_clip_val=1.0), dict(gradient_clip_val=0.5), "gradient_clip_val"),
    (dict(gradient_clip_algorithm="value", gradient_clip_val=1.0), dict(gradient_clip_algorithm="norm"),
     "gradient_clip_algorithm"),
    (dict(), dict(gradient_clip_val=1.0, gradient_clip_algorithm="foo"), "gradient_clip_algorithm"),
])
def test_clip_gradients_conflicts(L, tmp_path, trainer_kw, call_kw, match):
    class Clip(base_class(L)):
        def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
            self.clip_gradients(optimizer, **call_kw)

    with pytest.raises(misconfiguration_exception(L), match=match):
        make_trainer(L, tmp_path, max_epochs=1, **trainer_kw).fit(Clip())


def test_clip_gradients_by_value_and_norm(L, tmp_path):
    class Clip(base_class(L)):
        def __init__(self, algo):
            super().__init__()
            self.algo = algo

        def training_step(self, batch, batch_idx):
            return 1000 * super().training_step(batch, batch_idx)

        def on_before_optimizer_step(self, optimizer):
            self.raw = torch.cat([p.grad.flatten() for p in self.parameters()]).clone()

        def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
            self.clip_gradients(optimizer, gradient_clip_val=0.01, gradient_clip_algorithm=self.algo)
            self.clipped = torch.cat([p.grad.flatten() for p in self.parameters()]).clone()

    m = Clip("value")
    make_trainer(L, tmp_path, max_epochs=1, limit_train_batches=1).fit(m)
    assert m.raw.abs().max() > 0.01 and m.clipped.abs().max() <= 0.01 + 1e-7
    m = Clip("norm")
    make_trainer(L, tmp_path, max_epochs=1, limit_train_batches=1).fit(m)
    assert m.clipped.norm().item() == pytest.approx(0.01, rel=1e-4)


def test_manual_optimization_rejects_trainer_clipping(L, tmp_path):
    class Manual(base_class(L)):
        def __init__(self):
            super().__init__()
            self.automatic_optimization = False

        def training_step(self, batch, batch_idx):
            pass

    with pytest.raises(misconfiguration_exception(L), match="manual optimization"):
        make_trainer(L, tmp_path, max_epochs=1, gradient_clip_val=1.0).fit(Manual())


# ----------------------------------------------------------------------------- state
def test_freeze_unfreeze(L):
    m = base_class(L)()
    m.freeze()
    assert not m.training and not any(p.requires_grad for p in m.parameters())
    m.unfreeze()
    assert m.training and all(p.requires_grad for p in m.parameters())


def test_device_and_dtype(L):
    m = base_class(L)()
    assert m.device == torch.device("cpu") and m.dtype == torch.float32
    m.to(torch.float64)
    assert m.dtype == torch.float64 and m.layer.weight.dtype == torch.float64
    m.double().float()
    assert m.dtype == torch.float32

    class Empty(L.LightningModule):
        pass

    e = Empty()
    assert e.device == torch.device("cpu") and e.dtype == torch.float32
    e.to(torch.float64)
    assert e.dtype == torch.float64


def test_trainer_property_unattached_raises(L):
    m = base_class(L)()
    with pytest.raises(RuntimeError, match="not attached"):
        m.trainer
    assert m.current_epoch == 0 and m.global_step == 0


def test_module_counters_follow_trainer(L, tmp_path):
    class Rec(base_class(L)):
        def on_train_batch_end(self, outputs, batch, batch_idx):
            self.__dict__.setdefault("seen", []).append((self.current_epoch, self.global_step))

    m = Rec()
    make_trainer(L, tmp_path, max_epochs=2, limit_train_batches=2).fit(m)
    assert m.seen == [(0, 1), (0, 2), (1, 3), (1, 4)]
