"""Issue 15's training-trick callbacks against pytorch-lightning 2.6.6 (the oracle): StochasticWeightAveraging,
WeightAveraging / EMAWeightAveraging, BaseFinetuning / BackboneFinetuning, DeviceStatsMonitor, ModelPruning and
SpikeDetection.

Each test runs the same script under Lightning and under `trainer` and compares what a user sees: the final
weights and buffers, the optimizer's param groups, what was logged, the checkpoint's keys and the callback's
state in it, resumed fits, and the errors (class and wording). Under ``TRAINER_COMPILE=1`` the `trainer` side
runs the compiled engine (fp32 within 1e-6 of Lightning, see README).
"""
from __future__ import annotations

import json
import os
import sys
import types
from types import ModuleType
from typing import Any, Callable, Dict, List, Optional

import pytest
import torch
import torch.nn.functional as F
from helpers import compiled_engine, import_framework, make_loader, quiet_trainer_kwargs
from torch import nn
from torch.nn.utils import prune as torch_prune

pytestmark = [pytest.mark.parity, pytest.mark.filterwarnings("ignore::UserWarning")]

FRAMEWORKS = ("lightning", "trainer")
TOL = dict(atol=1e-6, rtol=1e-6)


def _seeded(seed: int, build: Callable[[], nn.Module]) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def net_module_class(L: ModuleType, batch_norm: bool = False, optimizer: str = "adam",
                     filter_frozen: bool = False) -> type:
    """A backbone (Linear [+ BatchNorm] + ReLU) and a head; Adam or SGD; logs train_loss / val_loss."""

    class Net(L.LightningModule):
        def __init__(self, lr: float = 0.05, seed: int = 0):
            super().__init__()
            self.lr = lr

            def build() -> nn.Module:
                # Linear without bias -> BatchNorm -> ReLU, as real networks stack them. Not BatchNorm after a
                # ReLU: with 4 samples a batch, a mostly dead ReLU channel gives BatchNorm a variance near 0,
                # which turns a 1-ulp difference into 1e-5 within ten steps (a plain torch loop does the same
                # with a 3e-8 nudge), so no engine that rounds differently could be compared. Not a bias before
                # BatchNorm: its gradient is zero up to rounding, which Adam normalises into noise.
                if not batch_norm:
                    return nn.Sequential(nn.Linear(8, 6), nn.ReLU())
                return nn.Sequential(nn.Linear(8, 6, bias=False), nn.BatchNorm1d(6), nn.ReLU())

            self.backbone = _seeded(seed, build)
            self.head = _seeded(seed + 1, lambda: nn.Linear(6, 2))

        def forward(self, x):
            return self.head(self.backbone(x))

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = F.mse_loss(self(x), y)
            self.log("train_loss", loss)
            return loss

        def validation_step(self, batch, batch_idx):
            x, y = batch
            self.log("val_loss", F.mse_loss(self(x), y))

        def configure_optimizers(self):
            params = [p for p in self.parameters() if p.requires_grad] if filter_frozen else self.parameters()
            if optimizer == "sgd":
                return torch.optim.SGD(params, lr=self.lr, momentum=0.9)
            return torch.optim.Adam(params, lr=self.lr)

    return Net


def _trainer(L: ModuleType, tmp_path, **kw: Any) -> Any:
    base = quiet_trainer_kwargs(tmp_path)
    base.update(kw)
    return L.Trainer(**base)


def _state(module: nn.Module) -> Dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def assert_states_close(ours: Dict[str, torch.Tensor], lightning: Dict[str, torch.Tensor], what: str) -> None:
    assert sorted(ours) == sorted(lightning), f"{what}: keys differ"
    for key in lightning:
        torch.testing.assert_close(ours[key], lightning[key], **TOL, msg=lambda m: f"{what}[{key}]: {m}")


def assert_groups_equal(ours: List[Any], lightning: List[Any]) -> None:
    """Param groups as (lr, count) pairs or dicts: counts equal, learning rates within float rounding."""
    assert len(ours) == len(lightning)
    for o, p in zip(ours, lightning):
        o, p = (o, p) if isinstance(p, dict) else (dict(enumerate(o)), dict(enumerate(p)))
        assert o.keys() == p.keys()
        for k in p:
            assert o[k] == pytest.approx(p[k], rel=1e-12), (k, o, p)


def _fw(name: str) -> ModuleType:
    return import_framework(name)


def _fit(name: str, tmp_path, callbacks: Callable[[ModuleType], List[Any]], module_kw: Optional[dict] = None,
         fit_kw: Optional[dict] = None, **trainer_kw: Any) -> Dict[str, Any]:
    """One fit under framework ``name``: the final weights, the optimizer's groups, the logged metrics, the
    trainer and its callbacks."""
    L = _fw(name)
    torch.manual_seed(0)
    model = net_module_class(L, **(module_kw or {}))()
    cbs = callbacks(L)
    trainer = _trainer(L, tmp_path / name, callbacks=cbs, **trainer_kw)
    trainer.fit(model, make_loader(16, 4, seed=0), make_loader(8, 4, seed=1), **(fit_kw or {}))
    opt = trainer.optimizers[0]
    groups = [{"lr": g["lr"], "n": len(g["params"])} for g in opt.param_groups]
    report = getattr(trainer, "compile_report", None) if name == "trainer" else None
    return dict(state=_state(model), groups=groups, metrics={k: float(v) for k, v in trainer.callback_metrics.items()},
                trainer=trainer, callbacks=cbs, model=model, report=report)


def assert_compiled(run: Dict[str, Any]) -> None:
    """Under TRAINER_COMPILE=1 the step really ran compiled (no silent eager fallback)."""
    if compiled_engine():
        report = run["report"]
        assert report is not None and report.mode in ("full", "fwd_bwd"), str(report)
        assert report.steps_run > 0, str(report)


def _both(tmp_path, *args: Any, **kw: Any) -> Dict[str, Dict[str, Any]]:
    return {name: _fit(name, tmp_path, *args, **kw) for name in FRAMEWORKS}


def _ckpt(path) -> Dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=False)


# --------------------------------------------------------------------------------------------
# StochasticWeightAveraging
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("batch_norm", [False, True], ids=["plain", "batchnorm"])
def test_swa_weights_lr_and_checkpoint_match_lightning(tmp_path, batch_norm):
    def callbacks(L):
        return [L.callbacks.StochasticWeightAveraging(swa_lrs=0.02, swa_epoch_start=2, annealing_epochs=1),
                L.callbacks.ModelCheckpoint(dirpath=str(tmp_path / L.__name__), save_last=True)]

    runs = _both(tmp_path, callbacks, module_kw=dict(batch_norm=batch_norm, optimizer="sgd"), max_epochs=4,
                 enable_checkpointing=True)
    pl, ours = runs["lightning"], runs["trainer"]
    assert_compiled(ours)
    # the oracle: SWA changed the weights away from plain training's and set SWALR's lr
    assert pl["groups"] == [{"lr": pytest.approx(0.02), "n": len(list(pl["model"].parameters()))}]
    assert_states_close(ours["state"], pl["state"], "final weights")
    assert ours["groups"] == pl["groups"]
    assert ours["trainer"].max_epochs == pl["trainer"].max_epochs == 4  # the BatchNorm epoch is given back
    assert ours["trainer"].current_epoch == pl["trainer"].current_epoch
    pl_ck = _ckpt(tmp_path / "pytorch_lightning" / "last.ckpt")
    our_ck = _ckpt(tmp_path / "trainer" / "last.ckpt")
    key = "StochasticWeightAveraging"
    assert sorted(our_ck["callbacks"][key]) == sorted(pl_ck["callbacks"][key])
    for k in ("n_averaged", "latest_update_epoch"):
        assert our_ck["callbacks"][key][k] == pl_ck["callbacks"][key][k], k
    assert our_ck["callbacks"][key]["scheduler_state"]["_last_lr"] == pytest.approx(
        pl_ck["callbacks"][key]["scheduler_state"]["_last_lr"])
    assert_states_close(our_ck["callbacks"][key]["average_model_state"],
                        pl_ck["callbacks"][key]["average_model_state"], "average_model_state")


def test_swa_resume_continues_the_average_like_lightning(tmp_path):
    """Fit 3 epochs (SWA from epoch 2), then resume to 5: the averaged model, its count and SWALR come back."""
    def run(name: str) -> Dict[str, torch.Tensor]:
        L = _fw(name)
        d = tmp_path / name

        def cbs(max_epochs: int) -> List[Any]:
            return [L.callbacks.StochasticWeightAveraging(swa_lrs=0.02, swa_epoch_start=2, annealing_epochs=2),
                    L.callbacks.ModelCheckpoint(dirpath=str(d), save_last=True)]

        model = net_module_class(L, optimizer="sgd")()
        first = _trainer(L, d, callbacks=cbs(5), max_epochs=5, enable_checkpointing=True, max_steps=12)
        first.fit(model, make_loader(16, 4, seed=0))
        model2 = net_module_class(L, optimizer="sgd")(seed=5)
        second = _trainer(L, d, callbacks=cbs(5), max_epochs=5, enable_checkpointing=True)
        second.fit(model2, make_loader(16, 4, seed=0), ckpt_path=str(d / "last.ckpt"))
        swa = second.callbacks[0] if isinstance(second.callbacks[0], L.callbacks.StochasticWeightAveraging) else [
            c for c in second.callbacks if isinstance(c, L.callbacks.StochasticWeightAveraging)][0]
        return {"state": _state(model2), "n_averaged": swa.n_averaged.clone(),
                "lr": torch.tensor(second.optimizers[0].param_groups[0]["lr"])}

    pl, ours = run("lightning"), run("trainer")
    assert int(pl["n_averaged"]) == 4  # epochs 2..5 (1-based): two before the checkpoint, two after the resume
    assert int(ours["n_averaged"]) == int(pl["n_averaged"])
    torch.testing.assert_close(ours["lr"], pl["lr"])
    assert_states_close(ours["state"], pl["state"], "resumed SWA weights")


SWA_ERRORS = [
    (dict(swa_lrs=0.1, swa_epoch_start=0), "swa_epoch_start should be a >0 integer or a float between 0 and 1."),
    (dict(swa_lrs=0.1, swa_epoch_start=1.5), "swa_epoch_start should be a >0 integer or a float between 0 and 1."),
    (dict(swa_lrs=-0.1), "The `swa_lrs` should a positive float, or a list of positive floats"),
    (dict(swa_lrs=[0.1, 1]), "The `swa_lrs` should a positive float, or a list of positive floats"),
    (dict(swa_lrs="0.1"), "The `swa_lrs` should a positive float, or a list of positive floats"),
    (dict(swa_lrs=0.1, avg_fn=3), "The `avg_fn` should be callable."),
    (dict(swa_lrs=0.1, device=1), "device is expected to be a torch.device or a str. Found 1"),
]


@pytest.mark.parametrize("kwargs,message", SWA_ERRORS)
def test_swa_constructor_errors_match_lightning(kwargs, message):
    for name in FRAMEWORKS:
        L = _fw(name)
        with pytest.raises(Exception) as err:
            L.callbacks.StochasticWeightAveraging(**kwargs)
        assert type(err.value).__name__ == "MisconfigurationException", name
        assert str(err.value) == message, name


def test_swa_float_start_with_infinite_epochs_errors_like_lightning(tmp_path):
    msgs = {}
    for name in FRAMEWORKS:
        with pytest.raises(Exception) as err:
            _fit(name, tmp_path, lambda L: [L.callbacks.StochasticWeightAveraging(swa_lrs=0.1)], max_epochs=-1,
                 max_steps=2)
        msgs[name] = (type(err.value).__name__, str(err.value))
    assert msgs["lightning"][0] == "MisconfigurationException"
    assert msgs["trainer"] == msgs["lightning"]


# --------------------------------------------------------------------------------------------
# WeightAveraging / EMAWeightAveraging
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["ema", "swa_every_step", "ema_bn_every_2"])
def test_weight_averaging_matches_lightning(tmp_path, kind):
    """The averaged weights (copied in at the end), the validation on averaged weights, and the checkpoint."""
    def callbacks(L):
        if kind == "ema":
            cb = L.callbacks.EMAWeightAveraging(decay=0.9)
        elif kind == "ema_bn_every_2":
            cb = L.callbacks.EMAWeightAveraging(decay=0.8, update_every_n_steps=2, update_starting_at_step=1,
                                                update_starting_at_epoch=1)
        else:
            cb = L.callbacks.WeightAveraging()
        return [cb, L.callbacks.ModelCheckpoint(dirpath=str(tmp_path / L.__name__), save_last=True)]

    bn = kind == "ema_bn_every_2"
    # SGD with BatchNorm: Adam normalises the engines' different roundings of BatchNorm's tiny gradients into
    # 5e-6 differences without any callback (README: 1e-6 is the compiled engine's fp32 promise)
    runs = _both(tmp_path, callbacks, module_kw=dict(batch_norm=bn, optimizer="sgd" if bn else "adam"),
                 max_epochs=2, enable_checkpointing=True, accumulate_grad_batches=1)
    pl, ours = runs["lightning"], runs["trainer"]
    assert_compiled(ours)
    assert_states_close(ours["state"], pl["state"], "final (averaged) weights")
    assert ours["metrics"] == pytest.approx(pl["metrics"], rel=1e-5, abs=1e-6)  # val_loss of the averaged weights
    pl_ck = _ckpt(tmp_path / "pytorch_lightning" / "last.ckpt")
    our_ck = _ckpt(tmp_path / "trainer" / "last.ckpt")
    assert {"current_model_state", "averaging_state"} <= set(pl_ck)
    assert set(our_ck) >= {"current_model_state", "averaging_state", "state_dict"}
    for key in ("state_dict", "current_model_state", "averaging_state"):
        assert_states_close(our_ck[key], pl_ck[key], key)
    cb_key = next(k for k in pl_ck["callbacks"] if "WeightAveraging" in k)
    assert our_ck["callbacks"][cb_key] == pl_ck["callbacks"][cb_key]


def test_ema_resume_restores_both_models_like_lightning(tmp_path):
    def run(name: str) -> Dict[str, Any]:
        L = _fw(name)
        d = tmp_path / name
        model = net_module_class(L)()
        first = _trainer(L, d, max_epochs=3, max_steps=6, enable_checkpointing=True, callbacks=[
            L.callbacks.EMAWeightAveraging(decay=0.7), L.callbacks.ModelCheckpoint(dirpath=str(d), save_last=True)])
        first.fit(model, make_loader(16, 4, seed=0))
        model2 = net_module_class(L)(seed=9)
        ema = L.callbacks.EMAWeightAveraging(decay=0.7)
        second = _trainer(L, d, max_epochs=3, enable_checkpointing=True, callbacks=[ema])
        second.fit(model2, make_loader(16, 4, seed=0), ckpt_path=str(d / "last.ckpt"))
        return {"state": _state(model2), "n": int(ema._average_model.n_averaged)}

    pl, ours = run("lightning"), run("trainer")
    assert 6 < pl["n"] <= 12  # averaged before the checkpoint and after the resume
    assert ours["n"] == pl["n"]
    assert_states_close(ours["state"], pl["state"], "resumed EMA weights")


def test_ema_update_reads_nothing_on_the_host(tmp_path, monkeypatch):
    """EMA's update is multi-tensor device work: it never asks a tensor for a Python value (AveragedModel asks
    ``n_averaged == 0`` on every step, a device sync on a GPU)."""
    L = _fw("trainer")
    ema = L.callbacks.EMAWeightAveraging(decay=0.9)
    trainer = _trainer(L, tmp_path, max_epochs=1, callbacks=[ema], limit_val_batches=0)
    model = net_module_class(L)()
    calls: List[str] = []
    real_update = type(ema)._update_average

    def watched(self, pl_module):
        orig_bool, orig_item = torch.Tensor.__bool__, torch.Tensor.item
        monkeypatch.setattr(torch.Tensor, "__bool__", lambda t: calls.append("bool") or orig_bool(t))
        monkeypatch.setattr(torch.Tensor, "item", lambda t: calls.append("item") or orig_item(t))
        try:
            real_update(self, pl_module)
        finally:
            monkeypatch.setattr(torch.Tensor, "__bool__", orig_bool)
            monkeypatch.setattr(torch.Tensor, "item", orig_item)

    monkeypatch.setattr(type(ema), "_update_average", watched)
    trainer.fit(model, make_loader(16, 4, seed=0))
    assert int(ema._average_model.n_averaged) == 4
    assert calls == []


# --------------------------------------------------------------------------------------------
# BaseFinetuning / BackboneFinetuning
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("filter_frozen", [True, False], ids=["optimizer_of_trainable", "optimizer_of_all"])
def test_backbone_finetuning_matches_lightning(tmp_path, filter_frozen):
    def callbacks(L):
        return [L.callbacks.BackboneFinetuning(unfreeze_backbone_at_epoch=1, lambda_func=lambda e: 1.5,
                                               backbone_initial_ratio_lr=0.1),
                L.callbacks.ModelCheckpoint(dirpath=str(tmp_path / L.__name__), save_last=True)]

    runs = _both(tmp_path, callbacks, module_kw=dict(batch_norm=True, filter_frozen=filter_frozen), max_epochs=3,
                 enable_checkpointing=True)
    pl, ours = runs["lightning"], runs["trainer"]
    assert_compiled(ours)
    if compiled_engine():  # the unfrozen backbone trains in the compiled step: it was set up again for it
        assert ours["report"].recompiles >= 1, str(ours["report"])
    assert len(pl["groups"]) == (2 if filter_frozen else 1)  # all-parameter optimizer: nothing to add (warning)
    assert_groups_equal(ours["groups"], pl["groups"])
    assert_states_close(ours["state"], pl["state"], "finetuned weights")
    pl_ck = _ckpt(tmp_path / "pytorch_lightning" / "last.ckpt")
    our_ck = _ckpt(tmp_path / "trainer" / "last.ckpt")
    assert our_ck["callbacks"]["BackboneFinetuning"] == pl_ck["callbacks"]["BackboneFinetuning"]
    assert [len(g["params"]) for g in our_ck["optimizer_states"][0]["param_groups"]] == [
        len(g["params"]) for g in pl_ck["optimizer_states"][0]["param_groups"]]


def test_backbone_finetuning_resume_rebuilds_the_param_groups(tmp_path):
    def run(name: str) -> Dict[str, Any]:
        L = _fw(name)
        d = tmp_path / name

        def cb():
            return L.callbacks.BackboneFinetuning(unfreeze_backbone_at_epoch=1, lambda_func=lambda e: 1.5)

        model = net_module_class(L, filter_frozen=True)()
        first = _trainer(L, d, max_epochs=4, max_steps=10, enable_checkpointing=True,
                         callbacks=[cb(), L.callbacks.ModelCheckpoint(dirpath=str(d), save_last=True)])
        first.fit(model, make_loader(16, 4, seed=0))
        model2 = net_module_class(L, filter_frozen=True)(seed=3)
        second = _trainer(L, d, max_epochs=4, enable_checkpointing=True, callbacks=[cb()])
        second.fit(model2, make_loader(16, 4, seed=0), ckpt_path=str(d / "last.ckpt"))
        groups = [(g["lr"], len(g["params"])) for g in second.optimizers[0].param_groups]
        return {"state": _state(model2), "groups": groups}

    pl, ours = run("lightning"), run("trainer")
    assert len(pl["groups"]) == 2
    assert_groups_equal(ours["groups"], pl["groups"])
    assert_states_close(ours["state"], pl["state"], "resumed finetuned weights")


def test_base_finetuning_custom_unfreeze_and_missing_backbone(tmp_path):
    def callbacks(L):
        class Unfreeze(L.callbacks.BaseFinetuning):
            def freeze_before_training(self, pl_module):
                self.freeze(pl_module.head)

            def finetune_function(self, pl_module, epoch, optimizer):
                if epoch == 1:
                    self.unfreeze_and_add_param_group(pl_module.head, optimizer, train_bn=False)

        return [Unfreeze()]

    runs = _both(tmp_path, callbacks, module_kw=dict(filter_frozen=True, optimizer="sgd"), max_epochs=2)
    pl, ours = runs["lightning"], runs["trainer"]
    assert_compiled(ours)
    assert pl["groups"][1] == {"lr": pytest.approx(0.005), "n": 2}  # lr / initial_denom_lr
    assert_groups_equal(ours["groups"], pl["groups"])
    assert_states_close(ours["state"], pl["state"], "weights")

    errors = {}
    for name in FRAMEWORKS:
        L = _fw(name)

        class Model(net_module_class(L)):
            def __init__(self):
                super().__init__()
                del self.backbone
                self.backbone = ()  # freezes nothing (an empty iterable), and is no nn.Module

        with pytest.raises(Exception) as err:
            _trainer(L, tmp_path, max_epochs=1, callbacks=[L.callbacks.BackboneFinetuning()]).fit(
                Model(), make_loader(8, 4))
        errors[name] = (type(err.value).__name__, str(err.value))
    assert errors["lightning"][0] == "MisconfigurationException"
    assert errors["trainer"] == errors["lightning"]


def test_finetuning_static_helpers_match_lightning():
    for name in FRAMEWORKS:
        L = _fw(name)
        bf = L.callbacks.BaseFinetuning
        seq = _seeded(0, lambda: nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2), nn.Sequential(nn.Linear(2, 1))))
        assert [type(m).__name__ for m in bf.flatten_modules(seq)] == ["Linear", "BatchNorm1d", "Linear"]
        bf.freeze(seq, train_bn=True)
        assert [p.requires_grad for p in seq.parameters()] == [False, False, True, True, False, False]
        assert len(list(bf.filter_params(seq, train_bn=False, requires_grad=False))) == 4
        bf.make_trainable(seq)
        assert all(p.requires_grad for p in seq.parameters())


# --------------------------------------------------------------------------------------------
# DeviceStatsMonitor
# --------------------------------------------------------------------------------------------

def _capture_logger(L: ModuleType) -> Any:
    class Capture(L.loggers.Logger):
        def __init__(self):
            super().__init__()
            self.records: List[tuple] = []

        @property
        def name(self):
            return "capture"

        @property
        def version(self):
            return 0

        def log_hyperparams(self, *args, **kwargs):
            pass

        def log_metrics(self, metrics, step=None):
            self.records.append((tuple(sorted(metrics)), step))

    return Capture()


def _fake_psutil() -> types.ModuleType:
    mod = types.ModuleType("psutil")
    mod.cpu_percent = lambda: 12.5
    mod.virtual_memory = lambda: types.SimpleNamespace(percent=40.0)
    mod.swap_memory = lambda: types.SimpleNamespace(percent=1.0)
    mod.__spec__ = types.SimpleNamespace(name="psutil")  # importlib.util.find_spec finds it in sys.modules
    return mod


@pytest.mark.parametrize("cpu_stats", [None, True, False])
def test_device_stats_monitor_logs_lightnings_keys_and_steps(tmp_path, monkeypatch, cpu_stats):
    monkeypatch.setitem(sys.modules, "psutil", _fake_psutil())
    import pytorch_lightning.accelerators.cpu as pl_cpu

    monkeypatch.setattr(pl_cpu, "_PSUTIL_AVAILABLE", True)
    import pytorch_lightning.callbacks.device_stats_monitor as pl_dsm

    monkeypatch.setattr(pl_dsm, "_PSUTIL_AVAILABLE", True)
    records = {}
    for name in FRAMEWORKS:
        L = _fw(name)
        logger = _capture_logger(L)
        trainer = _trainer(L, tmp_path / name, max_epochs=2, logger=logger, log_every_n_steps=2,
                           callbacks=[L.callbacks.DeviceStatsMonitor(cpu_stats=cpu_stats)])
        trainer.fit(net_module_class(L)(), make_loader(16, 4, seed=0), make_loader(8, 4, seed=1))
        trainer.validate(trainer.lightning_module, make_loader(8, 4, seed=2))
        records[name] = [r for r in logger.records if any(k.startswith("DeviceStatsMonitor") for k in r[0])]
    logged = any("DeviceStatsMonitor.on_train_batch_start/cpu_percent" in keys for keys, _ in records["lightning"])
    assert logged == (cpu_stats is not False)  # on the CPU, cpu_stats=False turns the CPU stats off
    assert records["trainer"] == records["lightning"]


def test_device_stats_monitor_errors_like_lightning(tmp_path, monkeypatch):
    errors = {}
    for name in FRAMEWORKS:
        L = _fw(name)
        with pytest.raises(Exception) as err:
            _trainer(L, tmp_path, max_epochs=1, callbacks=[L.callbacks.DeviceStatsMonitor()]).fit(
                net_module_class(L)(), make_loader(8, 4))
        errors[name] = (type(err.value).__name__, str(err.value))
    assert errors["lightning"] == ("MisconfigurationException",
                                   "Cannot use `DeviceStatsMonitor` callback with `Trainer(logger=False)`.")
    assert errors["trainer"] == errors["lightning"]

    # psutil is installed (deepspeed in the test extra depends on it): hide it from both frameworks' checks, ours
    # (importlib.util.find_spec) and Lightning's (a RequirementCache, which reads the installed distribution's version)
    import importlib.metadata

    import pytorch_lightning.callbacks.device_stats_monitor as pl_device_stats
    from lightning_utilities.core import imports as lu_imports

    def no_distribution(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setitem(sys.modules, "psutil", None)
    monkeypatch.setattr(lu_imports, "_version", no_distribution)
    monkeypatch.setattr(pl_device_stats, "_PSUTIL_AVAILABLE", lu_imports.RequirementCache("psutil"))
    errors = {}
    for name in FRAMEWORKS:
        L = _fw(name)
        with pytest.raises(Exception) as err:
            _trainer(L, tmp_path / name, max_epochs=1, logger=_capture_logger(L),
                     callbacks=[L.callbacks.DeviceStatsMonitor()]).fit(net_module_class(L)(), make_loader(8, 4))
        errors[name] = (type(err.value).__name__, str(err.value))
    assert errors["lightning"][0] == "ModuleNotFoundError" and "psutil" in errors["lightning"][1]
    assert errors["trainer"] == errors["lightning"]


# --------------------------------------------------------------------------------------------
# ModelPruning
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs", [
    dict(pruning_fn="l1_unstructured", amount=0.3),
    dict(pruning_fn="l1_unstructured", amount=0.25, use_lottery_ticket_hypothesis=False,
         make_pruning_permanent=False, parameter_names=["weight"]),
    dict(pruning_fn="ln_structured", amount=1, pruning_dim=0, pruning_norm=2, use_global_unstructured=False,
         use_lottery_ticket_hypothesis=lambda epoch: epoch == 0, parameter_names=["weight"]),
], ids=["global_l1_lottery", "not_permanent", "ln_structured_local"])
def test_model_pruning_matches_lightning(tmp_path, kwargs):
    def callbacks(L):
        return [L.callbacks.ModelPruning(**kwargs),
                L.callbacks.ModelCheckpoint(dirpath=str(tmp_path / L.__name__), save_last=True)]

    runs = _both(tmp_path, callbacks, module_kw=dict(optimizer="sgd"), max_epochs=2, enable_checkpointing=True)
    pl, ours = runs["lightning"], runs["trainer"]
    if compiled_engine():
        # one graph until the first pruning; then torch's pruning pre-hook assigns `<name> = <name>_orig * mask`
        # on the module at every forward, a side effect one graph cannot repeat: compiled regions from there
        # (dynamo replays the assignment at every step)
        report = ours["report"]
        assert report.graphs_built >= 1 and report.mode == "regions", str(report)
        assert "side effect" in report.fallback_reason, str(report)
    assert_states_close(ours["state"], pl["state"], "pruned weights")
    zeros = {k: int((v == 0).sum()) for k, v in pl["state"].items() if k.endswith("weight") or k.endswith("mask")}
    assert any(zeros.values())
    assert {k: int((v == 0).sum()) for k, v in ours["state"].items() if k in zeros} == zeros
    pl_ck = _ckpt(tmp_path / "pytorch_lightning" / "last.ckpt")
    our_ck = _ckpt(tmp_path / "trainer" / "last.ckpt")
    assert_states_close(our_ck["state_dict"], pl_ck["state_dict"], "checkpoint state_dict")


PRUNING_ERRORS = [
    dict(pruning_fn="l1_unstructured", parameter_names=["weight", "gamma"]),
    dict(pruning_fn="nope"),
    dict(pruning_fn="ln_structured", use_global_unstructured=False),
    dict(pruning_fn="ln_structured", pruning_dim=0, use_global_unstructured=False),
    dict(pruning_fn="random_structured", pruning_dim=0),
    dict(pruning_fn=torch_prune.L1Unstructured, use_global_unstructured=False),
    dict(pruning_fn=3),
    dict(pruning_fn="l1_unstructured", amount="half"),
    dict(pruning_fn="l1_unstructured", verbose=3),
]


@pytest.mark.parametrize("kwargs", PRUNING_ERRORS)
def test_model_pruning_constructor_errors_match_lightning(kwargs):
    seen = {}
    for name in FRAMEWORKS:
        with pytest.raises(Exception) as err:
            _fw(name).callbacks.ModelPruning(**kwargs)
        seen[name] = (type(err.value).__name__, str(err.value))
    assert seen["lightning"][0] == "MisconfigurationException"
    assert seen["trainer"] == seen["lightning"]


def test_model_pruning_bad_parameters_to_prune_match_lightning(tmp_path):
    seen = {}
    for name in FRAMEWORKS:
        L = _fw(name)
        model = net_module_class(L)()
        with pytest.raises(Exception) as err:
            L.callbacks.ModelPruning("l1_unstructured").sanitize_parameters_to_prune(
                model, [(nn.Linear(1, 1), "weight"), (model.head, "gamma")])
        seen[name] = (type(err.value).__name__, str(err.value))
    assert seen["lightning"][0] == "MisconfigurationException"
    assert seen["trainer"] == seen["lightning"]


# --------------------------------------------------------------------------------------------
# SpikeDetection
# --------------------------------------------------------------------------------------------

def _spiky_loader() -> torch.utils.data.DataLoader:
    x, y = torch.randn(24, 8, generator=torch.Generator().manual_seed(0)), torch.zeros(24, 2)
    y[16:20] = 500.0  # batch 4 (batch_size 4) spikes
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=4)


def test_spike_detection_stops_and_writes_the_batches_like_lightning(tmp_path):
    seen = {}
    for name in FRAMEWORKS:
        L = _fw(name)
        spike = L.callbacks.SpikeDetection(window=3, warmup=2)
        trainer = _trainer(L, tmp_path / name, max_epochs=1, callbacks=[spike])
        with pytest.raises(Exception) as err:
            trainer.fit(net_module_class(L, optimizer="sgd")(lr=0.01), _spiky_loader())
        with open(tmp_path / name / "skip_batches.json") as f:
            skipped = json.load(f)
        state = spike.state_dict()
        seen[name] = dict(error=(type(err.value).__name__, str(err.value)), skipped=skipped,
                          keys=sorted(state), last_val=state["last_val"], mean=state["mean"])
    pl, ours = seen["lightning"], seen["trainer"]
    assert pl["error"] == ("TrainingSpikeException", "Training spike detected in batch 4")
    assert pl["skipped"] == [3, 4]
    assert ours["error"] == pl["error"]
    assert ours["skipped"] == pl["skipped"]
    assert ours["keys"] == pl["keys"]
    assert ours["last_val"] == pytest.approx(pl["last_val"], rel=1e-5)
    for k in pl["mean"]:
        torch.testing.assert_close(ours["mean"][k], pl["mean"][k], **TOL)


def test_spike_detection_state_round_trips_and_bad_outputs(tmp_path):
    L = _fw("trainer")
    spike = L.callbacks.SpikeDetection(window=2, warmup=0, exclude_batches_path=str(tmp_path))
    trainer = _trainer(L, tmp_path, max_epochs=1, max_steps=3, callbacks=[spike])
    trainer.fit(net_module_class(L, optimizer="sgd")(lr=0.01), make_loader(16, 4))
    other = L.callbacks.SpikeDetection()
    other.load_state_dict(spike.state_dict())
    # torchmetrics' states are not persistent: "running" and "mean" are empty, in Lightning too
    assert other.state_dict() == spike.state_dict()
    assert spike.state_dict()["running"] == {} and spike.state_dict()["mean"] == {}
    assert other.exclude_batches_path == os.path.join(str(tmp_path), "skip_batches.json")
    with pytest.raises(TypeError, match="outputs have to be of type torch.Tensor or Mapping, got list"):
        other.on_train_batch_end(trainer, trainer.lightning_module, [1.0], None, 0)


def test_engine_under_test():
    """Which engine ran these parity tests (``TRAINER_COMPILE``): both are run by .ci/run."""
    L = _fw("trainer")
    assert L.Trainer(accelerator="cpu", logger=False)._compile_config.enabled == compiled_engine()


# --------------------------------------------------------------------------------------------
# WeightAveraging: accumulation, iterable data, configure_model, a crash and its resume
# --------------------------------------------------------------------------------------------

class _Stream(torch.utils.data.IterableDataset):
    """The same 24 (x, y) pairs as a stream (no length): the epoch ends when the data does."""

    def __iter__(self):
        g = torch.Generator().manual_seed(4)
        for _ in range(24):
            yield torch.randn(8, generator=g), torch.randn(2, generator=g)


def test_weight_averaging_with_accumulation_and_iterable_data_matches_lightning(tmp_path):
    """Updates follow optimizer steps (every 2nd batch), the stream's epoch end included."""
    seen = {}
    for name in FRAMEWORKS:
        L = _fw(name)
        ema = L.callbacks.EMAWeightAveraging(decay=0.8)
        model = net_module_class(L, batch_norm=True, optimizer="sgd")()
        trainer = _trainer(L, tmp_path / name, max_epochs=2, accumulate_grad_batches=2, callbacks=[ema])
        trainer.fit(model, torch.utils.data.DataLoader(_Stream(), batch_size=5))
        seen[name] = (_state(model), int(ema._average_model.n_averaged), trainer.global_step)
        if name == "trainer":
            assert_compiled({"report": getattr(trainer, "compile_report", None)})
    pl, ours = seen["lightning"], seen["trainer"]
    assert pl[1] == pl[2] == 6  # 5 batches an epoch: steps after batches 2, 4 and the last one
    assert ours[1:] == pl[1:]
    assert_states_close(ours[0], pl[0], "averaged weights")


def test_weight_averaging_builds_configure_model_layers_like_lightning(tmp_path, recwarn):
    seen = {}
    for name in FRAMEWORKS:
        L = _fw(name)

        class Lazy(net_module_class(L, optimizer="sgd")):
            def __init__(self):
                super().__init__()
                self.extra = None

            def configure_model(self):
                if self.extra is None:
                    self.extra = _seeded(7, lambda: nn.Linear(2, 2))

            def forward(self, x):
                return self.extra(super().forward(x))

        recwarn.clear()
        ema = L.callbacks.EMAWeightAveraging(decay=0.5)
        model = Lazy()
        _trainer(L, tmp_path / name, max_epochs=1, callbacks=[ema]).fit(model, make_loader(16, 4))
        warned = sorted({str(w.message) for w in recwarn if "configure_model" in str(w.message)})
        seen[name] = (_state(model), warned, isinstance(ema._average_model.module.extra, nn.Linear))
    pl, ours = seen["lightning"], seen["trainer"]
    assert pl[1] and pl[2]
    assert ours[1:] == pl[1:]
    assert_states_close(ours[0], pl[0], "weights")


def test_weight_averaging_resumes_after_a_crash_like_an_uninterrupted_fit(tmp_path):
    """A fit that crashes in epoch 2 resumes from its epoch-1 checkpoint to the uninterrupted fit's weights."""
    def fit(name: str, root, crash_at: Optional[int], ckpt_path: Optional[str] = None) -> Dict[str, torch.Tensor]:
        L = _fw(name)

        class Crashing(net_module_class(L, batch_norm=True, optimizer="sgd")):
            def training_step(self, batch, batch_idx):
                if crash_at is not None and self.trainer.current_epoch >= crash_at:
                    raise RuntimeError("CRASH")
                return super().training_step(batch, batch_idx)

        model = Crashing()
        trainer = _trainer(L, root, max_epochs=4, enable_checkpointing=True,
                           callbacks=[L.callbacks.EMAWeightAveraging(decay=0.7),
                                      L.callbacks.ModelCheckpoint(dirpath=str(root / "ckpt"))])
        if crash_at is not None:
            with pytest.raises(RuntimeError, match="CRASH"):
                trainer.fit(model, make_loader(16, 4))
        else:
            trainer.fit(model, make_loader(16, 4), ckpt_path=ckpt_path)
        return _state(model)

    results = {}
    for name in FRAMEWORKS:
        whole = fit(name, tmp_path / name / "whole", None)
        fit(name, tmp_path / name / "resumed", 2)
        ckpts = os.listdir(tmp_path / name / "resumed" / "ckpt")
        assert len(ckpts) == 1, ckpts
        resumed = fit(name, tmp_path / name / "resumed", None, str(tmp_path / name / "resumed" / "ckpt" / ckpts[0]))
        results[name] = (whole, resumed)
    assert_states_close(results["lightning"][1], results["lightning"][0], "Lightning: resumed vs whole")
    assert_states_close(results["trainer"][1], results["trainer"][0], "resumed vs whole")
    assert_states_close(results["trainer"][0], results["lightning"][0], "whole fit vs Lightning")


# --------------------------------------------------------------------------------------------
# StochasticWeightAveraging: Lightning's own scenario (BatchNorm, accumulation, a step scheduler, a crash)
# --------------------------------------------------------------------------------------------

def swa_module_class(L: ModuleType, interval: str = "epoch", crash_on_epoch: Optional[int] = None,
                     scheduler: str = "step_lr") -> type:
    class SwaNet(net_module_class(L, batch_norm=True, optimizer="sgd")):
        def __init__(self):
            super().__init__(lr=0.1)
            self.backward_calls = 0

        def training_step(self, batch, batch_idx):
            if crash_on_epoch is not None and self.trainer.current_epoch >= crash_on_epoch:
                raise RuntimeError("SWA crash test")
            return super().training_step(batch, batch_idx)

        def on_after_backward(self):
            self.backward_calls += 1

        def configure_optimizers(self):
            opt = torch.optim.SGD(self.parameters(), lr=0.1)
            if scheduler == "lambda":
                sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.1)
            else:
                sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": interval}}

    return SwaNet


_SWA_TRAINER = dict(max_epochs=5, limit_train_batches=5, limit_val_batches=0, accumulate_grad_batches=2)


@pytest.mark.parametrize("interval", ["epoch", "step"])
def test_swa_batchnorm_epoch_with_accumulation_matches_lightning(tmp_path, interval, recwarn):
    seen = {}
    for name in FRAMEWORKS:
        L = _fw(name)
        model = swa_module_class(L, interval=interval)()
        swa = L.callbacks.StochasticWeightAveraging(swa_epoch_start=2, swa_lrs=0.1)
        recwarn.clear()
        trainer = _trainer(L, tmp_path / name, callbacks=[swa], **_SWA_TRAINER)
        trainer.fit(model, make_loader(64, 2, seed=3))
        warned = sorted({str(w.message) for w in recwarn if "SWA is currently only supported" in str(w.message)})
        seen[name] = dict(state=_state(model), backward=model.backward_calls, n=int(swa.n_averaged),
                          after=(trainer.fit_loop._skip_backward, trainer.accumulate_grad_batches,
                                 trainer.num_training_batches, trainer.max_epochs, trainer.current_epoch),
                          warned=len(warned), lr=trainer.optimizers[0].param_groups[0]["lr"])
        if name == "trainer":
            assert_compiled({"report": getattr(trainer, "compile_report", None)})
    pl, ours = seen["lightning"], seen["trainer"]
    # the oracle: 5 epochs of 5 batches backward, the BatchNorm epoch none; 4 epochs averaged; limits given back
    assert pl["backward"] == 25 and pl["n"] == 4
    assert pl["after"] == (False, 2, 5, 5, 6)
    assert pl["warned"] == (1 if interval == "step" else 0)
    for key in ("backward", "n", "after", "warned"):
        assert ours[key] == pl[key], key
    assert ours["lr"] == pytest.approx(pl["lr"], rel=1e-12)
    assert_states_close(ours["state"], pl["state"], "SWA weights and BatchNorm statistics")


@pytest.mark.parametrize("crash_on_epoch", [1, 3])
@pytest.mark.parametrize("scheduler", ["step_lr", "lambda"])
def test_swa_resumes_after_a_crash_like_lightning(tmp_path, crash_on_epoch, scheduler):
    """Lightning's #11665: the resumed fit must not load SWALR's state into the configured scheduler."""
    seen = {}
    for name in FRAMEWORKS:
        L = _fw(name)
        root = tmp_path / name
        crashing = swa_module_class(L, crash_on_epoch=crash_on_epoch, scheduler=scheduler)()
        trainer = _trainer(L, root, enable_checkpointing=True, callbacks=[
            L.callbacks.StochasticWeightAveraging(swa_epoch_start=3, swa_lrs=0.1)], **_SWA_TRAINER)
        with pytest.raises(RuntimeError, match="SWA crash test"):
            trainer.fit(crashing, make_loader(64, 2, seed=3))
        ckpt_dir = root / "checkpoints"
        ckpts = os.listdir(ckpt_dir)
        assert len(ckpts) == 1, ckpts
        model = swa_module_class(L, scheduler=scheduler)()
        swa = L.callbacks.StochasticWeightAveraging(swa_epoch_start=3, swa_lrs=0.1)
        trainer = _trainer(L, root, enable_checkpointing=True, callbacks=[swa], **_SWA_TRAINER)
        trainer.fit(model, make_loader(64, 2, seed=3), ckpt_path=str(ckpt_dir / ckpts[0]))
        seen[name] = dict(state=_state(model), n=int(swa.n_averaged), backward=model.backward_calls,
                          lr=trainer.optimizers[0].param_groups[0]["lr"], ckpt=ckpts[0])
    pl, ours = seen["lightning"], seen["trainer"]
    assert pl["n"] == 3 and pl["backward"] == (5 - crash_on_epoch) * 5
    for key in ("n", "backward", "ckpt"):
        assert ours[key] == pl[key], key
    assert ours["lr"] == pytest.approx(pl["lr"], rel=1e-12)
    assert_states_close(ours["state"], pl["state"], "resumed SWA weights")


def _identity_module_class(L: ModuleType) -> type:
    """The loss is the batch's value itself (weights 1, inputs (v, 0), lr 0): batch 4 carries the spike. Not a 1x1
    Linear: the compiled engine returns such a step's loss computed from the updated weight (reported)."""

    class Identity(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = nn.Linear(2, 1, bias=False)
            with torch.no_grad():
                self.layer.weight.fill_(1.0)

        def training_step(self, batch, batch_idx):
            return self.layer(batch).sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.0)

    return Identity


@pytest.mark.parametrize("spike_value", [None, float("inf"), float("-inf"), float("nan")],
                         ids=["large", "inf", "-inf", "nan"])
@pytest.mark.parametrize("finite_only", [True, False])
@pytest.mark.parametrize("mode", ["min", "max"])
def test_spike_detection_cases_match_lightning(tmp_path, spike_value, finite_only, mode):
    values = [1 / (i + 1) for i in range(10)]
    values[4] = 4.0 if spike_value is None else spike_value
    if mode == "max":
        values = [-v if v is not None else v for v in values]
    data = [torch.tensor([v, 0.0]) for v in values]
    seen = {}
    for name in FRAMEWORKS:
        L = _fw(name)
        spike = L.callbacks.SpikeDetection(mode=mode, exclude_batches_path=str(tmp_path / name),
                                           finite_only=finite_only)
        trainer = _trainer(L, tmp_path / name, max_epochs=1, callbacks=[spike])
        try:
            trainer.fit(_identity_module_class(L)(), torch.utils.data.DataLoader(data))
            error = None
        except Exception as exc:  # noqa: BLE001 - compared below
            error = (type(exc).__name__, str(exc))
        state = spike.state_dict()
        last = state["last_val"]
        seen[name] = dict(error=error, bad=state["bad_batches"], last=None if last != last else last,
                          path=os.path.relpath(str(state["bad_batches_path"]), str(tmp_path / name)))
    pl, ours = seen["lightning"], seen["trainer"]
    # the oracle: a large value is a spike; a non-finite one with finite_only; an infinite one in the bad direction
    expect_spike = spike_value is None or finite_only or spike_value == float("inf")
    assert pl["error"] == (("TrainingSpikeException", "Training spike detected in batch 4") if expect_spike else None)
    assert ours["error"] == pl["error"]
    assert ours["bad"] == pl["bad"] and ours["path"] == pl["path"]
    assert ours["last"] == pytest.approx(pl["last"])


def test_model_pruning_verbose_logs_match_lightning(tmp_path, monkeypatch):
    """The sparsity messages, read by a handler on each pruning logger itself: what other tests (mlflow's
    dictConfig, caplog levels, Lightning's propagate=False) did to the logging tree cannot hide them."""
    import logging

    from lightning_fabric.utilities.rank_zero import rank_zero_only as fabric_rank_zero_only

    monkeypatch.setattr(fabric_rank_zero_only, "rank", 0, raising=False)
    monkeypatch.setattr(logging.root.manager, "disable", logging.NOTSET)  # a logging.disable(...) elsewhere

    class Keep(logging.Handler):
        def __init__(self):
            super().__init__(logging.INFO)
            self.messages = []

        def emit(self, record):
            self.messages.append(record.getMessage())

    seen = {}
    for name, logger_name in (("lightning", "pytorch_lightning.callbacks.pruning"),
                              ("trainer", "trainer.callbacks.pruning")):
        logger = logging.getLogger(logger_name)
        keep = Keep()
        monkeypatch.setattr(logger, "disabled", False)
        monkeypatch.setattr(logger, "level", logging.INFO)
        logger.addHandler(keep)
        try:
            _fit(name, tmp_path, lambda L: [L.callbacks.ModelPruning("l1_unstructured", amount=0.2, verbose=2,
                                                                     use_lottery_ticket_hypothesis=False)],
                 module_kw=dict(optimizer="sgd"), max_epochs=2)
        finally:
            logger.removeHandler(keep)
        seen[name] = [m for m in keep.messages if m.startswith("Applied `")]
    assert len(seen["lightning"]) == 2 * (1 + 4)  # per epoch: the total, then each of the 4 pruned tensors
    assert seen["trainer"] == seen["lightning"]


def test_model_pruning_checkpoints_stay_permanent_when_saved_twice(tmp_path):
    """Every save folds the masks into a copy; the training model keeps its reparametrisation until the end."""
    seen = {}
    for name in FRAMEWORKS:
        L = _fw(name)
        model = net_module_class(L, optimizer="sgd")()
        trainer = _trainer(L, tmp_path / name, max_epochs=2, callbacks=[
            L.callbacks.ModelPruning("random_unstructured", amount=0.5, use_lottery_ticket_hypothesis=False)])
        torch.manual_seed(0)
        trainer.fit(model, make_loader(16, 4))
        trainer.save_checkpoint(str(tmp_path / name / "a.ckpt"))
        trainer.save_checkpoint(str(tmp_path / name / "b.ckpt"))
        a, b = _ckpt(tmp_path / name / "a.ckpt"), _ckpt(tmp_path / name / "b.ckpt")
        seen[name] = (sorted(a["state_dict"]), sorted(b["state_dict"]), sorted(model.state_dict()))
    assert not any(k.endswith(("_orig", "_mask")) for k in seen["lightning"][0] + seen["lightning"][2])
    assert seen["trainer"] == seen["lightning"]


# --------------------------------------------------------------------------------------------
# Checkpoints move both ways: a fit resumed from the other framework's checkpoint
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("writer", FRAMEWORKS)
def test_callback_state_resumes_across_frameworks(tmp_path, writer):
    """EMA's averaged model and BackboneFinetuning's param groups, written by one framework, resumed by both."""
    def callbacks(L: ModuleType) -> List[Any]:
        return [L.callbacks.EMAWeightAveraging(decay=0.8),
                L.callbacks.BackboneFinetuning(unfreeze_backbone_at_epoch=1, lambda_func=lambda e: 1.5)]

    W = _fw(writer)
    first = _trainer(W, tmp_path / "w", max_epochs=3, max_steps=8, enable_checkpointing=True,
                     callbacks=callbacks(W) + [W.callbacks.ModelCheckpoint(dirpath=str(tmp_path / "w"),
                                                                           save_last=True)])
    first.fit(net_module_class(W, filter_frozen=True)(), make_loader(16, 4))
    seen = {}
    for name in FRAMEWORKS:
        L = _fw(name)
        model = net_module_class(L, filter_frozen=True)(seed=4)
        cbs = callbacks(L)
        trainer = _trainer(L, tmp_path / name, max_epochs=3, callbacks=cbs)
        trainer.fit(model, make_loader(16, 4), ckpt_path=str(tmp_path / "w" / "last.ckpt"))
        seen[name] = dict(state=_state(model), n=int(cbs[0]._average_model.n_averaged),
                          groups=[(g["lr"], len(g["params"])) for g in trainer.optimizers[0].param_groups])
    pl, ours = seen["lightning"], seen["trainer"]
    assert pl["n"] == 12 and len(pl["groups"]) == 2
    assert ours["n"] == pl["n"]
    assert_groups_equal(ours["groups"], pl["groups"])
    assert_states_close(ours["state"], pl["state"], f"resumed from {writer}'s checkpoint")
