"""Corners of issue 15's callbacks, each run under pytorch-lightning (asserted first, the oracle) and `trainer`:
a param group added mid-fit for parameters that were trainable all along (the compiled engine must notice the
optimizer changed, no ``requires_grad`` flips), EMA's update schedule, SWA without an epoch limit and with two
optimizers, and WeightAveraging used outside ``fit``."""
from __future__ import annotations

from typing import Any, Dict, List

import pytest
import torch
import torch.nn.functional as F
from helpers import compiled_engine, import_framework, make_loader, quiet_trainer_kwargs
from torch import nn

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

FRAMEWORKS = ("lightning", "trainer")


def two_part_module(L: Any, head_only_optimizer: bool = True, two_optimizers: bool = False) -> Any:
    class TwoPart(L.LightningModule):
        def __init__(self):
            super().__init__()
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                self.backbone = nn.Linear(8, 4)
                self.head = nn.Linear(4, 2)
            if two_optimizers:
                self.automatic_optimization = False

        def forward(self, x):
            return self.head(torch.tanh(self.backbone(x)))

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = F.mse_loss(self(x), y)
            if two_optimizers:
                for opt in self.optimizers():
                    opt.zero_grad()
                self.manual_backward(loss)
                for opt in self.optimizers():
                    opt.step()
            return loss

        def validation_step(self, batch, batch_idx):
            x, y = batch
            self.log("val_loss", F.mse_loss(self(x), y))

        def configure_optimizers(self):
            if two_optimizers:
                return [torch.optim.SGD(self.backbone.parameters(), lr=0.1),
                        torch.optim.SGD(self.head.parameters(), lr=0.1)]
            params = self.head.parameters() if head_only_optimizer else self.parameters()
            return torch.optim.SGD(params, lr=0.1, momentum=0.5)

    return TwoPart()


def _trainer(L: Any, tmp_path, **kw: Any) -> Any:
    base = quiet_trainer_kwargs(tmp_path)
    base.update(kw)
    return L.Trainer(**base)


def test_param_group_added_for_trainable_parameters_reaches_the_step(tmp_path):
    """Nothing is frozen: the backbone trains only once it joins the optimizer at epoch 1."""
    results: Dict[str, Dict[str, torch.Tensor]] = {}
    reports = {}
    for name in FRAMEWORKS:
        L = import_framework(name)

        class AddBackbone(L.callbacks.BaseFinetuning):
            def freeze_before_training(self, pl_module):
                pass

            def finetune_function(self, pl_module, epoch, optimizer):
                if epoch == 1:
                    optimizer.add_param_group({"params": list(pl_module.backbone.parameters()), "lr": 0.05})

        model = two_part_module(L)
        start = {k: v.clone() for k, v in model.state_dict().items()}
        trainer = _trainer(L, tmp_path / name, max_epochs=3, callbacks=[AddBackbone()])
        trainer.fit(model, make_loader(16, 4))
        results[name] = {k: v.clone() for k, v in model.state_dict().items()}
        assert not torch.equal(results[name]["backbone.weight"], start["backbone.weight"]), name
        reports[name] = getattr(trainer, "compile_report", None)
    for key, value in results["lightning"].items():
        torch.testing.assert_close(results["trainer"][key], value, atol=1e-6, rtol=1e-6)
    if compiled_engine():
        report = reports["trainer"]
        assert report.mode in ("full", "fwd_bwd"), str(report)
        assert "the optimizer's param groups changed" in report.recompile_reasons, str(report)


@pytest.mark.parametrize("kwargs", [
    dict(),
    dict(update_every_n_steps=3),
    dict(update_every_n_steps=0),
    dict(update_starting_at_step=5, update_every_n_steps=2),
    dict(update_starting_at_epoch=2),
    dict(update_starting_at_epoch=0, update_starting_at_step=100),
])
def test_ema_update_schedule_matches_lightning(kwargs):
    table = {}
    for name in FRAMEWORKS:
        ema = import_framework(name).callbacks.EMAWeightAveraging(decay=0.5, **kwargs)
        steps = [ema.should_update(step_idx=i) for i in range(12)]
        epochs = [ema.should_update(epoch_idx=i) for i in range(4)]
        table[name] = (steps, epochs, ema.should_update())
    assert table["trainer"] == table["lightning"]


def test_swa_without_epoch_limit_averages_into_the_model_at_the_end(tmp_path):
    states = {}
    for name in FRAMEWORKS:
        L = import_framework(name)
        model = two_part_module(L, head_only_optimizer=False)
        swa = L.callbacks.StochasticWeightAveraging(swa_lrs=0.03, swa_epoch_start=2, annealing_epochs=1)
        _trainer(L, tmp_path / name, max_epochs=-1, max_steps=14, callbacks=[swa]).fit(model, make_loader(16, 4))
        states[name] = ({k: v.clone() for k, v in model.state_dict().items()}, int(swa.n_averaged))
    assert states["lightning"][1] == 3  # epochs 2, 3, 4 (1-based); max_steps stops inside the 4th
    assert states["trainer"][1] == states["lightning"][1]
    for key, value in states["lightning"][0].items():
        torch.testing.assert_close(states["trainer"][0][key], value, atol=1e-6, rtol=1e-6)


def test_swa_refuses_two_optimizers_like_lightning(tmp_path):
    seen = {}
    for name in FRAMEWORKS:
        L = import_framework(name)
        trainer = _trainer(L, tmp_path / name, max_epochs=1,
                           callbacks=[L.callbacks.StochasticWeightAveraging(swa_lrs=0.1)])
        with pytest.raises(Exception) as err:
            trainer.fit(two_part_module(L, two_optimizers=True), make_loader(8, 4))
        seen[name] = (type(err.value).__name__, str(err.value))
    assert seen["lightning"] == ("MisconfigurationException", "SWA currently works with 1 `optimizer`.")
    assert seen["trainer"] == seen["lightning"]


def test_weight_averaging_outside_fit_warns_and_keeps_weights(tmp_path, recwarn):
    """validate() with the callback: no averaged model exists; loading a checkpoint warns as Lightning does."""
    messages: Dict[str, List[str]] = {}
    for name in FRAMEWORKS:
        L = import_framework(name)
        model = two_part_module(L)
        path = tmp_path / f"{name}.ckpt"
        fit_trainer = _trainer(L, tmp_path / name, max_epochs=1, callbacks=[L.callbacks.EMAWeightAveraging()])
        fit_trainer.fit(model, make_loader(8, 4))
        fit_trainer.save_checkpoint(str(path))
        recwarn.clear()
        trainer = _trainer(L, tmp_path / name, callbacks=[L.callbacks.EMAWeightAveraging()])
        trainer.validate(model, make_loader(8, 4), ckpt_path=str(path), verbose=False)
        messages[name] = sorted({str(w.message) for w in recwarn if "WeightAveraging" in str(w.message)})
    assert messages["lightning"] and messages["trainer"] == messages["lightning"]



def test_ema_refuses_a_multi_avg_fn_like_lightning(tmp_path):
    """EMAWeightAveraging brings its own avg_fn: AveragedModel refuses a second function when fit sets it up."""
    from torch.optim.swa_utils import get_ema_multi_avg_fn

    seen = {}
    for name in FRAMEWORKS:
        L = import_framework(name)
        ema = L.callbacks.EMAWeightAveraging(decay=0.9, multi_avg_fn=get_ema_multi_avg_fn(0.5))
        with pytest.raises(Exception) as err:
            _trainer(L, tmp_path / name, max_epochs=1, callbacks=[ema]).fit(two_part_module(L), make_loader(8, 4))
        seen[name] = (type(err.value).__name__, str(err.value))
    assert seen["lightning"] == ("AssertionError", "Only one of avg_fn and multi_avg_fn should be provided")
    assert seen["trainer"] == seen["lightning"]


def test_averaged_copies_leave_the_trainer_and_loaders_behind(tmp_path):
    """Lightning's test_swa_deepcopy / test_weight_averaging_deepcopy: the copy is the module, not the Trainer."""
    for name in FRAMEWORKS:
        L = import_framework(name)
        swa = L.callbacks.StochasticWeightAveraging(swa_lrs=0.1)
        ema = L.callbacks.EMAWeightAveraging()
        model = two_part_module(L)
        _trainer(L, tmp_path / name, fast_dev_run=True, callbacks=[swa, ema]).fit(model, make_loader(8, 4))
        for copy in (swa._average_model, ema._average_model.module):
            assert copy is not model and copy._trainer is None, name
            assert copy.configure_optimizers.__self__ is copy, name
        assert model._trainer is not None, name
