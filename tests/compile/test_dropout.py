"""Dropout under the compiled step (the statistical test :mod:`trainer.compile.capture` points at).

The capture records dropout as RNG ops in the step graph, drawn again at every call. What the
compiled step must keep, on any device: each activation is zeroed with probability p
independently (the fraction of zeros per step and over all steps within a binomial bound), a
new mask every step, kept activations scaled by 1/(1-p), no dropout in eval mode. On the CPU the
masks are even the eager engine's bit for bit (inductor calls ATen's ``bernoulli_`` on torch's
default generator there), so a seeded compiled fit equals the eager one.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import trainer as L

from .equivalence import assert_matches_eager
from .models import MLP, fit, make_data

P = 0.5
HIDDEN, BATCH, N = 64, 32, 320  # 10 steps an epoch, 2048 dropout draws a step


class DropoutMLP(MLP):
    """8-64-4 MLP with ``Dropout(P)`` after the hidden layer; the step returns what dropout did."""

    def __init__(self) -> None:
        super().__init__(opt="sgd", n=N, batch_size=BATCH)
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(8, HIDDEN), nn.Tanh(), nn.Dropout(P), nn.Linear(HIDDEN, 4))

    def _hidden(self, x):
        h = self.net[1](self.net[0](x))  # tanh: never exactly 0 on this data
        return h, self.net[2](h)

    def training_step(self, batch, batch_idx):
        x, y = batch
        h, d = self._hidden(x)
        loss = F.cross_entropy(self.net[3](d), y)
        self.log("train_loss", loss)
        dropped = d == 0
        # kept activations must be h / (1 - p) exactly where they are kept
        scale_err = ((d - h / (1 - P)) * (~dropped)).abs().max()
        return {"loss": loss, "dropped": dropped, "scale_err": scale_err}

    def validation_step(self, batch, batch_idx):
        x, y = batch
        _, d = self._hidden(x)
        self.log("val_dropped", (d == 0).float().mean())
        self.log("val_loss", F.cross_entropy(self.net[3](d), y))

    def val_dataloader(self):
        x, y = make_data(64, seed=1)
        return DataLoader(TensorDataset(x, y), batch_size=BATCH)


class Outputs(L.Callback):
    def __init__(self) -> None:
        self.masks, self.scale_errs, self.losses = [], [], []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.masks.append(outputs["dropped"].cpu())
        self.scale_errs.append(outputs["scale_err"].item())
        self.losses.append(outputs["loss"].item())


def _fit(compile, **kw):
    out = Outputs()
    torch.manual_seed(1234)  # the dropout masks' generator
    trainer = fit(DropoutMLP(), compile, epochs=2, callbacks=[out], **kw)
    return trainer, out


def _within(observed: float, p: float, n: int, sigmas: float) -> bool:
    """``observed`` is the mean of ``n`` Bernoulli(p) draws within ``sigmas`` standard deviations."""
    return abs(observed - p) <= sigmas * math.sqrt(p * (1 - p) / n)


@pytest.fixture(scope="module")
def cpu_runs():
    return _fit(False), _fit(True)


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU"))]


@pytest.mark.parametrize("device", DEVICES)
def test_dropout_statistics(device, cpu_runs):
    trainer, out = cpu_runs[1] if device == "cpu" else _fit(True, accelerator="cuda")
    assert trainer.compile_report.mode == "full", trainer.compile_report
    masks = torch.stack(out.masks).float()  # (steps, BATCH, HIDDEN)
    steps, per_step = masks.shape[0], masks[0].numel()
    assert steps == 20
    # each step and all steps together: zeroed with probability p (binomial bounds, 5-6 sigma:
    # a false alarm about once in 10^6 runs)
    for i, frac in enumerate(masks.mean(dim=(1, 2)).tolist()):
        assert _within(frac, P, per_step, 6), (i, frac)
    assert _within(masks.mean().item(), P, masks.numel(), 5)
    # a new mask every step (a mask frozen at capture would repeat: 0 mismatches), independent of
    # the previous one: two independent masks disagree with probability 2p(1-p)
    mismatch = (masks[1:] != masks[:-1]).float()
    assert all(m > 0 for m in mismatch.mean(dim=(1, 2)).tolist())
    assert _within(mismatch.mean().item(), 2 * P * (1 - P), mismatch.numel(), 5)
    # and across the batch: the rows of one step are not one mask broadcast
    rows = (masks[:, 1:] != masks[:, :1]).float()
    assert _within(rows.mean().item(), 2 * P * (1 - P), rows.numel(), 5)
    # inverted dropout: kept activations scaled by 1 / (1 - p)
    assert max(out.scale_errs) < 1e-5
    # and the network still learns under it
    assert sum(out.losses[-5:]) < sum(out.losses[:5])


def test_cpu_dropout_masks_equal_eager(cpu_runs):
    """Same seed, same masks: inductor's CPU code calls ``aten.bernoulli_`` on torch's default
    generator in the eager engine's order, so the compiled fit is the eager fit."""
    (eager, eager_out), (compiled, compiled_out) = cpu_runs
    assert len(compiled_out.masks) == len(eager_out.masks) == 20
    for i, (c, e) in enumerate(zip(compiled_out.masks, eager_out.masks)):
        assert torch.equal(c, e), f"step {i}: the compiled step drew another mask"
    assert_matches_eager(eager, compiled)


def test_eval_mode_has_no_dropout(cpu_runs):
    """Validation (compiled eval step, and the eager engine's) sees the network in eval mode."""
    for trainer in (cpu_runs[0][0], cpu_runs[1][0]):
        model = trainer.lightning_module
        metrics = trainer.validate(model, verbose=False)[0]
        assert metrics["val_dropped"] == 0.0
        x, y = make_data(64, seed=1)
        model.eval()
        with torch.no_grad():
            expected = F.cross_entropy(model.net(x), y).item()
        assert metrics["val_loss"] == pytest.approx(expected, rel=1e-5)
    report = cpu_runs[1][0].compile_report.eval
    assert report.graphs_built >= 1 and "validation_step" not in report.fallback_reasons, report
