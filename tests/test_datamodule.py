"""LightningDataModule: hooks in the run, from_datasets, hparams and checkpoint state."""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from helpers import datamodule_class, make_dataset, quiet_trainer_kwargs
from torch import nn
from torch.utils.data import DataLoader


def _linear():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return nn.Linear(8, 2)


@functools.lru_cache(maxsize=None)
def plain_module(L):
    class Plain(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = _linear()
            self.batches = 0

        def training_step(self, batch, batch_idx):
            self.batches += 1
            return F.mse_loss(self.layer(batch[0]), batch[1])

        def validation_step(self, batch, batch_idx):
            self.log("v", F.mse_loss(self.layer(batch[0]), batch[1]))

        def test_step(self, batch, batch_idx):
            self.log("t", F.mse_loss(self.layer(batch[0]), batch[1]))

        def predict_step(self, batch, batch_idx):
            return self.layer(batch[0])

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    return Plain


def trainer(L, tmp_path, **kw):
    args = quiet_trainer_kwargs(tmp_path)
    args.update(max_epochs=1, num_sanity_val_steps=0)
    args.update(kw)
    return L.Trainer(**args)


def test_hook_order_and_stages(L, tmp_path):
    events = []

    class DM(datamodule_class(L)):
        def prepare_data(self):
            events.append("prepare_data")

        def setup(self, stage):
            events.append(f"setup:{getattr(stage, 'value', stage)}")
            super().setup(stage)

        def teardown(self, stage):
            events.append(f"teardown:{getattr(stage, 'value', stage)}")

        def train_dataloader(self):
            events.append("train_dataloader")
            return super().train_dataloader()

        def val_dataloader(self):
            events.append("val_dataloader")
            return super().val_dataloader()

    class M(plain_module(L)):
        def setup(self, stage):
            events.append(f"module.setup:{getattr(stage, 'value', stage)}")

    dm, model = DM(), M()
    t = trainer(L, tmp_path)
    t.fit(model, datamodule=dm)
    assert events == ["prepare_data", "setup:fit", "module.setup:fit", "train_dataloader", "val_dataloader",
                      "teardown:fit"]
    assert dm.trainer is t
    events.clear()
    t.validate(model, datamodule=dm, verbose=False)
    assert events == ["prepare_data", "setup:validate", "module.setup:validate", "val_dataloader",
                      "teardown:validate"]


def test_datamodule_loaders_win_over_module_loaders(L, tmp_path):
    class WithOwn(plain_module(L)):
        def train_dataloader(self):
            raise AssertionError("the datamodule's loader must be used")

    dm = datamodule_class(L)(n_train=8)
    model = WithOwn()
    trainer(L, tmp_path).fit(model, dm)
    assert model.batches == 2


def test_from_datasets(L, tmp_path):
    dm = L.LightningDataModule.from_datasets(train_dataset=make_dataset(12), val_dataset=make_dataset(8, seed=1),
                                             test_dataset=[make_dataset(4, seed=2), make_dataset(8, seed=3)],
                                             predict_dataset=make_dataset(4), batch_size=4)
    loader = dm.train_dataloader()
    assert isinstance(loader, DataLoader) and loader.batch_size == 4
    assert type(loader.sampler).__name__ == "RandomSampler"
    assert type(dm.val_dataloader().sampler).__name__ == "SequentialSampler"
    assert isinstance(dm.test_dataloader(), list) and len(dm.test_dataloader()) == 2
    model = plain_module(L)()
    t = trainer(L, tmp_path)
    t.fit(model, datamodule=dm)
    assert model.batches == 3
    preds = t.predict(model, datamodule=dm)
    assert len(preds) == 1 and preds[0].shape == (4, 2)


def test_datamodule_hparams_and_state_in_checkpoint(L, tmp_path):
    class HPDM(datamodule_class(L)):
        def __init__(self, batch_size=4, n_train=8):
            super().__init__(n_train=n_train, batch_size=batch_size)
            self.save_hyperparameters()
            self.counter = 0

        def state_dict(self):
            return {"counter": 5}

        def load_state_dict(self, state):
            self.counter = state["counter"]

    dm = HPDM(batch_size=2)
    model = plain_module(L)()
    t = trainer(L, tmp_path)
    t.fit(model, dm)
    assert dict(dm.hparams) == {"batch_size": 2, "n_train": 8}
    t.save_checkpoint(tmp_path / "dm.ckpt")
    ckpt = torch.load(tmp_path / "dm.ckpt", weights_only=False)
    assert ckpt["datamodule_hyper_parameters"] == {"batch_size": 2, "n_train": 8}
    assert ckpt[type(dm).__qualname__] == {"counter": 5}
    dm2 = HPDM(batch_size=2)
    trainer(L, tmp_path, max_epochs=2).fit(plain_module(L)(), dm2, ckpt_path=str(tmp_path / "dm.ckpt"))
    assert dm2.counter == 5


def test_prepare_data_per_node_false_runs_on_rank_zero(L, tmp_path):
    dm = datamodule_class(L)()
    dm.prepare_data_per_node = False
    trainer(L, tmp_path).fit(plain_module(L)(), dm)
    assert dm.prepare_data_calls == 1
