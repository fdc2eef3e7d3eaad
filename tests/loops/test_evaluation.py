"""Evaluation and prediction loops: modes, dataloader_idx, metrics, hooks."""
from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F
from helpers import InputOnlyDataset, make_loader, quiet_trainer_kwargs
from torch import nn
from torch.utils.data import DataLoader


def _linear():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return nn.Linear(8, 2)


@functools.lru_cache(maxsize=None)
def ev_class(L):
    class Ev(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = _linear()
            self.drop = nn.Dropout(0.1)
            self.events = []

        def forward(self, x):
            return self.layer(self.drop(x))

        def validation_step(self, batch, batch_idx):
            self.events.append(("val", batch_idx, self.training, self.drop.training))
            self.log("v", F.mse_loss(self(batch[0]), batch[1]))

        def test_step(self, batch, batch_idx):
            self.log("t", F.mse_loss(self(batch[0]), batch[1]))

        def predict_step(self, batch, batch_idx):
            return self(batch)

    return Ev


def trainer(L, tmp_path, **kw):
    args = quiet_trainer_kwargs(tmp_path)
    args.update(kw)
    return L.Trainer(**args)


def test_eval_mode_inside_and_restored_after(L, tmp_path):
    m = ev_class(L)()
    m.train()
    m.drop.eval()  # a submodule frozen in eval by the user stays so
    trainer(L, tmp_path).validate(m, dataloaders=make_loader(8, 4), verbose=False)
    assert [e[2:] for e in m.events] == [(False, False), (False, False)]
    assert m.training and not m.drop.training
    trainer(L, tmp_path).predict(m, dataloaders=DataLoader(InputOnlyDataset(4), batch_size=4))
    assert m.training and not m.drop.training


def test_multiple_loaders_need_dataloader_idx(L, tmp_path):
    with pytest.raises(RuntimeError, match="dataloader_idx"):
        trainer(L, tmp_path).validate(ev_class(L)(), dataloaders=[make_loader(4, 4), make_loader(4, 4)],
                                      verbose=False)


def test_multiple_loaders_order_and_per_loader_results(L, tmp_path):
    class Multi(ev_class(L)):
        def validation_step(self, batch, batch_idx, dataloader_idx=0):
            self.events.append((dataloader_idx, batch_idx))
            self.log("n", float(dataloader_idx * 10 + batch_idx))

        def on_validation_epoch_end(self):
            self.log("end", 1.0)

    m = Multi()
    out = trainer(L, tmp_path).validate(m, dataloaders=[make_loader(8, 4), make_loader(12, 4)], verbose=False)
    assert m.events == [(0, 0), (0, 1), (1, 0), (1, 1), (1, 2)]
    assert out == [{"n/dataloader_idx_0": 0.5, "end": 1.0}, {"n/dataloader_idx_1": 11.0, "end": 1.0}]


def test_validate_without_step_raises(L, tmp_path):
    from helpers import misconfiguration_exception

    class NoStep(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = _linear()

    with pytest.raises(misconfiguration_exception(L), match="validation_step"):
        trainer(L, tmp_path).validate(NoStep(), dataloaders=make_loader(4, 4))


def test_validate_reuses_attached_model_and_loaders(L, tmp_path):
    class WithLoader(ev_class(L)):
        def val_dataloader(self):
            return make_loader(4, 4)

    m = WithLoader()
    t = trainer(L, tmp_path)
    first = t.validate(m, verbose=False)
    assert t.validate(m, verbose=False) == first  # its own val_dataloader again
    with pytest.raises(ValueError, match="best"):  # no model passed: ckpt_path defaults to "best"
        t.validate(verbose=False)


def test_verbose_prints_results(L, tmp_path, capsys):
    trainer(L, tmp_path).test(ev_class(L)(), dataloaders=make_loader(4, 4), verbose=True)
    out = capsys.readouterr().out
    assert "Test metric" in out and "t" in out
    trainer(L, tmp_path).test(ev_class(L)(), dataloaders=make_loader(4, 4), verbose=False)
    assert "Test metric" not in capsys.readouterr().out


def test_eval_step_without_batch_idx(L, tmp_path):
    class NoIdx(ev_class(L)):
        def validation_step(self, batch):
            self.log("v", 1.0)

    assert trainer(L, tmp_path).validate(NoIdx(), dataloaders=make_loader(4, 4), verbose=False) == [{"v": 1.0}]


def test_predict_hooks_and_no_logging(L, tmp_path):
    from helpers import misconfiguration_exception

    class Pred(ev_class(L)):
        def predict_step(self, batch, batch_idx):
            self.log("x", 1.0)

    with pytest.raises(misconfiguration_exception(L)):
        trainer(L, tmp_path).predict(Pred(), dataloaders=DataLoader(InputOnlyDataset(4), batch_size=4))


def test_predict_without_loader_raises(L, tmp_path):
    from helpers import misconfiguration_exception

    with pytest.raises(misconfiguration_exception(L)):
        trainer(L, tmp_path).predict(ev_class(L)())


def test_eval_batch_hooks_receive_outputs(L, tmp_path):
    class Out(ev_class(L)):
        def validation_step(self, batch, batch_idx):
            return {"idx": batch_idx}

        def on_validation_batch_end(self, outputs, batch, batch_idx, dataloader_idx=0):
            self.events.append(outputs)

    m = Out()
    trainer(L, tmp_path).validate(m, dataloaders=make_loader(8, 4), verbose=False)
    assert m.events == [{"idx": 0}, {"idx": 1}]
