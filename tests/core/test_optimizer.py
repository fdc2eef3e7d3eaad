"""``configure_optimizers`` formats, scheduler configs and their stepping, run under Lightning and trainer."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import make_loader, misconfiguration_exception, quiet_trainer_kwargs
from torch import nn
from torch.optim.lr_scheduler import ExponentialLR, ReduceLROnPlateau, StepLR


def _linear(seed=0):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Linear(8, 2)


def model_with(L, configure, manual=False):
    """A module whose ``configure_optimizers`` is ``configure(module)``."""

    class M(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.a = _linear(0)
            self.b = _linear(1)
            self.automatic_optimization = not manual

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = F.mse_loss(self.a(x) + self.b(x), y)
            self.log("train_loss", loss)
            if manual:
                for opt in (self.optimizers() if isinstance(self.optimizers(), list) else [self.optimizers()]):
                    opt.zero_grad()
                self.manual_backward(loss)
                return None
            return loss

        def validation_step(self, batch, batch_idx):
            x, y = batch
            self.log("val_loss", F.mse_loss(self.a(x) + self.b(x), y))

        def configure_optimizers(self):
            return configure(self)

        def train_dataloader(self):
            return make_loader(16, 4)

        def val_dataloader(self):
            return make_loader(8, 4, seed=1)

    return M()


def fit(L, tmp_path, model, **kw):
    args = quiet_trainer_kwargs(tmp_path)
    args.update(dict(max_epochs=1, num_sanity_val_steps=0))
    args.update(kw)
    trainer = L.Trainer(**args)
    trainer.fit(model)
    return trainer


def sgd(m, params=None, lr=0.1):
    return torch.optim.SGD(m.parameters() if params is None else params, lr=lr)


def cfg_tuple(c):
    return (c.interval, c.frequency, c.monitor, c.name, c.strict, c.reduce_on_plateau)


# ----------------------------------------------------------------------------- formats
def test_single_optimizer(L, tmp_path):
    t = fit(L, tmp_path, model_with(L, lambda m: sgd(m)))
    assert len(t.optimizers) == 1 and isinstance(t.optimizers[0], torch.optim.SGD)
    assert t.lr_scheduler_configs == []


def test_list_of_optimizers_manual(L, tmp_path):
    t = fit(L, tmp_path, model_with(L, lambda m: [sgd(m, m.a.parameters()), sgd(m, m.b.parameters())], manual=True))
    assert len(t.optimizers) == 2 and t.lr_scheduler_configs == []


def test_tuple_of_optimizers_and_schedulers(L, tmp_path):
    def conf(m):
        opt = sgd(m)
        return [opt], [StepLR(opt, step_size=1, gamma=0.5)]

    t = fit(L, tmp_path, model_with(L, conf), max_epochs=2)
    (c,) = t.lr_scheduler_configs
    assert cfg_tuple(c) == ("epoch", 1, None, None, True, False)
    assert c.scheduler.last_epoch == 2
    assert t.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.025)


def test_dict_with_scheduler_object(L, tmp_path):
    def conf(m):
        opt = sgd(m)
        return {"optimizer": opt, "lr_scheduler": ExponentialLR(opt, 0.5)}

    t = fit(L, tmp_path, model_with(L, conf))
    (c,) = t.lr_scheduler_configs
    assert isinstance(c.scheduler, ExponentialLR)
    assert cfg_tuple(c) == ("epoch", 1, None, None, True, False)


def test_dict_with_scheduler_config(L, tmp_path):
    def conf(m):
        opt = sgd(m)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": StepLR(opt, 1), "interval": "step", "frequency": 2,
                                                   "name": "my_lr", "strict": False, "monitor": "train_loss"}}

    t = fit(L, tmp_path, model_with(L, conf), max_epochs=2)
    (c,) = t.lr_scheduler_configs
    assert cfg_tuple(c) == ("step", 2, "train_loss", "my_lr", False, False)
    assert c.scheduler.last_epoch == 4  # 8 steps, every 2nd


def test_dict_optimizer_only(L, tmp_path):
    t = fit(L, tmp_path, model_with(L, lambda m: {"optimizer": sgd(m)}))
    assert len(t.optimizers) == 1 and t.lr_scheduler_configs == []


def test_list_of_dicts(L, tmp_path):
    def conf(m):
        a, b = sgd(m, m.a.parameters()), sgd(m, m.b.parameters())
        return [{"optimizer": a, "lr_scheduler": {"scheduler": StepLR(a, 1), "interval": "step"}},
                {"optimizer": b, "lr_scheduler": StepLR(b, 1)}]

    t = fit(L, tmp_path, model_with(L, conf, manual=True))
    assert len(t.optimizers) == 2
    assert [c.interval for c in t.lr_scheduler_configs] == ["step", "epoch"]
    assert [c.scheduler.optimizer for c in t.lr_scheduler_configs] == t.optimizers


def test_reduce_on_plateau_with_monitor(L, tmp_path):
    def conf(m):
        opt = sgd(m)
        return {"optimizer": opt, "lr_scheduler": ReduceLROnPlateau(opt, patience=0, factor=0.5), "monitor": "val_loss"}

    t = fit(L, tmp_path, model_with(L, conf), max_epochs=2)
    (c,) = t.lr_scheduler_configs
    assert c.reduce_on_plateau and c.monitor == "val_loss"
    assert c.scheduler.last_epoch == 2  # stepped once per epoch with the metric


def test_reduce_on_plateau_missing_metric_strict(L, tmp_path):
    def conf(m):
        opt = sgd(m)
        return {"optimizer": opt, "lr_scheduler": ReduceLROnPlateau(opt), "monitor": "nope"}

    with pytest.raises(misconfiguration_exception(L), match="nope"):
        fit(L, tmp_path, model_with(L, conf))


def test_reduce_on_plateau_missing_metric_not_strict_warns(L, tmp_path):
    def conf(m):
        opt = sgd(m)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": ReduceLROnPlateau(opt), "monitor": "nope",
                                                   "strict": False}}

    with pytest.warns(RuntimeWarning, match="nope"):  # Lightning's class for it
        fit(L, tmp_path, model_with(L, conf))


def test_none_warns_and_runs_without_optimizer(L, tmp_path):
    model = model_with(L, lambda m: None)
    before = model.a.weight.detach().clone()
    with pytest.warns(UserWarning, match="returned `None`"):
        t = fit(L, tmp_path, model)
    assert torch.equal(before, model.a.weight)
    assert len(t.optimizers) == 1 and repr(t.optimizers[0]) == "No Optimizer"
    assert t.global_step == 4


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize("conf", [
    lambda m: 1,
    lambda m: "sgd",
    lambda m: {"lr_scheduler": None},
    lambda m: [sgd(m), 3],
])
def test_bad_formats_raise(L, tmp_path, conf):
    # Lightning raises a bare KeyError for a dict without 'optimizer'; trainer names the problem
    expected = misconfiguration_exception(L) if L.__name__ == "trainer" else (misconfiguration_exception(L), KeyError)
    with pytest.raises(expected):
        fit(L, tmp_path, model_with(L, conf))


def test_bad_scheduler_interval_raises(L, tmp_path):
    def conf(m):
        opt = sgd(m)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": StepLR(opt, 1), "interval": "batch"}}

    with pytest.raises(misconfiguration_exception(L), match="interval"):
        fit(L, tmp_path, model_with(L, conf))


@pytest.mark.parametrize("freq", [0, -1, "2", 1.5])
def test_bad_scheduler_frequency_raises(TL, tmp_path, freq):
    # Lightning does not validate `frequency` (0 divides by zero later); trainer checks it up front
    def conf(m):
        opt = sgd(m)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": StepLR(opt, 1), "frequency": freq}}

    with pytest.raises(TL.MisconfigurationException, match="frequency"):
        fit(TL, tmp_path, model_with(TL, conf))


def test_scheduler_dict_without_scheduler_key(L, tmp_path):
    def conf(m):
        return {"optimizer": sgd(m), "lr_scheduler": {"interval": "step"}}

    with pytest.raises(misconfiguration_exception(L), match="scheduler"):
        fit(L, tmp_path, model_with(L, conf))


@pytest.mark.parametrize("fmt", ["tuple", "dict"])
def test_plateau_without_monitor_raises(L, tmp_path, fmt):
    def conf(m):
        opt = sgd(m)
        if fmt == "tuple":
            return [opt], [ReduceLROnPlateau(opt)]
        return {"optimizer": opt, "lr_scheduler": {"scheduler": ReduceLROnPlateau(opt)}}

    with pytest.raises(misconfiguration_exception(L), match="monitor"):
        fit(L, tmp_path, model_with(L, conf))


def test_scheduler_of_foreign_optimizer_raises(L, tmp_path):
    def conf(m):
        other = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
        return [sgd(m)], [StepLR(other, 1)]

    with pytest.raises(misconfiguration_exception(L), match="optimizer"):
        fit(L, tmp_path, model_with(L, conf))


# ----------------------------------------------------------------------------- trainer.optimizers unit level
def test_parse_optimizers_unit(TL):
    from trainer.core.optimizer import LRSchedulerConfig, _MockOptimizer, parse_optimizers

    p = nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([p], lr=1.0)
    sch = StepLR(opt, 1)
    assert parse_optimizers(opt) == ([opt], [])
    assert parse_optimizers((opt,)) == ([opt], [])
    opts, cfgs = parse_optimizers(([opt], sch))
    assert opts == [opt] and cfgs == [LRSchedulerConfig(sch)]
    with pytest.warns(RuntimeWarning, match="unsupported keys"):  # Lightning's warning class
        parse_optimizers({"optimizer": opt, "lr_scheduler": {"scheduler": sch, "bogus": 1}})
    with pytest.warns(UserWarning, match="None"):
        opts, cfgs = parse_optimizers(None)
    assert isinstance(opts[0], _MockOptimizer) and cfgs == []
    assert opts[0].step(lambda: 3) == 3
    # manual optimization may use ReduceLROnPlateau without a monitor
    _, cfgs = parse_optimizers(([opt], [ReduceLROnPlateau(opt)]), is_manual=True)
    assert cfgs[0].reduce_on_plateau and cfgs[0].monitor is None


def test_lightning_optimizer_step_goes_through_strategy(TL, tmp_path):
    from trainer.core.optimizer import LightningOptimizer

    calls = []

    class FakeStrategy:
        def optimizer_step(self, optimizer, closure, **kw):
            calls.append(kw)
            return closure()

    p = nn.Parameter(torch.ones(1))
    lo = LightningOptimizer(torch.optim.SGD([p], lr=1.0), FakeStrategy())
    assert lo.step(lambda: "closure-ran", foo=1) == "closure-ran"
    assert calls == [{"foo": 1}]
    assert lo.param_groups[0]["lr"] == 1.0 and lo.defaults["lr"] == 1.0  # attribute passthrough
    with pytest.raises(TL.MisconfigurationException, match="callable"):
        lo.step(closure=3)


# ----------------------------------------------------------------------------- copies of the wrapper
def test_lightning_optimizer_deepcopy(TL):
    """`copy.deepcopy` builds the copy with `__new__` and looks up `__setstate__`/`__deepcopy__` on it before
    `_optimizer` exists; the wrapper's attribute passthrough must answer "no such attribute", not recurse."""
    import copy

    from trainer.core.optimizer import LightningOptimizer

    class FakeStrategy:
        def optimizer_step(self, optimizer, closure, **kw):
            out = closure()
            optimizer.step()
            return out

    p = nn.Parameter(torch.ones(3))
    lo = LightningOptimizer(torch.optim.SGD([p], lr=0.5, momentum=0.9), FakeStrategy())
    p.grad = torch.full_like(p, 2.0)
    lo.step(lambda: None)  # momentum buffer now in the state
    for clone in (copy.deepcopy(lo), copy.copy(lo)):
        assert type(clone) is LightningOptimizer and clone.param_groups[0]["lr"] == 0.5
        assert clone.defaults["momentum"] == 0.9  # passthrough works on the copy
    clone = copy.deepcopy(lo)
    assert clone.optimizer is not lo.optimizer and clone.param_groups[0]["params"][0] is not p
    (buf,), (clone_buf,) = [s["momentum_buffer"] for s in lo.state.values()], [
        s["momentum_buffer"] for s in clone.state.values()]
    assert torch.equal(buf, clone_buf) and buf is not clone_buf
    again = copy.deepcopy(clone)  # a copy of a copy (Lightning's recurses here)
    assert again.param_groups[0]["lr"] == 0.5 and again.optimizer is not clone.optimizer
    assert clone._strategy is lo._strategy  # the wrapper does not own the strategy (Lightning: a weak proxy)
    blank = LightningOptimizer.__new__(LightningOptimizer)
    assert not hasattr(blank, "param_groups_x") and not hasattr(blank, "__setstate__")
    with pytest.raises(AttributeError, match="anything"):
        blank.anything


def test_callback_state_holding_lightning_optimizer_deepcopies(L, tmp_path):
    """A callback that keeps the module's (wrapped) optimizer, and a state dict holding it, deep-copy under
    both frameworks (Lightning's test_callbacks_state_fit_ckpt_path deep-copies trainer.callbacks)."""
    import copy

    copied_at_start = []

    class KeepsOptimizer(L.Callback):
        def on_train_start(self, trainer, pl_module):
            self.optimizer = pl_module.optimizers()
            # kept outside the callback: in Lightning a copy of the wrapper cannot be copied again (it recurses)
            copied_at_start.append(copy.deepcopy(self.optimizer))

        def state_dict(self):
            return {"optimizer": self.optimizer, "lr": self.optimizer.param_groups[0]["lr"]}

    keep = KeepsOptimizer()
    model = model_with(L, lambda m: torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9))
    trainer = fit(L, tmp_path, model, callbacks=[keep], limit_train_batches=2)
    assert type(keep.optimizer).__name__ in ("LightningOptimizer", "LightningSGD")
    assert copied_at_start[0].param_groups[0]["lr"] == 0.1
    state = copy.deepcopy(keep.state_dict())
    assert state["lr"] == 0.1 and state["optimizer"].param_groups[0]["lr"] == 0.1
    # (Lightning's copy keeps the optimizer's own state only, `defaults`/`state`/`param_groups`: its wrapper
    # subclasses the optimizer, whose __getstate__ leaves out the wrapped optimizer and the strategy)
    live_params = keep.optimizer.param_groups[0]["params"]
    copied_params = state["optimizer"].param_groups[0]["params"]
    assert len(live_params) == len(copied_params) == 4
    assert all(torch.equal(a, b) and a is not b for a, b in zip(live_params, copied_params))
    clone = copy.deepcopy(keep)
    live = [s["momentum_buffer"] for s in keep.optimizer.state.values()]
    copied = [s["momentum_buffer"] for s in clone.optimizer.state.values()]
    assert len(live) == len(copied) == 4 and all(torch.equal(a, b) and a is not b for a, b in zip(live, copied))
    assert clone.optimizer.defaults["momentum"] == 0.9
    assert copy.deepcopy(trainer.callbacks)[0].optimizer.param_groups[0]["lr"] == 0.1
