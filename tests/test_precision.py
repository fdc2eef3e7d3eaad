"""Precision flags: aliases, casts, autocast, and the GradScaler path (unscale before hooks, inf skips)."""
from __future__ import annotations

import functools
import warnings

import pytest
import torch
import torch.nn.functional as F
from helpers import make_loader, misconfiguration_exception, quiet_trainer_kwargs
from torch import nn


def _linear(seed=0):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Linear(8, 2)


@functools.lru_cache(maxsize=None)
def rec_class(L):
    class Rec(L.LightningModule):
        """Records dtypes seen inside training_step."""

        def __init__(self, opt="sgd"):
            super().__init__()
            self.layer = _linear()
            self.opt = opt
            self.seen = []

        def forward(self, x):
            return self.layer(x)

        def training_step(self, batch, batch_idx):
            x, y = batch
            out = self(x)
            self.seen.append({"x": x.dtype, "out": out.dtype, "param": self.layer.weight.dtype,
                              "default": torch.get_default_dtype()})
            return F.mse_loss(out.float(), y.float())

        def configure_optimizers(self):
            if self.opt == "fused":
                return torch.optim.AdamW(self.parameters(), lr=0.01, fused=True)
            return torch.optim.SGD(self.parameters(), lr=0.1)

        def train_dataloader(self):
            return make_loader(8, 4)

    return Rec


def fit(L, tmp_path, model, **kw):
    args = quiet_trainer_kwargs(tmp_path)
    args.update(dict(max_epochs=1))
    args.update(kw)
    t = L.Trainer(**args)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t.fit(model)
    return t


# ----------------------------------------------------------------------------- flags
@pytest.mark.parametrize("flag, expected", [
    (None, "32-true"), (32, "32-true"), ("32", "32-true"), ("32-true", "32-true"),
    (64, "64-true"), ("64", "64-true"), ("64-true", "64-true"),
    ("bf16", "bf16-mixed"), ("bf16-mixed", "bf16-mixed"), ("bf16-true", "bf16-true"), ("16-true", "16-true"),
])
def test_precision_aliases(L, tmp_path, flag, expected):
    kw = {} if flag is None else {"precision": flag}
    assert L.Trainer(**quiet_trainer_kwargs(tmp_path), **kw).precision == expected


@pytest.mark.parametrize("flag", [16, "16", "16-mixed"])
def test_16_mixed_on_cpu_warns_and_becomes_bf16_mixed(L, tmp_path, flag):
    with pytest.warns(UserWarning, match="bf16-mixed"):
        t = L.Trainer(**quiet_trainer_kwargs(tmp_path), precision=flag)
    assert t.precision == "bf16-mixed"


@pytest.mark.parametrize("flag", ["8", 8, "fp16", "bf32", True])
def test_bad_precision_raises(L, tmp_path, flag):
    with pytest.raises((misconfiguration_exception(L), ValueError)):
        L.Trainer(**quiet_trainer_kwargs(tmp_path), precision=flag)


def test_normalize_precision_unit():
    from trainer.exceptions import MisconfigurationException
    from trainer.precision import PRECISION_CHOICES, normalize_precision

    for choice in PRECISION_CHOICES:
        assert normalize_precision(choice) == choice
    assert normalize_precision(16) == "16-mixed" and normalize_precision("bf16") == "bf16-mixed"
    for bad in (None, True, False, 8, "8", "half"):
        with pytest.raises(MisconfigurationException, match="precision"):
            normalize_precision(bad)


@pytest.mark.parametrize("flag", [16.0, 32.0, 64.0])
def test_float_precision_rejected(flag):
    from trainer.exceptions import MisconfigurationException
    from trainer.precision import normalize_precision

    with pytest.raises(MisconfigurationException, match="precision"):
        normalize_precision(flag)


# ----------------------------------------------------------------------------- casts / autocast
def test_64_true_trains_in_float64(L, tmp_path):
    model = rec_class(L)()
    fit(L, tmp_path, model, precision="64-true")
    assert model.seen and all(s["x"] == s["out"] == s["param"] == torch.float64 for s in model.seen)
    assert model.layer.weight.dtype == torch.float64
    assert torch.get_default_dtype() == torch.float32  # restored after the step


@pytest.mark.parametrize("flag, dtype", [("bf16-true", torch.bfloat16), ("16-true", torch.float16)])
def test_half_true_casts_params(L, tmp_path, flag, dtype):
    model = rec_class(L)()
    before = model.layer.weight.detach().clone()
    fit(L, tmp_path, model, precision=flag)
    assert model.layer.weight.dtype == dtype
    assert all(s["param"] == s["out"] == s["x"] == dtype for s in model.seen)
    assert not torch.equal(before.to(dtype), model.layer.weight)


def test_bf16_mixed_autocasts(L, tmp_path):
    model = rec_class(L)()
    fit(L, tmp_path, model, precision="bf16-mixed")
    assert all(s["out"] == torch.bfloat16 and s["param"] == torch.float32 and s["x"] == torch.float32
               for s in model.seen)
    assert model.layer.weight.dtype == torch.float32
    assert not torch.is_autocast_enabled("cpu")


def test_bf16_mixed_autocast_in_eval_and_predict(L, tmp_path):
    class Ev(rec_class(L)):
        def validation_step(self, batch, batch_idx):
            self.val_dtype = self(batch[0]).dtype

        def predict_step(self, batch, batch_idx):
            return self(batch[0])

    m = Ev()
    t = L.Trainer(**quiet_trainer_kwargs(tmp_path), precision="bf16-mixed")
    t.validate(m, dataloaders=make_loader(4, 4), verbose=False)
    assert m.val_dtype == torch.bfloat16
    (pred,) = t.predict(m, dataloaders=make_loader(4, 4))
    assert pred.dtype == torch.bfloat16


def test_fused_adamw_with_clipping_fp32(L, tmp_path):
    model = rec_class(L)(opt="fused")
    before = model.layer.weight.detach().clone()
    t = fit(L, tmp_path, model, gradient_clip_val=0.5)
    assert t.global_step == 2
    assert not torch.equal(before, model.layer.weight)


# ----------------------------------------------------------------------------- GradScaler path (trainer only)
def _scaler_trainer(tmp_path, **kw):
    import trainer as TL
    from trainer.precision import MixedPrecision

    args = quiet_trainer_kwargs(tmp_path)
    args.update(dict(max_epochs=1), **kw)
    t = TL.Trainer(**args)
    plugin = MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu", init_scale=2.0 ** 10))
    plugin.trainer = t
    t.strategy.precision_plugin = plugin
    return t, plugin


@functools.lru_cache(maxsize=None)
def scaled_class():
    import trainer as TL

    class Scaled(TL.LightningModule):
        def __init__(self, inf_at=None, opt="sgd"):
            super().__init__()
            self.layer = _linear()
            self.inf_at = inf_at
            self.opt = opt
            self.grads, self.weights, self.out_dtypes = [], [], []

        def training_step(self, batch, batch_idx):
            x, y = batch
            out = self.layer(x)
            self.out_dtypes.append(out.dtype)
            loss = F.mse_loss(out.float(), y)
            if batch_idx == self.inf_at:
                loss = loss * float("inf")
            self.weights.append(self.layer.weight.detach().clone())
            return loss

        def on_before_optimizer_step(self, optimizer):
            self.grads.append(self.layer.weight.grad.detach().clone())

        def configure_optimizers(self):
            if self.opt == "fused":
                return torch.optim.AdamW(self.parameters(), lr=0.01, fused=True)
            return torch.optim.SGD(self.parameters(), lr=0.1)

        def train_dataloader(self):
            return make_loader(12, 4)

    return Scaled


def test_grad_scaler_unscales_before_hooks(tmp_path):
    model = scaled_class()()
    ref = _linear()
    t, plugin = _scaler_trainer(tmp_path, limit_train_batches=1)
    t.fit(model)
    assert model.out_dtypes == [torch.float16]
    x, y = next(iter(make_loader(12, 4)))
    with torch.autocast("cpu", dtype=torch.float16):
        out = ref(x)
    F.mse_loss(out.float(), y).backward()
    # the hook sees real gradients, not gradients multiplied by the 1024 loss scale
    assert torch.allclose(model.grads[0], ref.weight.grad, rtol=1e-2, atol=1e-3)
    assert t.global_step == 1
    assert plugin.scaler.get_scale() == 2.0 ** 10


def test_grad_scaler_inf_skips_step_but_counts_it(tmp_path):
    model = scaled_class()(inf_at=1)
    t, plugin = _scaler_trainer(tmp_path)
    t.fit(model)
    final = model.layer.weight.detach()
    assert t.global_step == 3
    assert not torch.equal(model.weights[0], model.weights[1])  # step 0 applied
    assert torch.equal(model.weights[1], model.weights[2])      # step 1 (inf) skipped
    assert not torch.equal(model.weights[2], final)             # step 2 applied
    assert not torch.isfinite(model.grads[1]).all()
    assert plugin.scaler.get_scale() == 2.0 ** 9                # backed off once


def _grad_scaler_hand_loop(inf_at, clip):
    """What a user writes with torch.amp: fp16 autocast, GradScaler(init_scale=1024), unscale, clip, fused AdamW."""
    layer = _linear()
    opt = torch.optim.AdamW(layer.parameters(), lr=0.01, fused=True)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10)
    weights = []
    for batch_idx, (x, y) in enumerate(make_loader(12, 4)):
        weights.append(layer.weight.detach().clone())
        with torch.autocast("cpu", dtype=torch.float16):
            loss = F.mse_loss(layer(x).float(), y)
        if batch_idx == inf_at:
            loss = loss * float("inf")
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(layer.parameters(), clip)
        scaler.step(opt)
        scaler.update()
        opt.zero_grad()
    return layer, weights, scaler.get_scale()


def test_grad_scaler_fused_adamw_with_clipping(tmp_path):
    """fp16 GradScaler + fused AdamW + norm clipping, an inf at step 1: the hand loop's weights and scale."""
    model = scaled_class()(opt="fused", inf_at=1)
    t, plugin = _scaler_trainer(tmp_path, gradient_clip_val=0.1)
    t.fit(model)
    ref, ref_weights, ref_scale = _grad_scaler_hand_loop(inf_at=1, clip=0.1)
    assert t.global_step == 3
    assert torch.equal(model.weights[1], model.weights[2])  # the fused kernel skipped the inf step
    assert not torch.equal(model.weights[0], model.weights[1])
    for i, (got, want) in enumerate(zip(model.weights, ref_weights)):
        torch.testing.assert_close(got, want, rtol=0, atol=0, msg=lambda m: f"before step {i}: {m}")
    torch.testing.assert_close(model.layer.weight.detach(), ref.weight.detach(), rtol=0, atol=0)
    torch.testing.assert_close(model.layer.bias.detach(), ref.bias.detach(), rtol=0, atol=0)
    assert plugin.scaler.get_scale() == ref_scale == 2.0 ** 9


def test_grad_scaler_state_in_checkpoint(tmp_path):
    model = scaled_class()(inf_at=0)
    t, plugin = _scaler_trainer(tmp_path, limit_train_batches=1)
    t.fit(model)
    t.save_checkpoint(tmp_path / "amp.ckpt")
    ckpt = torch.load(tmp_path / "amp.ckpt", weights_only=False)
    assert ckpt["MixedPrecision"]["scale"] == 2.0 ** 9


def test_mixed_precision_plugin_rejects_bad_config():
    from trainer.exceptions import MisconfigurationException
    from trainer.precision import MixedPrecision

    with pytest.raises(ValueError, match="precision"):
        MixedPrecision("32-true", "cpu")
    with pytest.raises(MisconfigurationException, match="scaler"):
        MixedPrecision("bf16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu"))
    assert MixedPrecision("bf16-mixed", "cpu").scaler is None
