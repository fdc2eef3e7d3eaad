"""SingleDeviceStrategy: placement, collectives as identities, checkpoint helpers, precision routing."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import make_loader, quiet_trainer_kwargs
from torch import nn

import trainer as TL
from trainer.precision import Precision
from trainer.strategies.single_device import SingleDeviceStrategy


class Net(TL.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(8, 2)

    def forward(self, x):
        return self.layer(x)

    def predict_step(self, batch, batch_idx):
        return self(batch[0])

    def training_step(self, batch, batch_idx):
        return F.mse_loss(self.layer(batch[0]), batch[1])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        return make_loader(8, 4)


def test_defaults_and_collectives():
    s = SingleDeviceStrategy()
    assert s.root_device == torch.device("cpu")
    assert (s.world_size, s.global_rank, s.local_rank, s.node_rank, s.is_global_zero) == (1, 0, 0, 0, True)
    t = torch.ones(2)
    assert s.reduce(t) is t and s.all_gather(t) is t and s.broadcast("x") == "x"
    assert s.reduce_boolean_decision(False) is False
    s.barrier("name")
    with s.block_backward_sync():
        pass
    loader = object()
    assert s.process_dataloader(loader, "train") is loader
    assert isinstance(s.precision_plugin, Precision)


def test_trainer_uses_single_device_strategy(tmp_path):
    t = TL.Trainer(**quiet_trainer_kwargs(tmp_path))
    assert isinstance(t.strategy, SingleDeviceStrategy) and t.strategy.trainer is t
    assert t.world_size == 1 and t.is_global_zero
    t2 = TL.Trainer(**quiet_trainer_kwargs(tmp_path), strategy="single_device")
    assert isinstance(t2.strategy, SingleDeviceStrategy)


def test_strategy_instance_is_used(tmp_path):
    s = SingleDeviceStrategy()
    t = TL.Trainer(**quiet_trainer_kwargs(tmp_path), strategy=s, max_epochs=1)
    m = Net()
    t.fit(m)
    assert t.strategy is s and s.lightning_module is m and s.model is m
    assert len(s.optimizers) == 1 and len(s._lightning_optimizers) == 1
    assert s._lightning_optimizers[0].optimizer is s.optimizers[0]
    assert t.global_step == 2


def test_setup_casts_and_configures_optimizers_only_when_fitting(tmp_path):
    t = TL.Trainer(**quiet_trainer_kwargs(tmp_path), precision="64-true")
    m = Net()
    (pred,) = t.predict(m, dataloaders=make_loader(4, 4))
    assert m.layer.weight.dtype == torch.float64 and pred.dtype == torch.float64
    assert t.strategy.optimizers == []
    t2 = TL.Trainer(**quiet_trainer_kwargs(tmp_path), max_epochs=1)
    t2.fit(Net())
    assert len(t2.strategy.optimizers) == 1


def test_checkpoint_helpers():
    s = SingleDeviceStrategy()
    m = Net()
    s.connect(m)
    sd = s.lightning_module_state_dict()
    assert set(sd) == {"layer.weight", "layer.bias"}
    new = {k: torch.zeros_like(v) for k, v in sd.items()}
    s.load_model_state_dict(new)
    assert torch.equal(m.layer.weight, torch.zeros(2, 8))
    with pytest.raises(RuntimeError):
        s.load_model_state_dict({"nope": torch.zeros(1)})
    s.load_model_state_dict({"layer.weight": torch.ones(2, 8)}, strict=False)
    assert torch.equal(m.layer.weight, torch.ones(2, 8))
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    assert s.optimizer_state(opt) == opt.state_dict()


def test_backward_and_optimizer_step_route_through_precision(tmp_path):
    calls = []

    class Spy(Precision):
        def pre_backward(self, tensor, module):
            calls.append("pre_backward")
            return super().pre_backward(tensor, module)

        def optimizer_step(self, optimizer, model, closure, **kwargs):
            calls.append("optimizer_step")
            return super().optimizer_step(optimizer, model, closure, **kwargs)

    t = TL.Trainer(**quiet_trainer_kwargs(tmp_path), max_epochs=1, limit_train_batches=1)
    spy = Spy()
    spy.trainer = t
    t.strategy.precision_plugin = spy
    t.fit(Net())
    assert calls == ["optimizer_step", "pre_backward"]
