"""Tiny deterministic LightningModules, built per framework module ``L``.

``boring_model_class(L)`` / ``mlp_module_class(L)`` return a class deriving from
``L.LightningModule`` (cached per framework), so the very same module code runs under
pytorch-lightning and under ``trainer``. Initial weights come from a private RNG seeded in
``__init__`` (``seed``), so they are identical across frameworks whatever the global RNG holds.
"""
from __future__ import annotations

import functools
from types import ModuleType

import torch
import torch.nn.functional as F
from torch import nn

from .data import IN_FEATURES, OUT_FEATURES, InputOnlyDataset, make_loader


def _seeded(seed: int, build):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


@functools.lru_cache(maxsize=None)
def boring_model_class(L: ModuleType) -> type:
    """Lightning's BoringModel, shrunk: one Linear layer, MSE to random targets, SGD.

    Defines its own ``*_dataloader`` methods, so ``trainer.fit(model)`` needs no loaders.
    """

    class BoringModel(L.LightningModule):
        def __init__(self, lr: float = 0.1, seed: int = 0, n: int = 16, batch_size: int = 4):
            super().__init__()
            self.lr = lr
            self.n = n
            self.batch_size = batch_size
            self.layer = _seeded(seed, lambda: nn.Linear(IN_FEATURES, OUT_FEATURES))

        def forward(self, x):
            return self.layer(x)

        def loss(self, batch):
            x, y = batch
            return F.mse_loss(self(x), y)

        def training_step(self, batch, batch_idx):
            return self.loss(batch)

        def validation_step(self, batch, batch_idx):
            return self.loss(batch)

        def test_step(self, batch, batch_idx):
            return self.loss(batch)

        def predict_step(self, batch, batch_idx, dataloader_idx=0):
            x = batch[0] if isinstance(batch, (list, tuple)) else batch
            return self(x)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=self.lr)

        def train_dataloader(self):
            return make_loader(self.n, self.batch_size, seed=0)

        def val_dataloader(self):
            return make_loader(self.n // 2, self.batch_size, seed=1)

        def test_dataloader(self):
            return make_loader(self.n // 2, self.batch_size, seed=2)

        def predict_dataloader(self):
            return torch.utils.data.DataLoader(InputOnlyDataset(self.n // 2), batch_size=self.batch_size)

    return BoringModel


@functools.lru_cache(maxsize=None)
def mlp_module_class(L: ModuleType) -> type:
    """A 2-layer tanh MLP regressing random targets; the workhorse of the parity tests.

    ``configure_optimizers`` is SGD(lr); tests subclass it to change optimizers/schedulers/logging.
    Logs nothing by default (logging is tested explicitly).
    """

    class MLPModule(L.LightningModule):
        def __init__(self, lr: float = 0.1, seed: int = 0, hidden: int = 16):
            super().__init__()
            self.lr = lr
            self.net = _seeded(
                seed,
                lambda: nn.Sequential(nn.Linear(IN_FEATURES, hidden), nn.Tanh(), nn.Linear(hidden, OUT_FEATURES)),
            )

        def forward(self, x):
            return self.net(x)

        def loss(self, batch):
            x, y = batch
            return F.mse_loss(self(x), y)

        def training_step(self, batch, batch_idx):
            return self.loss(batch)

        def validation_step(self, batch, batch_idx):
            return self.loss(batch)

        def test_step(self, batch, batch_idx):
            return self.loss(batch)

        def predict_step(self, batch, batch_idx, dataloader_idx=0):
            x = batch[0] if isinstance(batch, (list, tuple)) else batch
            return self(x)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=self.lr)

    return MLPModule


def make_reference_net(seed: int = 0, hidden: int = 16) -> nn.Module:
    """The MLPModule's network as a plain nn.Module (same initial weights), for hand-written loops."""
    return _seeded(
        seed, lambda: nn.Sequential(nn.Linear(IN_FEATURES, hidden), nn.Tanh(), nn.Linear(hidden, OUT_FEATURES))
    )


def state(module: nn.Module) -> dict:
    """A detached CPU copy of a module's parameters, keyed by name."""
    return {k: v.detach().cpu().clone() for k, v in module.named_parameters()}


@functools.lru_cache(maxsize=None)
def datamodule_class(L: ModuleType) -> type:
    """A LightningDataModule over the helpers' random tensors.

    ``prepare_data`` and ``setup`` record that they ran (``prepare_data_calls``, ``setup_stages``)
    and ``setup`` builds the datasets, so a loader asked for before ``setup`` fails loudly.
    """

    class TinyDataModule(L.LightningDataModule):
        def __init__(self, n_train: int = 16, n_val: int = 8, batch_size: int = 4):
            super().__init__()
            self.n_train, self.n_val, self.batch_size = n_train, n_val, batch_size
            self.prepare_data_calls = 0
            self.setup_stages: list = []
            self.train_set = self.val_set = self.test_set = None

        def prepare_data(self):
            self.prepare_data_calls += 1

        def setup(self, stage):
            self.setup_stages.append(getattr(stage, "value", stage))
            from .data import make_dataset

            self.train_set = make_dataset(self.n_train, seed=0)
            self.val_set = make_dataset(self.n_val, seed=1)
            self.test_set = make_dataset(self.n_val, seed=2)

        def train_dataloader(self):
            return torch.utils.data.DataLoader(self.train_set, batch_size=self.batch_size)

        def val_dataloader(self):
            return torch.utils.data.DataLoader(self.val_set, batch_size=self.batch_size)

        def test_dataloader(self):
            return torch.utils.data.DataLoader(self.test_set, batch_size=self.batch_size)

    return TinyDataModule
