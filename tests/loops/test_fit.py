"""Fit loop: accumulation, scheduler stepping, sampler epochs, progress state, validation interplay."""
from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F
from helpers import make_dataset, make_loader, quiet_trainer_kwargs
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler


def _linear():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return nn.Linear(8, 2)


@functools.lru_cache(maxsize=None)
def net_class(L):
    class Net(L.LightningModule):
        def __init__(self, n=16, sched=None):
            super().__init__()
            self.layer = _linear()
            self.n, self.sched = n, sched
            self.events = []

        def training_step(self, batch, batch_idx):
            return F.mse_loss(self.layer(batch[0]), batch[1])

        def validation_step(self, batch, batch_idx):
            self.log("val_loss", F.mse_loss(self.layer(batch[0]), batch[1]))

        def configure_optimizers(self):
            opt = torch.optim.SGD(self.parameters(), lr=0.1)
            if self.sched is None:
                return opt
            return {"optimizer": opt, "lr_scheduler": {"scheduler": torch.optim.lr_scheduler.StepLR(opt, 1),
                                                       **self.sched}}

        def train_dataloader(self):
            return make_loader(self.n, 4)

        def val_dataloader(self):
            return make_loader(8, 4, seed=1)

    return Net


def fit(L, tmp_path, model, **kw):
    args = quiet_trainer_kwargs(tmp_path)
    args.update(max_epochs=1, num_sanity_val_steps=0)
    args.update(kw)
    t = L.Trainer(**args)
    t.fit(model)
    return t


@pytest.mark.parametrize("accum, n, steps", [(2, 16, 2), (3, 16, 2), (4, 8, 1), (1, 16, 4)])
def test_accumulate_grad_batches_step_count(L, tmp_path, accum, n, steps):
    class Rec(net_class(L)):
        def on_before_optimizer_step(self, optimizer):
            self.events.append(self.trainer.fit_loop.epoch_loop.batch_idx)

    m = Rec(n=n)
    t = fit(L, tmp_path, m, accumulate_grad_batches=accum)
    assert t.global_step == steps
    assert len(m.events) == steps


def test_accumulation_matches_large_batch(L, tmp_path):
    small = net_class(L)(n=16)
    fit(L, tmp_path, small, accumulate_grad_batches=2, limit_val_batches=0)

    class Big(net_class(L)):
        def train_dataloader(self):
            return make_loader(16, 8)

    big = Big()
    fit(L, tmp_path, big, limit_val_batches=0)
    assert torch.allclose(small.layer.weight, big.layer.weight, atol=1e-6)


@pytest.mark.parametrize("sched, epochs, last_epoch", [
    (dict(interval="step"), 2, 8), (dict(interval="step", frequency=3), 2, 2),
    (dict(interval="epoch"), 3, 3), (dict(interval="epoch", frequency=2), 3, 1),
])
def test_scheduler_stepping(L, tmp_path, sched, epochs, last_epoch):
    m = net_class(L)(sched=sched)
    t = fit(L, tmp_path, m, max_epochs=epochs)
    assert t.lr_scheduler_configs[0].scheduler.last_epoch == last_epoch


def test_scheduler_steps_with_accumulation(L, tmp_path):
    m = net_class(L)(sched=dict(interval="step"))
    t = fit(L, tmp_path, m, accumulate_grad_batches=2, max_epochs=2)
    assert t.lr_scheduler_configs[0].scheduler.last_epoch == 4


def test_sampler_set_epoch(L, tmp_path):
    seen = []

    class Sampler(DistributedSampler):
        def set_epoch(self, epoch):
            seen.append(epoch)
            super().set_epoch(epoch)

    class WithSampler(net_class(L)):
        def train_dataloader(self):
            ds = make_dataset(8)
            return DataLoader(ds, batch_size=4, sampler=Sampler(ds, num_replicas=1, rank=0, shuffle=False))

    fit(L, tmp_path, WithSampler(), max_epochs=3, limit_val_batches=0)
    assert seen == [0, 1, 2], seen


def test_fit_loop_state_dict_keys_match_lightning(L, tmp_path):
    import pytorch_lightning as pl

    theirs = fit(pl, tmp_path, net_class(pl)(), max_epochs=2)
    ours = fit(L, tmp_path, net_class(L)(), max_epochs=2)
    a, b = ours.fit_loop.state_dict(), theirs.fit_loop.state_dict()
    assert set(a) == set(b)
    assert a["epoch_progress"] == b["epoch_progress"]
    assert a["epoch_loop.batch_progress"] == b["epoch_loop.batch_progress"]
    assert a["epoch_loop.automatic_optimization.optim_progress"] == b["epoch_loop.automatic_optimization.optim_progress"]
    assert a["epoch_loop.state_dict"] == b["epoch_loop.state_dict"]


def test_hook_sequence_per_epoch(L, tmp_path):
    class Rec(net_class(L)):
        def on_train_epoch_start(self):
            self.events.append("epoch_start")

        def on_train_batch_start(self, batch, batch_idx):
            self.events.append(f"b{batch_idx}")

        def on_validation_epoch_start(self):
            self.events.append("val")

        def on_train_epoch_end(self):
            self.events.append("epoch_end")

        def on_train_start(self):
            self.events.append("train_start")

        def on_train_end(self):
            self.events.append("train_end")

    m = Rec(n=8)
    fit(L, tmp_path, m, max_epochs=2)
    assert m.events == ["train_start", "epoch_start", "b0", "b1", "val", "epoch_end",
                        "epoch_start", "b0", "b1", "val", "epoch_end", "train_end"]


def test_model_in_train_mode_after_validation(L, tmp_path):
    class Rec(net_class(L)):
        def training_step(self, batch, batch_idx):
            self.events.append(self.training)
            return super().training_step(batch, batch_idx)

        def validation_step(self, batch, batch_idx):
            self.events.append(("val", self.training))
            return super().validation_step(batch, batch_idx)

    m = Rec(n=8)
    fit(L, tmp_path, m, max_epochs=2, num_sanity_val_steps=1)
    assert all(e is True for e in m.events if not isinstance(e, tuple))
    assert all(e == ("val", False) for e in m.events if isinstance(e, tuple))


def test_iterable_train_loader(L, tmp_path):
    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):
            x, y = make_dataset(12).tensors
            return iter(zip(x, y))

    class IterNet(net_class(L)):
        def train_dataloader(self):
            return DataLoader(Stream(), batch_size=4)

    m = IterNet()
    t = fit(L, tmp_path, m, max_epochs=2)
    assert t.global_step == 6
    assert t.num_training_batches == float("inf")


def test_iterable_loader_float_val_check_interval_raises(L, tmp_path):
    from helpers import misconfiguration_exception

    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):
            x, y = make_dataset(8).tensors
            return iter(zip(x, y))

    class IterNet(net_class(L)):
        def train_dataloader(self):
            return DataLoader(Stream(), batch_size=4)

    with pytest.raises(misconfiguration_exception(L), match="val_check_interval"):
        fit(L, tmp_path, IterNet(), val_check_interval=0.5)
