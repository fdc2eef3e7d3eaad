"""One training batch: closure order, zero_grad placement, loss normalisation, manual optimization."""
from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F
from helpers import make_loader, quiet_trainer_kwargs
from torch import nn


def _linear():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return nn.Linear(8, 2)


@functools.lru_cache(maxsize=None)
def rec_class(L):
    class Rec(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = _linear()
            self.events = []

        def training_step(self, batch, batch_idx):
            self.events.append(f"step{batch_idx}")
            return F.mse_loss(self.layer(batch[0]), batch[1])

        def on_before_zero_grad(self, optimizer):
            self.events.append("before_zero_grad")

        def optimizer_zero_grad(self, epoch, batch_idx, optimizer):
            self.events.append("zero_grad")
            optimizer.zero_grad()

        def on_before_backward(self, loss):
            self.events.append("before_backward")

        def on_after_backward(self):
            self.events.append("after_backward")

        def on_before_optimizer_step(self, optimizer):
            self.events.append("before_optimizer_step")

        def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None):
            self.events.append("optimizer_step")
            super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

        def train_dataloader(self):
            return make_loader(8, 4)

    return Rec


def fit(L, tmp_path, model, **kw):
    args = quiet_trainer_kwargs(tmp_path)
    args.update(max_epochs=1)
    args.update(kw)
    t = L.Trainer(**args)
    t.fit(model)
    return t


def test_closure_order(L, tmp_path):
    m = rec_class(L)()
    fit(L, tmp_path, m, limit_train_batches=1)
    assert m.events == ["optimizer_step", "step0", "before_zero_grad", "zero_grad", "before_backward",
                        "after_backward", "before_optimizer_step"]


def test_closure_order_with_accumulation(L, tmp_path):
    m = rec_class(L)()
    fit(L, tmp_path, m, accumulate_grad_batches=2)
    assert m.events == ["step0", "before_zero_grad", "zero_grad", "before_backward", "after_backward",
                        "optimizer_step", "step1", "before_backward", "after_backward", "before_optimizer_step"]


def test_loss_is_normalised_by_accumulation(L, tmp_path):
    class Grad(rec_class(L)):
        def training_step(self, batch, batch_idx):
            loss = super().training_step(batch, batch_idx)
            self.events.append(("raw", float(loss)))
            return loss

        def on_before_backward(self, loss):
            self.events.append(float(loss))

        def on_train_batch_end(self, outputs, batch, batch_idx):
            self.events.append(("out", float(outputs["loss"])))

    m = Grad()
    fit(L, tmp_path, m, accumulate_grad_batches=2, limit_train_batches=2)
    raw = [e[1] for e in m.events if isinstance(e, tuple) and e[0] == "raw"]
    backward_losses = [e for e in m.events if isinstance(e, float)]
    outputs = [e[1] for e in m.events if isinstance(e, tuple) and e[0] == "out"]
    # backward sees loss / 2, and so does on_train_batch_end's outputs["loss"] (Lightning)
    assert len(raw) == len(backward_losses) == len(outputs) == 2
    for r, b, o in zip(raw, backward_losses, outputs):
        assert b == pytest.approx(r / 2, rel=1e-6) and o == pytest.approx(r / 2, rel=1e-6)


def test_lbfgs_closure_runs_multiple_times(L, tmp_path):
    class LBFGS(rec_class(L)):
        def configure_optimizers(self):
            return torch.optim.LBFGS(self.parameters(), lr=0.1, max_iter=3)

    m = LBFGS()
    t = fit(L, tmp_path, m, limit_train_batches=1)
    assert m.events.count("step0") > 1
    assert t.global_step == 1


def test_manual_optimization_counts_steps_per_optimizer_call(L, tmp_path):
    class Manual(rec_class(L)):
        def __init__(self):
            super().__init__()
            self.automatic_optimization = False

        def training_step(self, batch, batch_idx):
            opt = self.optimizers()
            for _ in range(2):
                loss = F.mse_loss(self.layer(batch[0]), batch[1])
                opt.zero_grad()
                self.manual_backward(loss)
                opt.step()
            return loss

    m = Manual()
    t = fit(L, tmp_path, m)
    assert t.global_step == 4


def test_manual_training_step_bad_return(L, tmp_path):
    from helpers import misconfiguration_exception

    class Manual(rec_class(L)):
        def __init__(self):
            super().__init__()
            self.automatic_optimization = False

        def training_step(self, batch, batch_idx):
            return "nope"

    with pytest.raises(misconfiguration_exception(L)):
        fit(L, tmp_path, Manual())


def test_closure_result_unit():
    from trainer.exceptions import MisconfigurationException
    from trainer.loops.optimization import ClosureResult

    loss = torch.tensor(4.0, requires_grad=True)
    r = ClosureResult.from_training_step_output({"loss": loss, "x": 1}, normalize=2)
    assert r.closure_loss.item() == 2.0 and r.loss.item() == 2.0 and not r.loss.requires_grad
    assert r.asdict()["x"] == 1
    assert ClosureResult.from_training_step_output(None).closure_loss is None
    with pytest.raises(MisconfigurationException, match="loss"):
        ClosureResult.from_training_step_output({"x": loss})
    with pytest.raises(MisconfigurationException, match="Tensor"):
        ClosureResult.from_training_step_output(3.0)
    with pytest.raises(MisconfigurationException, match="scalar"):
        ClosureResult.from_training_step_output(torch.ones(3))
