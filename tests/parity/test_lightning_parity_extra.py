"""More behaviours a Lightning script relies on, each compared between pytorch-lightning 2.6.6 and
`trainer`: resuming (incl. from a checkpoint Lightning wrote), callbacks in a real fit, scheduler
configuration variants, errors raised at fit, trainer attributes after fit.

Same machinery as test_lightning_parity.py: a scenario ``(L, root, **kw) -> observations`` runs
under Lightning first (literal expectations are asserted on its result), then under `trainer`.
"""
from __future__ import annotations

import glob
import os
from typing import Any, Dict

import pytest
import torch
from helpers import compiled_engine, import_framework, make_loader, mlp_module_class, quiet_trainer_kwargs, state
from test_lightning_parity import Runner, assert_same, lrs, metrics_as_floats

pytestmark = [pytest.mark.parity, pytest.mark.filterwarnings("ignore::UserWarning")]


@pytest.fixture
def run(tmp_path):
    return Runner(tmp_path)


def error_kind(exc: BaseException) -> Dict[str, Any]:
    """What a user's ``except`` clauses see: whether it is a MisconfigurationException (each
    framework has its own class, matched by name) and which builtin exception classes catch it."""
    mro = type(exc).__mro__
    return {
        "misconfiguration": any(c.__name__ == "MisconfigurationException" for c in mro),
        "builtin_bases": sorted(
            c.__name__ for c in mro if c.__module__ == "builtins" and c not in (Exception, BaseException, object)
        ),
    }


def assert_caught_alike(got: Dict[str, Any], expected: Dict[str, Any], case: str) -> None:
    """`trainer` may add builtin bases (its MisconfigurationException is also a ValueError), but every
    ``except`` clause that catches Lightning's exception must catch ours."""
    assert got["misconfiguration"] == expected["misconfiguration"], f"{case}: got {got}, Lightning {expected}"
    missing = set(expected["builtin_bases"]) - set(got["builtin_bases"])
    assert not missing, f"{case}: `except {sorted(missing)}` catches Lightning's error but not ours (got {got})"


# --------------------------------------------------------------------------------------------
# Resume from a checkpoint
# --------------------------------------------------------------------------------------------


def _resumable_module(L):
    Base = mlp_module_class(L)

    class M(Base):
        def configure_optimizers(self):
            opt = torch.optim.AdamW(self.parameters(), lr=0.01)
            sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
            return [opt], [{"scheduler": sched, "interval": "epoch"}]

    return M()


def _adam_state(trainer) -> Dict[str, Any]:
    opt = trainer.optimizers[0]
    return {f"{i}.{k}": v for i, p in enumerate(opt.param_groups[0]["params"]) for k, v in opt.state[p].items()}


def _fit_resumable(L, root, max_epochs, ckpt_path=None, checkpoint=True):
    model = _resumable_module(L)
    kw = quiet_trainer_kwargs(root)
    kw["enable_checkpointing"] = checkpoint
    trainer = L.Trainer(max_epochs=max_epochs, **kw)
    trainer.fit(model, make_loader(16, 4), ckpt_path=ckpt_path)
    return trainer, model


def scenario_resume(L, root, from_lightning_checkpoint=False):
    if from_lightning_checkpoint:
        # A checkpoint written by pytorch-lightning (a user switching frameworks mid-run).
        _fit_resumable(import_framework("lightning"), root / "written_by_lightning", 1)
        ckpt_dir = root / "written_by_lightning"
    else:
        _fit_resumable(L, root / "first", 1)
        ckpt_dir = root / "first"
    ckpts = sorted(glob.glob(str(ckpt_dir / "**" / "*.ckpt"), recursive=True))
    assert len(ckpts) == 1, ckpts
    trainer, model = _fit_resumable(L, root / "resumed", 3, ckpt_path=ckpts[0], checkpoint=False)
    return {
        "checkpoint_name": os.path.relpath(ckpts[0], ckpt_dir),
        "weights": state(model),
        "global_step": trainer.global_step,
        "current_epoch": trainer.current_epoch,
        "lr": lrs(trainer),
        "adam_state": _adam_state(trainer),
    }


def scenario_uninterrupted(L, root):
    trainer, model = _fit_resumable(L, root, 3, checkpoint=False)
    return {"weights": state(model), "global_step": trainer.global_step, "lr": lrs(trainer), "adam_state": _adam_state(trainer)}


def test_resume_equals_uninterrupted_in_lightning(tmp_path):
    """Guards the resume scenario: in Lightning, 1 epoch + resume to 3 == 3 epochs straight."""
    PL = import_framework("lightning")
    resumed = scenario_resume(PL, tmp_path / "a")
    straight = scenario_uninterrupted(PL, tmp_path / "b")
    assert resumed["checkpoint_name"] == os.path.join("checkpoints", "epoch=0-step=4.ckpt")
    assert_same({k: resumed[k] for k in straight}, straight)


@pytest.mark.parametrize("source", ["own_checkpoint", "lightning_checkpoint"])
def test_resume(run, source):
    kw = dict(from_lightning_checkpoint=source == "lightning_checkpoint")
    expected = run.lightning(scenario_resume, **kw)
    assert expected["global_step"] == 12 and expected["current_epoch"] == 3
    got = run.trainer(scenario_resume, **kw)
    assert_same(got, expected)


def scenario_checkpoint_contents(L, root):
    _fit_resumable(L, root, 1)
    (ckpt,) = glob.glob(str(root / "**" / "*.ckpt"), recursive=True)
    data = torch.load(ckpt, map_location="cpu", weights_only=False)
    return {
        # "trainer_resume" is this Trainer's documented addition (exact-resume RNG/data position)
        "keys": sorted(k for k in data if "version" not in k and k != "trainer_resume"),
        "epoch": data["epoch"],
        "global_step": data["global_step"],
        "state_dict_keys": sorted(data["state_dict"]),
        "n_optimizer_states": len(data["optimizer_states"]),
        "n_lr_schedulers": len(data["lr_schedulers"]),
        "callback_keys": sorted(data.get("callbacks", {})),
    }


def test_checkpoint_contents(run):
    expected = run.lightning(scenario_checkpoint_contents)
    assert expected["epoch"] == 0 and expected["global_step"] == 4
    got = run.trainer(scenario_checkpoint_contents)
    assert_same(got, expected)


# --------------------------------------------------------------------------------------------
# EarlyStopping / ModelCheckpoint inside a real fit
# --------------------------------------------------------------------------------------------


def _metric_module(L):
    Base = mlp_module_class(L)

    class M(Base):
        # A validation metric with a known trajectory: best at epoch 1, then worse.
        TRAJECTORY = [3.0, 1.0, 2.0, 2.5, 4.0, 5.0]

        def validation_step(self, batch, batch_idx):
            loss = self.loss(batch)
            self.log("val_loss", loss)
            self.log("val_metric", self.TRAJECTORY[self.current_epoch])
            return loss

    return M()


def scenario_callbacks_in_fit(L, root):
    es = L.callbacks.EarlyStopping(monitor="val_metric", patience=2, mode="min")
    mc = L.callbacks.ModelCheckpoint(
        dirpath=str(root / "ckpts"), monitor="val_metric", save_top_k=2, save_last=True, filename="{epoch}-{val_metric:.1f}"
    )
    kw = quiet_trainer_kwargs(root)
    kw["enable_checkpointing"] = True
    trainer = L.Trainer(max_epochs=6, callbacks=[es, mc], **kw)
    model = _metric_module(L)
    trainer.fit(model, make_loader(8, 4), make_loader(4, 4, seed=1))
    return {
        "files": sorted(os.listdir(root / "ckpts")),
        "best_model_path": os.path.basename(mc.best_model_path),
        "best_model_score": float(mc.best_model_score),
        "best_k_models": sorted((os.path.basename(k), float(v)) for k, v in mc.best_k_models.items()),
        "stopped_epoch": es.stopped_epoch,
        "wait_count": es.wait_count,
        "current_epoch": trainer.current_epoch,
        "global_step": trainer.global_step,
        "should_stop": bool(trainer.should_stop),
        "weights": state(model),
    }


def test_early_stopping_and_checkpoint_in_fit(run):
    expected = run.lightning(scenario_callbacks_in_fit)
    assert expected["stopped_epoch"] == 3  # best at epoch 1, no improvement at 2 and 3 (patience 2)
    assert expected["best_model_path"] == "epoch=1-val_metric=1.0.ckpt"
    assert "last.ckpt" in expected["files"]
    got = run.trainer(scenario_callbacks_in_fit)
    assert_same(got, expected)


# --------------------------------------------------------------------------------------------
# Scheduler configuration variants
# --------------------------------------------------------------------------------------------


def scenario_scheduler_config(L, root, variant):
    Base = mlp_module_class(L)

    class M(Base):
        def training_step(self, batch, batch_idx):
            loss = self.loss(batch)
            self.log("train_loss", loss)
            return loss

        def configure_optimizers(self):
            opt = torch.optim.SGD(self.parameters(), lr=0.1)
            if variant == "tuple_of_lists":
                return [opt], [torch.optim.lr_scheduler.StepLR(opt, 1, 0.5)]  # default interval=epoch
            if variant == "dict_bare_scheduler":
                return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.StepLR(opt, 1, 0.5)}
            if variant == "step_frequency_3":
                sched = torch.optim.lr_scheduler.StepLR(opt, 1, 0.5)
                return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step", "frequency": 3}}
            if variant == "plateau_on_train_loss_per_step":
                sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=0, threshold=10.0)
                return {
                    "optimizer": opt,
                    "lr_scheduler": {"scheduler": sched, "interval": "step", "monitor": "train_loss"},
                }
            if variant == "optimizer_only_tuple":
                return (opt,)
            raise AssertionError(variant)

    model = M()
    trainer = L.Trainer(max_epochs=2, **quiet_trainer_kwargs(root))
    trainer.fit(model, make_loader(16, 4))
    return {"lr": lrs(trainer), "weights": state(model), "global_step": trainer.global_step}


SCHEDULER_LRS = {
    "tuple_of_lists": 0.1 * 0.5**2,
    "dict_bare_scheduler": 0.1 * 0.5**2,
    "step_frequency_3": 0.1 * 0.5**2,  # 8 steps, every 3rd: after steps 3 and 6
    "plateau_on_train_loss_per_step": 0.1 * 0.5**8,
    "optimizer_only_tuple": 0.1,
}


@pytest.mark.parametrize("variant", list(SCHEDULER_LRS))
def test_scheduler_config_variants(run, variant):
    expected = run.lightning(scenario_scheduler_config, variant=variant)
    assert expected["lr"] == [[pytest.approx(SCHEDULER_LRS[variant])]]
    got = run.trainer(scenario_scheduler_config, variant=variant)
    assert_same(got, expected)


# --------------------------------------------------------------------------------------------
# Errors raised at fit: the same exception family (what a user's `except` clause catches)
# --------------------------------------------------------------------------------------------


def scenario_fit_error(L, root, case):
    Base = mlp_module_class(L)

    class Manual(Base):
        def __init__(self):
            super().__init__()
            self.automatic_optimization = False

        def training_step(self, batch, batch_idx):
            opt = self.optimizers()
            loss = self.loss(batch)
            opt.zero_grad()
            self.manual_backward(loss)
            opt.step()

    class DictWithoutLoss(Base):
        def training_step(self, batch, batch_idx):
            return {"not_loss": self.loss(batch)}

    class TwoOptimizersAutomatic(Base):
        def configure_optimizers(self):
            return [torch.optim.SGD(self.parameters(), 0.1), torch.optim.SGD(self.parameters(), 0.1)]

    class LogsVector(Base):
        def training_step(self, batch, batch_idx):
            self.log("vector", torch.ones(3))
            return self.loss(batch)

    class PlateauWithoutMonitor(Base):
        def configure_optimizers(self):
            opt = torch.optim.SGD(self.parameters(), 0.1)
            return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.ReduceLROnPlateau(opt)}

    class PlateauMonitorsUnknownKey(Base):
        def configure_optimizers(self):
            opt = torch.optim.SGD(self.parameters(), 0.1)
            sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "monitor": "nope"}}

    class BadInterval(Base):
        def configure_optimizers(self):
            opt = torch.optim.SGD(self.parameters(), 0.1)
            sched = torch.optim.lr_scheduler.StepLR(opt, 1)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "batch"}}

    cases = {
        "manual_with_gradient_clip_val": (Manual, dict(gradient_clip_val=1.0)),
        "manual_with_accumulate": (Manual, dict(accumulate_grad_batches=2)),
        "dict_without_loss": (DictWithoutLoss, {}),
        "two_optimizers_automatic": (TwoOptimizersAutomatic, {}),
        "log_non_scalar": (LogsVector, {}),
        "plateau_without_monitor": (PlateauWithoutMonitor, {}),
        "plateau_monitor_missing_key": (PlateauMonitorsUnknownKey, {}),
        "bad_scheduler_interval": (BadInterval, {}),
    }
    cls, kw = cases[case]
    trainer = L.Trainer(max_epochs=1, **quiet_trainer_kwargs(root), **kw)
    try:
        trainer.fit(cls(), make_loader(8, 4))
    except Exception as exc:  # noqa: BLE001 - the kind is the observation
        return error_kind(exc)
    return None


_MISCONF = {"misconfiguration": True, "builtin_bases": []}  # Lightning's: a plain Exception subclass
FIT_ERRORS = {
    "manual_with_gradient_clip_val": _MISCONF,
    "manual_with_accumulate": _MISCONF,
    "dict_without_loss": _MISCONF,
    "two_optimizers_automatic": {"misconfiguration": False, "builtin_bases": ["RuntimeError"]},
    "log_non_scalar": {"misconfiguration": False, "builtin_bases": ["ValueError"]},
    "plateau_without_monitor": _MISCONF,
    "plateau_monitor_missing_key": _MISCONF,
    "bad_scheduler_interval": _MISCONF,
}


@pytest.mark.parametrize("case", list(FIT_ERRORS))
def test_fit_errors(run, case):
    expected = run.lightning(scenario_fit_error, case=case)
    assert expected == FIT_ERRORS[case]
    got = run.trainer(scenario_fit_error, case=case)
    assert got is not None, f"{case}: trainer did not raise; Lightning raises {expected}"
    assert_caught_alike(got, expected, case)


# --------------------------------------------------------------------------------------------
# Other loop behaviours
# --------------------------------------------------------------------------------------------


def scenario_misc(L, root, case):
    Base = mlp_module_class(L)
    seen = {"train": 0, "sanity": 0, "val": 0}

    class M(Base):
        def on_train_batch_start(self, batch, batch_idx):
            seen["train"] += 1
            if case == "skip_rest_of_epoch" and batch_idx == 2:
                return -1

        def validation_step(self, batch, batch_idx, dataloader_idx=0):
            seen["sanity" if self.trainer.sanity_checking else "val"] += 1
            loss = self.loss(batch)
            self.log("val_loss", loss)
            return loss

    kw = quiet_trainer_kwargs(root)
    loaders = dict(train_dataloaders=make_loader(16, 4), val_dataloaders=make_loader(12, 4, seed=1))
    if case == "skip_rest_of_epoch":
        kw.update(max_epochs=2, limit_val_batches=0)
    elif case == "sanity_all_batches":
        kw.update(max_epochs=1, num_sanity_val_steps=-1)
    elif case == "two_val_loaders":
        kw.update(max_epochs=1)
        loaders["val_dataloaders"] = [make_loader(8, 4, seed=1), make_loader(6, 3, seed=2)]
    elif case == "accumulate_with_val_check_interval":
        kw.update(max_epochs=1, accumulate_grad_batches=2, val_check_interval=0.5, num_sanity_val_steps=0)
    elif case == "bf16_true":
        kw.update(max_epochs=1, precision="bf16-true", limit_val_batches=0)
    model = M()
    trainer = L.Trainer(**kw)
    trainer.fit(model, **loaders)
    return {
        "seen": dict(seen),
        "global_step": trainer.global_step,
        "callback_metrics": metrics_as_floats(trainer.callback_metrics),
        "weights": state(model),
    }


MISC = {
    "skip_rest_of_epoch": dict(seen={"train": 6, "sanity": 0, "val": 0}, global_step=4),
    "sanity_all_batches": dict(seen={"train": 4, "sanity": 3, "val": 3}),
    "two_val_loaders": dict(seen={"train": 4, "sanity": 4, "val": 4}),
    "accumulate_with_val_check_interval": dict(seen={"train": 4, "sanity": 0, "val": 6}, global_step=2),
    "bf16_true": dict(global_step=4),
}


@pytest.mark.parametrize("case", list(MISC))
def test_misc_loop_behaviour(run, case):
    expected = run.lightning(scenario_misc, case=case)
    for key, value in MISC[case].items():
        assert expected[key] == value, f"{case}: Lightning gives {key}={expected[key]!r}, table says {value!r}"
    if case == "two_val_loaders":
        assert set(expected["callback_metrics"]) == {"val_loss/dataloader_idx_0", "val_loss/dataloader_idx_1"}
    got = run.trainer(scenario_misc, case=case)
    if case == "bf16_true":
        assert_same(got, expected, rtol=1e-2, atol=1e-3)  # bf16 weights: ~3 significant digits
    else:
        assert_same(got, expected)


# --------------------------------------------------------------------------------------------
# Trainer attributes a script reads after fit
# --------------------------------------------------------------------------------------------


def scenario_attributes(L, root):
    model = mlp_module_class(L)()
    kw = quiet_trainer_kwargs(root)
    trainer = L.Trainer(max_epochs=2, accumulate_grad_batches=2, gradient_clip_val=0.5, limit_val_batches=2, **kw)
    before = {
        "max_epochs": trainer.max_epochs,
        "max_steps": trainer.max_steps,
        "min_epochs": trainer.min_epochs,
        "precision": str(trainer.precision),
        "accumulate_grad_batches": trainer.accumulate_grad_batches,
        "gradient_clip_val": trainer.gradient_clip_val,
        "gradient_clip_algorithm": str(getattr(trainer.gradient_clip_algorithm, "value", trainer.gradient_clip_algorithm)),
        "val_check_interval": trainer.val_check_interval,
        "check_val_every_n_epoch": trainer.check_val_every_n_epoch,
        "log_every_n_steps": trainer.log_every_n_steps,
        "num_sanity_val_steps": trainer.num_sanity_val_steps,
        "global_rank": trainer.global_rank,
        "world_size": trainer.world_size,
        "num_devices": trainer.num_devices,
        "is_global_zero": trainer.is_global_zero,
        "default_root_dir": os.path.relpath(trainer.default_root_dir, root),
        "fast_dev_run": trainer.fast_dev_run,
        "checkpoint_callback": trainer.checkpoint_callback,
        "logger": trainer.logger,
        "loggers": list(trainer.loggers),
    }
    trainer.fit(model, make_loader(20, 4), make_loader(12, 4, seed=1))
    after = {
        "global_step": trainer.global_step,
        "current_epoch": trainer.current_epoch,
        "num_training_batches": trainer.num_training_batches,
        "num_val_batches": list(trainer.num_val_batches),
        "num_sanity_val_batches": list(trainer.num_sanity_val_batches),
        "estimated_stepping_batches": trainer.estimated_stepping_batches,
        "state_fn": str(getattr(trainer.state.fn, "value", trainer.state.fn)),
        "state_status": str(getattr(trainer.state.status, "value", trainer.state.status)),
        "state_stage": trainer.state.stage,
        "training": trainer.training,
        "sanity_checking": trainer.sanity_checking,
        "interrupted": trainer.interrupted,
        "should_stop": trainer.should_stop,
        "lightning_module_is_model": trainer.lightning_module is model,
        "model_trainer_is_trainer": model.trainer is trainer,
        "model_training_mode": model.training,
        "is_last_batch": trainer.is_last_batch,
    }
    return {"before_fit": before, "after_fit": after}


def test_trainer_attributes(run):
    expected = run.lightning(scenario_attributes)
    assert expected["after_fit"]["num_training_batches"] == 5
    assert expected["after_fit"]["global_step"] == 6  # 5 batches / k=2 -> steps after 2, 4, 5
    got = run.trainer(scenario_attributes)
    assert_same(got, expected)


# --------------------------------------------------------------------------------------------
# Checkpoint round trips through the public API; RNG consumption; configure_callbacks
# --------------------------------------------------------------------------------------------


def scenario_best_checkpoint_roundtrip(L, root):
    Base = mlp_module_class(L)

    class HP(Base):
        def __init__(self, lr=0.1, seed=0, hidden=16, note="x"):
            super().__init__(lr=lr, seed=seed, hidden=hidden)
            self.save_hyperparameters()

        def validation_step(self, batch, batch_idx):
            loss = self.loss(batch)
            self.log("val_loss", loss)
            return loss

        def test_step(self, batch, batch_idx):
            loss = self.loss(batch)
            self.log("test_loss", loss)
            return loss

    model = HP(lr=0.05, note="hello")
    kw = quiet_trainer_kwargs(root)
    kw["enable_checkpointing"] = True
    mc = L.callbacks.ModelCheckpoint(monitor="val_loss", dirpath=str(root / "ckpt"), save_top_k=1)
    trainer = L.Trainer(max_epochs=3, callbacks=[mc], **kw)
    trainer.fit(model, make_loader(16, 4), make_loader(8, 4, seed=1))
    tested_best = trainer.test(ckpt_path="best", dataloaders=make_loader(8, 4, seed=2))
    validated_no_model = trainer.validate(dataloaders=make_loader(8, 4, seed=1))
    loaded = HP.load_from_checkpoint(mc.best_model_path)
    return {
        "hparams": dict(model.hparams),
        "best": os.path.basename(mc.best_model_path),
        "test_best": tested_best,
        "validate_without_model": validated_no_model,
        "loaded_hparams": dict(loaded.hparams),
        "loaded_weights": state(loaded),
        "loaded_training_mode": loaded.training,
    }


def test_best_checkpoint_roundtrip(run):
    expected = run.lightning(scenario_best_checkpoint_roundtrip)
    assert expected["loaded_hparams"] == {"lr": 0.05, "seed": 0, "hidden": 16, "note": "hello"}
    got = run.trainer(scenario_best_checkpoint_roundtrip)
    assert_same(got, expected)


def scenario_rng(L, root):
    """Global RNG consumption: a script seeded once must see the same shuffles and the same RNG
    state after every entry point as under Lightning (else everything after the first fit diverges)."""
    Base = mlp_module_class(L)
    seen = []

    class M(Base):
        def training_step(self, batch, batch_idx):
            seen.append(batch[0].detach().clone())  # the batch itself: a copy is exact in any engine
            return super().training_step(batch, batch_idx)

        def validation_step(self, batch, batch_idx):
            loss = self.loss(batch)
            self.log("val_loss", loss)
            return loss

    after = {}
    L.seed_everything(7)
    shuffled = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(*make_loader(16, 16).dataset.tensors), batch_size=4, shuffle=True
    )
    model = M()
    trainer = L.Trainer(max_epochs=2, **quiet_trainer_kwargs(root))
    trainer.fit(model, shuffled, make_loader(8, 4, seed=1))
    after["fit"] = torch.rand(2)
    trainer.validate(model, make_loader(8, 4, seed=1))
    after["validate"] = torch.rand(2)
    trainer.predict(model, make_loader(8, 4, seed=1))
    after["predict"] = torch.rand(2)
    dm = L.LightningDataModule.from_datasets(train_dataset=shuffled.dataset, batch_size=4)  # shuffles
    trainer = L.Trainer(max_epochs=1, **quiet_trainer_kwargs(root))
    trainer.fit(model, datamodule=dm)
    after["from_datasets"] = torch.rand(2)
    return {"seen": seen, "after": after, "weights": state(model)}


def test_rng_consumption_and_shuffling(run):
    expected = run.lightning(scenario_rng)
    got = run.trainer(scenario_rng)
    # the shuffles and the RNG after each entry point are bit for bit Lightning's; the weights too under
    # the eager engine (the compiled one's kernels round differently: fp32 tolerance)
    assert_same({k: got[k] for k in ("seen", "after")}, {k: expected[k] for k in ("seen", "after")}, rtol=0, atol=0)
    if compiled_engine():
        assert_same(got["weights"], expected["weights"])
    else:
        assert_same(got["weights"], expected["weights"], rtol=0, atol=0)


def scenario_configure_callbacks(L, root):
    Base = mlp_module_class(L)

    class M(Base):
        def configure_callbacks(self):
            # Replaces the Trainer's EarlyStopping (same type); the LambdaCallback is added.
            return [L.callbacks.EarlyStopping(monitor="train_loss", patience=7), L.callbacks.LambdaCallback()]

        def training_step(self, batch, batch_idx):
            loss = self.loss(batch)
            self.log("train_loss", loss)
            return loss

    trainer = L.Trainer(
        max_epochs=1,
        callbacks=[L.callbacks.EarlyStopping(monitor="x", patience=1), L.callbacks.Timer()],
        **quiet_trainer_kwargs(root),
    )
    trainer.fit(M(), make_loader(8, 4))
    return {"callbacks": [(type(c).__name__, getattr(c, "patience", None)) for c in trainer.callbacks]}


def test_configure_callbacks_replaces_same_type(run):
    expected = run.lightning(scenario_configure_callbacks)
    names = [n for n, _ in expected["callbacks"]]
    assert ("EarlyStopping", 7) in expected["callbacks"] and ("EarlyStopping", 1) not in expected["callbacks"]
    assert "LambdaCallback" in names and "Timer" in names
    got = run.trainer(scenario_configure_callbacks)
    assert_same(got, expected)


# --------------------------------------------------------------------------------------------
# User overrides of the optimisation hooks; iterable datasets; dict batches
# --------------------------------------------------------------------------------------------


class _Iterable(torch.utils.data.IterableDataset):
    def __init__(self, n: int):
        from helpers import make_tensors

        self.x, self.y = make_tensors(n)

    def __iter__(self):
        return iter(zip(self.x, self.y))


class _DictDataset(torch.utils.data.Dataset):
    def __init__(self, n: int, seed: int):
        from helpers import make_tensors

        self.x, self.y = make_tensors(n, seed)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "y": self.y[i]}


def scenario_overrides(L, root, case):
    Base = mlp_module_class(L)
    kw: Dict[str, Any] = dict(max_epochs=2)
    train, val = make_loader(16, 4), make_loader(8, 4, seed=1)
    cls = Base
    if case == "warmup_in_optimizer_step":

        class cls(Base):  # noqa: N801
            def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None):
                for group in optimizer.param_groups:
                    group["lr"] = 0.1 * min(1.0, (self.trainer.global_step + 1) / 3)
                optimizer.step(closure=optimizer_closure)

    elif case == "custom_configure_gradient_clipping":

        class cls(Base):  # noqa: N801
            def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
                self.clip_gradients(optimizer, gradient_clip_val=0.01 * (1 + self.current_epoch), gradient_clip_algorithm="value")

    elif case == "log_in_gradient_hooks":

        class cls(Base):  # noqa: N801
            def on_after_backward(self):
                self.log("grad_norm", sum(p.grad.norm() ** 2 for p in self.parameters()) ** 0.5)

            def on_before_optimizer_step(self, optimizer):
                self.log("lr", optimizer.param_groups[0]["lr"], prog_bar=True)

        kw.update(accumulate_grad_batches=2)
    elif case == "iterable_dataset_val_check_interval":
        train = torch.utils.data.DataLoader(_Iterable(14), batch_size=4)
        kw.update(val_check_interval=2)
    elif case == "iterable_dataset_max_steps":
        train = torch.utils.data.DataLoader(_Iterable(14), batch_size=4)
        kw = dict(max_steps=6, limit_val_batches=1)
    elif case == "dict_batches":
        train = torch.utils.data.DataLoader(_DictDataset(16, 0), batch_size=4)
        val = torch.utils.data.DataLoader(_DictDataset(8, 1), batch_size=4)

        class cls(Base):  # noqa: N801
            def loss(self, batch):
                return torch.nn.functional.mse_loss(self(batch["x"]), batch["y"])

    elif case == "accumulate_max_steps_limit":
        kw = dict(max_epochs=5, accumulate_grad_batches=3, limit_train_batches=5, max_steps=5, limit_val_batches=1)
    else:
        raise AssertionError(case)

    counter = {"val": 0}

    class Counted(cls):
        def validation_step(self, batch, batch_idx):
            counter["val"] += 1
            return super().validation_step(batch, batch_idx)

    model = Counted()
    trainer = L.Trainer(**{**quiet_trainer_kwargs(root), "num_sanity_val_steps": 0, **kw})
    trainer.fit(model, train, val)
    return {
        "weights": state(model),
        "global_step": trainer.global_step,
        "current_epoch": trainer.current_epoch,
        "val_batches": counter["val"],
        "callback_metrics": metrics_as_floats(trainer.callback_metrics),
        "progress_bar_metrics": metrics_as_floats(trainer.progress_bar_metrics),
        "lr": lrs(trainer),
    }


OVERRIDE_STEPS = {
    "warmup_in_optimizer_step": 8,
    "custom_configure_gradient_clipping": 8,
    "log_in_gradient_hooks": 4,
    "iterable_dataset_val_check_interval": 8,
    "iterable_dataset_max_steps": 6,
    "dict_batches": 8,
    "accumulate_max_steps_limit": 5,
}


@pytest.mark.parametrize("case", list(OVERRIDE_STEPS))
def test_user_overrides_and_data_shapes(run, case):
    expected = run.lightning(scenario_overrides, case=case)
    assert expected["global_step"] == OVERRIDE_STEPS[case]
    got = run.trainer(scenario_overrides, case=case)
    assert_same(got, expected)
