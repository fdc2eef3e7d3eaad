"""Issue 18, items 8-11: LightningModule, LightningDataModule, eval-step fallbacks and predict, each
checked by running the same script under pytorch-lightning 2.6.6 (the oracle, asserted first) and
under `trainer`, and comparing what a user sees: values, hook order, errors by class and wording.
"""
from __future__ import annotations

import warnings
from types import ModuleType
from typing import Any, Callable, Dict, List, Optional, Tuple

import pytest
import torch
from helpers import boring_model_class, make_loader, quiet_trainer_kwargs

pytestmark = [pytest.mark.parity, pytest.mark.filterwarnings("ignore::UserWarning"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning")]


def _trainer(L: ModuleType, tmp_path, **kw) -> Any:
    base = quiet_trainer_kwargs(tmp_path)
    base.update(kw)
    return L.Trainer(**base)


def outcome(fn: Callable[[], Any]) -> Optional[Tuple[str, str]]:
    """None when ``fn()`` returns, else (exception class name, message)."""
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - the point is to look at it
        return type(exc).__name__, str(exc)
    return None


# --------------------------------------------------------------------------------------------
# 8. LightningModule
# --------------------------------------------------------------------------------------------

def _toggle_observations(L: ModuleType, tmp_path) -> List[Dict[str, bool]]:
    """requires_grad of every parameter after each toggle/untoggle of three optimizers sharing
    parameters, one parameter frozen by the user beforehand (it must stay frozen)."""
    BM = boring_model_class(L)
    seen: List[Dict[str, bool]] = []

    class Toggling(BM):
        def __init__(self):
            super().__init__()
            self.automatic_optimization = False
            self.a, self.b, self.c = (torch.nn.Linear(2, 2) for _ in range(3))
            self.b.weight.requires_grad = False

        def configure_optimizers(self):
            params = lambda *mods: [p for m in mods for p in m.parameters()]  # noqa: E731
            return (torch.optim.SGD(params(self.a, self.b), lr=0.1), torch.optim.SGD(params(self.b, self.c), lr=0.1),
                    torch.optim.SGD(params(self.c, self.layer), lr=0.1))

        def snapshot(self):
            seen.append({n: p.requires_grad for n, p in self.named_parameters()})

        def training_step(self, batch, batch_idx):
            opts = self.optimizers()
            for opt in opts:
                self.toggle_optimizer(opt)
                self.snapshot()
                self.untoggle_optimizer(opt)
                self.snapshot()
            with self.toggled_optimizer(opts[1]):
                self.snapshot()
            self.snapshot()

    _trainer(L, tmp_path, max_epochs=1, limit_train_batches=1, limit_val_batches=0).fit(Toggling())
    return seen


def test_toggle_optimizer_restores_requires_grad(PL, TL, tmp_path):
    lightning = _toggle_observations(PL, tmp_path / "pl")
    assert len(lightning) == 8
    assert lightning[0]["a.weight"] and not lightning[0]["c.weight"] and not lightning[0]["b.weight"]
    assert lightning[-1]["b.bias"] and not lightning[-1]["b.weight"]  # the user's frozen weight stays frozen
    assert _toggle_observations(TL, tmp_path / "tl") == lightning


def _child_trainer(L: ModuleType, tmp_path) -> Dict[str, Any]:
    BM = boring_model_class(L)

    class Parent(BM):
        def __init__(self):
            super().__init__()
            self.child = BM()
            self.child.grandchild = BM()

    model = Parent()
    trainer = _trainer(L, tmp_path, max_epochs=1, limit_train_batches=1, limit_val_batches=0)
    trainer.fit(model)
    return {"child": model.child.trainer is trainer, "grandchild": model.child.grandchild.trainer is trainer,
            "epoch": model.child.current_epoch}


def test_child_module_sees_parents_trainer(PL, TL, tmp_path):
    lightning = _child_trainer(PL, tmp_path / "pl")
    assert lightning == {"child": True, "grandchild": True, "epoch": 1}
    assert _child_trainer(TL, tmp_path / "tl") == lightning


def _torchscript(L: ModuleType, tmp_path, method: str, **kw) -> Dict[str, Any]:
    model = boring_model_class(L)()
    model.example_input_array = torch.randn(3, 8, generator=torch.Generator().manual_seed(0))
    model.train()
    path = tmp_path / f"{L.__name__}_{method}.pt"
    script = model.to_torchscript(file_path=str(path), method=method, **kw)
    loaded = torch.jit.load(str(path))
    x = model.example_input_array
    model.eval()
    return {"is_script": isinstance(script, torch.jit.ScriptModule), "script_training": script.training,
            "equal": torch.equal(script(x), model(x)), "loaded_equal": torch.equal(loaded(x), model(x)),
            "training_step_kept": callable(getattr(script, "training_step", None))}


@pytest.mark.parametrize("method", ["script", "trace"])
def test_to_torchscript_without_trainer(PL, TL, tmp_path, method):
    lightning = _torchscript(PL, tmp_path, method)
    assert lightning == {"is_script": True, "script_training": False, "equal": True, "loaded_equal": True,
                         "training_step_kept": False}
    assert _torchscript(TL, tmp_path, method) == lightning


def test_to_torchscript_errors(PL, TL):
    def run(L, **kw):
        model = boring_model_class(L)()
        return outcome(lambda: model.to_torchscript(**kw))

    for kw in (dict(method="temp"), dict(method="trace")):
        lightning = run(PL, **kw)
        assert lightning is not None and lightning[0] == "ValueError"
        assert run(TL, **kw) == lightning


CALLBACK_LOG_HOOKS = [
    "on_train_start", "on_train_epoch_start", "on_train_batch_start", "on_train_batch_end", "on_train_epoch_end",
    "on_validation_start", "on_validation_epoch_start", "on_validation_batch_start", "on_validation_batch_end",
    "on_validation_epoch_end", "on_before_backward", "on_after_backward", "on_before_optimizer_step",
    "on_before_zero_grad",
]


def _logging_callback(L: ModuleType, hooks: List[str], **log_kw) -> Any:
    def make(hook: str):
        def hook_fn(self, trainer, pl_module, *args, **kwargs):
            pl_module.log(hook, float(trainer.global_step) + 0.5 * trainer.current_epoch, **log_kw)
        return hook_fn

    return type("LoggingCallback", (L.Callback,), {h: make(h) for h in hooks})()


def _callback_logging(L: ModuleType, tmp_path) -> Dict[str, Any]:
    logger = L.loggers.CSVLogger(str(tmp_path), name="csv", version=0)
    trainer = _trainer(L, tmp_path, max_epochs=2, limit_train_batches=2, limit_val_batches=2, logger=logger,
                       log_every_n_steps=1, callbacks=[_logging_callback(L, CALLBACK_LOG_HOOKS)])
    trainer.fit(boring_model_class(L)())
    metrics_csv = (tmp_path / "csv" / "version_0" / "metrics.csv").read_text().splitlines()
    return {"callback_metrics": {k: float(v) for k, v in trainer.callback_metrics.items()},
            "logged_metrics": {k: float(v) for k, v in trainer.logged_metrics.items()},
            "csv_header": sorted(metrics_csv[0].split(",")), "csv_rows": len(metrics_csv)}


def test_callback_logs_like_the_module(PL, TL, tmp_path):
    lightning = _callback_logging(PL, tmp_path / "pl")
    assert set(lightning["callback_metrics"]) == set(CALLBACK_LOG_HOOKS)
    assert _callback_logging(TL, tmp_path / "tl") == lightning


@pytest.mark.parametrize("hook", ["on_fit_start", "on_sanity_check_start", "setup", "on_train_end",
                                  "on_validation_end", "on_fit_end"])
def test_callback_log_where_lightning_forbids_it(PL, TL, tmp_path, hook):
    def run(L, path):
        trainer = _trainer(L, path, max_epochs=1, limit_train_batches=1, limit_val_batches=1,
                           callbacks=[_logging_callback(L, [hook])])
        return outcome(lambda: trainer.fit(boring_model_class(L)()))

    lightning = run(PL, tmp_path / "pl")
    assert lightning is not None and lightning[0] == "MisconfigurationException"
    assert f"You can't `self.log()` inside `{hook}`" in lightning[1]
    assert run(TL, tmp_path / "tl") == lightning


@pytest.mark.parametrize("hook, log_kw", [("on_train_epoch_end", dict(on_step=True)),
                                          ("on_validation_start", dict(on_epoch=False))])
def test_callback_log_levels_rejected_as_lightning(PL, TL, tmp_path, hook, log_kw):
    def run(L, path):
        trainer = _trainer(L, path, max_epochs=1, limit_train_batches=1, limit_val_batches=1,
                           callbacks=[_logging_callback(L, [hook], **log_kw)])
        return outcome(lambda: trainer.fit(boring_model_class(L)()))

    lightning = run(PL, tmp_path / "pl")
    assert lightning is not None and "must be one of" in lightning[1]
    assert run(TL, tmp_path / "tl") == lightning


# --------------------------------------------------------------------------------------------
# 9. LightningDataModule
# --------------------------------------------------------------------------------------------

class _Unsized(torch.utils.data.IterableDataset):
    def __iter__(self):
        yield from range(3)


def _datamodule_strings(L: ModuleType) -> List[str]:
    from helpers import make_dataset

    class Several(L.LightningDataModule):
        def train_dataloader(self):
            return make_loader(16, 4)

        def val_dataloader(self):
            return [make_loader(8, 4), torch.utils.data.DataLoader(_Unsized())]

        def test_dataloader(self):
            raise RuntimeError("setup has not run")

    return [str(Several()), str(L.LightningDataModule()),
            str(L.LightningDataModule.from_datasets(make_dataset(8), predict_dataset=[make_dataset(4)]))]


def test_datamodule_str_as_lightning(PL, TL):
    lightning = _datamodule_strings(PL)
    assert lightning[0].splitlines() == ["{Train dataloader: size=16}", "{Validation dataloader: 1. size=8 ; 2. size=NA}",
                                         "{Test dataloader: None}", "{Predict dataloader: None}"]
    assert _datamodule_strings(TL) == lightning


def _from_datasets_loaders(L: ModuleType, iterable: bool) -> Dict[str, Any]:
    from helpers import make_dataset

    ds = _Unsized() if iterable else make_dataset(8)
    dm = L.LightningDataModule.from_datasets(ds, val_dataset={"a": ds, "b": ds}, test_dataset=[ds, ds],
                                             batch_size=3, num_workers=0)

    def describe(loader):
        return (loader.dataset is ds, loader.batch_size, loader.num_workers, loader.pin_memory,
                type(loader.sampler).__name__)

    val = dm.val_dataloader()
    return {"train": describe(dm.train_dataloader()), "val": {k: describe(v) for k, v in val.items()},
            "test": [describe(v) for v in dm.test_dataloader()],
            "predict_missing": outcome(dm.predict_dataloader)}


@pytest.mark.parametrize("iterable", [False, True])
def test_from_datasets_passes_loader_arguments(PL, TL, iterable):
    lightning = _from_datasets_loaders(PL, iterable)
    sampler = "_InfiniteConstantSampler" if iterable else "RandomSampler"
    assert lightning["train"] == (True, 3, 0, True, sampler)
    assert lightning["predict_missing"][0] == "MisconfigurationException"
    assert _from_datasets_loaders(TL, iterable) == lightning


def _datamodule_in_checkpoint_logger_profiler(L: ModuleType, tmp_path) -> Dict[str, Any]:
    BM = boring_model_class(L)

    class HyperDM(L.LightningDataModule):
        def __init__(self, batch_size: int = 4, name_: str = "tiny"):
            super().__init__()
            self.save_hyperparameters()

        def train_dataloader(self):
            return make_loader(16, self.hparams.batch_size)

        def val_dataloader(self):
            return make_loader(8, 4, seed=1)

    class HyperModel(BM):
        def __init__(self, lr: float = 0.1):
            super().__init__(lr=lr)
            self.save_hyperparameters()

    logger = L.loggers.CSVLogger(str(tmp_path), name="csv", version=0)
    ckpt_cb = L.callbacks.ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), filename="last")
    trainer = _trainer(L, tmp_path, max_epochs=1, limit_train_batches=2, limit_val_batches=1, logger=logger,
                       enable_checkpointing=True, callbacks=[ckpt_cb], profiler="simple")
    trainer.fit(HyperModel(), datamodule=HyperDM(batch_size=2))
    ckpt = torch.load(str(tmp_path / "ckpt" / "last.ckpt"), weights_only=False)
    profiled = sorted(k for k in trainer.profiler.recorded_durations if k.startswith("[LightningDataModule]"))
    return {"dm_hparams": ckpt.get("datamodule_hyper_parameters"), "dm_hparams_name": ckpt.get("datamodule_hparams_name"),
            "hparams": ckpt.get("hyper_parameters"),
            "hparams_yaml": (tmp_path / "csv" / "version_0" / "hparams.yaml").read_text(), "profiled": profiled}


def test_datamodule_hparams_checkpoint_logger_and_profiler(PL, TL, tmp_path):
    lightning = _datamodule_in_checkpoint_logger_profiler(PL, tmp_path / "pl")
    assert lightning["dm_hparams"] == {"batch_size": 2, "name_": "tiny"}
    assert "batch_size: 2" in lightning["hparams_yaml"] and "lr: 0.1" in lightning["hparams_yaml"]
    assert "[LightningDataModule]HyperDM.state_dict" in lightning["profiled"]
    assert _datamodule_in_checkpoint_logger_profiler(TL, tmp_path / "tl") == lightning


def _datamodule_hook_calls(L: ModuleType, tmp_path) -> Dict[str, List[Tuple[str, Any]]]:
    """Every public LightningDataModule method is wrapped on the instance to record its calls
    (how Lightning's test_trainer_datamodule_hook_system observes them)."""
    import functools
    import inspect

    from helpers import InputOnlyDataset

    class Recorded(L.LightningDataModule):
        def __init__(self, calls: List[Tuple[str, Any]]):
            super().__init__()

            def record(hook, fn, *args, **kwargs):
                calls.append((hook, getattr(kwargs["stage"], "value", kwargs["stage"]) if "stage" in kwargs else None))
                return fn(*args, **kwargs)

            for hook, _ in inspect.getmembers(L.LightningDataModule, callable):
                if not hook.startswith("_") and hook not in ("from_datasets",):
                    setattr(self, hook, functools.partial(record, hook, getattr(self, hook)))

        def train_dataloader(self):
            return make_loader(8, 4)

        def val_dataloader(self):
            return make_loader(8, 4, seed=1)

        def test_dataloader(self):
            return make_loader(8, 4, seed=2)

        def predict_dataloader(self):
            return torch.utils.data.DataLoader(InputOnlyDataset(8), batch_size=4)

    trainer = L.Trainer(accelerator="cpu", devices=1, default_root_dir=str(tmp_path), max_epochs=1,
                        limit_train_batches=2, limit_val_batches=1, limit_test_batches=1, limit_predict_batches=1,
                        enable_progress_bar=False, enable_model_summary=False, reload_dataloaders_every_n_epochs=1)
    seen: Dict[str, List[Tuple[str, Any]]] = {}
    for fn in ("fit", "validate", "test", "predict"):
        calls: List[Tuple[str, Any]] = []
        kwargs = {"verbose": False} if fn in ("validate", "test") else {}
        getattr(trainer, fn)(boring_model_class(L)(), datamodule=Recorded(calls), **kwargs)
        seen[fn] = calls
    return seen


def test_datamodule_hook_order_as_lightning(PL, TL, tmp_path):
    lightning = _datamodule_hook_calls(PL, tmp_path / "pl")
    names = [name for name, _ in lightning["fit"] if "batch" not in name]
    assert names == ["prepare_data", "setup", "val_dataloader", "train_dataloader", "state_dict", "teardown"]
    assert _datamodule_hook_calls(TL, tmp_path / "tl") == lightning


# --------------------------------------------------------------------------------------------
# 10. An eval step the compiled engine cannot capture; load_from_checkpoint(strict=...)
# --------------------------------------------------------------------------------------------

def _eval_auto_reduce(L: ModuleType, tmp_path) -> Dict[str, Any]:
    """Lightning's test_eval_logging_auto_reduce: validation_step keeps each loss in a Python list
    (a side effect a captured graph would run once) and the epoch end stacks them."""
    BM = boring_model_class(L)

    class KeepsLosses(BM):
        val_losses: List[torch.Tensor] = []
        manual_epoch_end_mean = None

        def validation_step(self, batch, batch_idx):
            loss = self.loss(batch)
            self.val_losses.append(loss)
            self.log("val_loss", loss, on_epoch=True, on_step=True, prog_bar=True)
            return {"x": loss}

        def on_validation_epoch_end(self):
            self.manual_epoch_end_mean = torch.stack(self.val_losses).mean()

    KeepsLosses.val_losses = []
    model = KeepsLosses()
    trainer = _trainer(L, tmp_path, limit_train_batches=3, limit_val_batches=3, max_epochs=1, log_every_n_steps=1,
                       num_sanity_val_steps=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(model)
    return {"callback_metrics": sorted(trainer.callback_metrics),
            "logged": {k: float(v) for k, v in trainer.logged_metrics.items()},
            "epoch_mean": float(model.manual_epoch_end_mean), "n_losses": len(model.val_losses),
            "fallback": [str(w.message) for w in caught if type(w.message).__name__ == "CompileWarning"]}


def test_eval_step_with_side_effect_falls_back_with_lightning_values(PL, TL, tmp_path):
    from helpers import compiled_engine

    lightning = _eval_auto_reduce(PL, tmp_path / "pl")
    assert lightning["callback_metrics"] == ["val_loss", "val_loss_epoch"]
    assert lightning["logged"]["val_loss_epoch"] == pytest.approx(lightning["epoch_mean"])
    ours = _eval_auto_reduce(TL, tmp_path / "tl")
    fallback = ours.pop("fallback")
    lightning.pop("fallback")
    assert ours == lightning
    if compiled_engine():  # the compiled engine runs this step eagerly and says why, once
        assert len(fallback) == 1 and "validation_step" in fallback[0] and "val_losses" in fallback[0]
    else:
        assert fallback == []


def _strict_loading(L: ModuleType, tmp_path) -> Dict[str, Any]:
    """Lightning's test_strict_model_load: a checkpoint with an extra layer, loaded into the plain class."""
    BM = boring_model_class(L)
    model = BM()
    model.extra = torch.nn.Linear(3, 4)
    trainer = _trainer(L, tmp_path, max_epochs=1, limit_train_batches=1, limit_val_batches=0)
    trainer.fit(model)
    path = str(tmp_path / "extra.ckpt")
    trainer.save_checkpoint(path)
    seen: Dict[str, Any] = {}
    for case, kw in [("default", {}), ("strict", dict(strict=True)), ("loose", dict(strict=False)),
                     ("missing_hparams_file", dict(hparams_file=str(tmp_path / "none.yaml"), strict=False))]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                BM.load_from_checkpoint(path, **kw)
                loaded, raised = True, None
            except RuntimeError as err:  # Lightning raises torch's RuntimeError; ours a RuntimeError naming the file
                loaded, raised = False, "Unexpected key(s) in state_dict" in str(err)
        seen[case] = (loaded, raised, sorted(
            str(w.message) for w in caught
            if issubclass(w.category, (UserWarning, RuntimeWarning)) and ("Found keys" in str(w.message)
                                                                          or "Missing Tags" in str(w.message))))
    loose = BM.load_from_checkpoint(path, strict=False)
    seen["loose_weights_equal"] = torch.equal(loose.layer.weight, model.layer.weight)

    class Explicit(BM):
        def __init__(self):
            super().__init__()
            self.strict_loading = True

    seen["conflict"] = outcome(lambda: Explicit.load_from_checkpoint(path, strict=False))
    return seen


def test_load_from_checkpoint_strict_semantics(PL, TL, tmp_path):
    lightning = _strict_loading(PL, tmp_path / "pl")
    assert lightning["default"][:2] == (False, True) and lightning["strict"][:2] == (False, True)
    assert lightning["loose"][0] and lightning["loose_weights_equal"]
    assert lightning["conflict"][0] == "ValueError"
    ours = _strict_loading(TL, tmp_path / "tl")
    for case in ("missing_hparams_file",):  # the path names the framework's own tmp dir
        lightning[case] = lightning[case][:2] + ([m.replace(str(tmp_path / "pl"), "") for m in lightning[case][2]],)
        ours[case] = ours[case][:2] + ([m.replace(str(tmp_path / "tl"), "") for m in ours[case][2]],)
    assert ours == lightning


# --------------------------------------------------------------------------------------------
# 11. Predict: BasePredictionWriter, return_predictions, batch indices
# --------------------------------------------------------------------------------------------

class _Counting(torch.utils.data.IterableDataset):
    def __iter__(self):
        for i in range(6):
            yield torch.full((8,), float(i))


def _predict_loaders(kind: str) -> Any:
    from helpers import InputOnlyDataset

    if kind == "map":
        return torch.utils.data.DataLoader(InputOnlyDataset(8), batch_size=3)
    if kind == "map_workers":
        return torch.utils.data.DataLoader(InputOnlyDataset(8), batch_size=4, num_workers=1)
    if kind == "iterable":
        return torch.utils.data.DataLoader(_Counting(), batch_size=4)
    if kind == "two":
        return [torch.utils.data.DataLoader(InputOnlyDataset(4), batch_size=3),
                torch.utils.data.DataLoader(InputOnlyDataset(6), batch_size=2)]
    return [torch.randn(2, 8, generator=torch.Generator().manual_seed(1))]  # not a DataLoader


def _shapes(predictions: Any) -> Any:
    if isinstance(predictions, torch.Tensor):
        return tuple(predictions.shape)
    if isinstance(predictions, (list, tuple)):
        return [_shapes(p) for p in predictions]
    return predictions


def _prediction_writing(L: ModuleType, tmp_path, interval: str, kind: str, return_predictions: bool) -> Dict[str, Any]:
    class Recorder(L.callbacks.BasePredictionWriter):
        def __init__(self):
            super().__init__(interval)
            self.calls: List[Any] = []

        def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx):
            self.calls.append(("batch", _shapes(prediction), list(batch_indices), batch_idx, dataloader_idx))

        def write_on_epoch_end(self, trainer, pl_module, predictions, batch_indices):
            torch.save(predictions, str(tmp_path / f"{L.__name__}.pt"))
            self.calls.append(("epoch", _shapes(predictions), batch_indices))

    writer = Recorder()
    trainer = _trainer(L, tmp_path, callbacks=[writer])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = trainer.predict(boring_model_class(L)(), dataloaders=_predict_loaders(kind),
                              return_predictions=return_predictions)
    written = tmp_path / f"{L.__name__}.pt"
    return {"calls": writer.calls, "returned": _shapes(out), "kept": _shapes(trainer.predict_loop.predictions),
            "epoch_batch_indices": trainer.predict_loop.epoch_batch_indices,
            "current_batch_indices": list(trainer.predict_loop.current_batch_indices),
            "file": _shapes(torch.load(str(written))) if written.exists() else None,
            "warnings": sorted({str(w.message) for w in caught if "infer the batch indices" in str(w.message)})}


@pytest.mark.parametrize("kind", ["map", "iterable", "two", "tensor"])
@pytest.mark.parametrize("interval", ["batch", "epoch", "batch_and_epoch"])
@pytest.mark.parametrize("return_predictions", [True, False])
def test_prediction_writer_as_lightning(PL, TL, tmp_path, interval, kind, return_predictions):
    lightning = _prediction_writing(PL, tmp_path, interval, kind, return_predictions)
    assert any(c[0] == "batch" for c in lightning["calls"]) == (interval != "epoch")
    assert any(c[0] == "epoch" for c in lightning["calls"]) == (interval != "batch")
    assert (lightning["returned"] is None) == (not return_predictions)
    if kind in ("iterable", "tensor"):
        assert lightning["warnings"] and "Couldn't infer the batch indices" in lightning["warnings"][0]
    assert _prediction_writing(TL, tmp_path, interval, kind, return_predictions) == lightning


def test_prediction_writer_indices_with_workers(PL, TL, tmp_path):
    lightning = _prediction_writing(PL, tmp_path, "batch_and_epoch", "map_workers", True)
    assert lightning["calls"][0][2] == [0, 1, 2, 3] and lightning["calls"][-1][2] == [[[0, 1, 2, 3], [4, 5, 6, 7]]]
    assert _prediction_writing(TL, tmp_path, "batch_and_epoch", "map_workers", True) == lightning


def test_prediction_writer_errors_as_lightning(PL, TL, tmp_path):
    def run(L):
        bad_interval = outcome(lambda: L.callbacks.BasePredictionWriter("step"))
        trainer = _trainer(L, tmp_path, callbacks=[L.callbacks.BasePredictionWriter()])
        not_implemented = outcome(lambda: trainer.predict(boring_model_class(L)()))
        return bad_interval, not_implemented

    lightning = run(PL)
    assert lightning[0] == ("MisconfigurationException",
                            "`write_interval` should be one of ['batch', 'epoch', 'batch_and_epoch'].")
    assert lightning[1] == ("NotImplementedError", "")
    assert run(TL) == lightning


def _log_from_every_hook(L: ModuleType, tmp_path) -> Dict[str, Dict[str, str]]:
    """Every Callback hook and every LightningModule hook calls ``log`` (as Lightning's
    test_fx_validator_integration does); the outcome per (stage, hook): "logged" or the error's class and its
    first words."""
    import functools
    import inspect

    outcomes: Dict[str, Dict[str, str]] = {"callback": {}, "module": {}}
    stage = {"name": "fit"}

    def public_functions(cls):
        return {name for name, _ in inspect.getmembers(cls, inspect.isfunction) if not name.startswith("_")}

    def try_log(kind, hook, module):
        try:
            module.log(hook, 1.0)
            result = "logged"
        except Exception as exc:  # noqa: BLE001 - recording the framework's answer
            result = f"{type(exc).__name__}: {str(exc)[:40]}"
        outcomes[kind].setdefault(f"{stage['name']}:{hook}", result)

    class EveryHookCallback(L.Callback):
        def __init__(self):
            def hook_fn(hook, trainer=None, pl_module=None, *args, **kwargs):
                if trainer is not None:  # state_dict/load_state_dict get no trainer
                    try_log("callback", hook, trainer.lightning_module or pl_module)

            for hook in public_functions(L.Callback):
                setattr(self, hook, functools.partial(hook_fn, hook))

    class EveryHookModel(boring_model_class(L)):
        def __init__(self):
            super().__init__()
            hooks = public_functions(L.LightningModule) - public_functions(torch.nn.Module) - {
                "log", "log_dict", "configure_sharded_model"}

            def wrapped(hook, fn, *args, **kwargs):
                out = fn(*args, **kwargs)
                try_log("module", hook, self)
                return out

            for hook in hooks & public_functions(type(self)):
                setattr(self, hook, functools.partial(wrapped, hook, getattr(self, hook)))

    model = EveryHookModel()
    trainer = _trainer(L, tmp_path, max_epochs=2, limit_train_batches=1, limit_val_batches=1, limit_test_batches=1,
                       limit_predict_batches=1, enable_checkpointing=True, callbacks=[EveryHookCallback()])
    trainer.fit(model)
    for fn in ("test", "predict"):
        stage["name"] = fn
        getattr(trainer, fn)(model, **({"verbose": False} if fn == "test" else {}))
    return outcomes


def test_log_from_every_hook_as_lightning(PL, TL, tmp_path):
    lightning = _log_from_every_hook(PL, tmp_path / "pl")
    assert lightning["callback"]["fit:on_train_batch_end"] == "logged"
    assert lightning["callback"]["fit:on_save_checkpoint"].startswith("MisconfigurationException: You can't")
    assert lightning["callback"]["predict:on_predict_batch_end"].startswith("MisconfigurationException: You are")
    ours = _log_from_every_hook(TL, tmp_path / "tl")
    assert ours["callback"] == lightning["callback"]
    # the Trainer skips module hooks nobody overrode in the class; every hook it does call answers as Lightning's
    assert {hook: ours["module"][hook] for hook in ours["module"] if hook in lightning["module"]} == {
        hook: lightning["module"][hook] for hook in ours["module"] if hook in lightning["module"]}
    assert set(ours["module"]) <= set(lightning["module"])


def _hparams_round_trip(L: ModuleType, tmp_path) -> Dict[str, Any]:
    """save_hyperparameters in Lightning's forms (one object, all arguments, an unconventional ``self``, a
    subclass adding keyword arguments), each checkpointed and loaded back, with and without overrides."""
    from argparse import Namespace

    BM = boring_model_class(L)

    class OneObject(BM):
        def __init__(self, hparams):
            super().__init__()
            self.save_hyperparameters(hparams)

    class AllArguments(BM):
        def __init__(self, batch_size=64):
            super().__init__()
            self.save_hyperparameters()

    class OddSelf(AllArguments):
        def __init__(this, *more, other_arg=300, **more_kwargs):  # noqa: N805 - the point of the case
            super().__init__(*more, **more_kwargs)
            this.save_hyperparameters()

    class OneObjectDM(L.LightningDataModule):
        def __init__(self, hparams):
            super().__init__()
            self.save_hyperparameters(hparams)

        def train_dataloader(self):
            return make_loader(8, 4)

    seen: Dict[str, Any] = {}
    for case, build, dm_build in [
        ("namespace", lambda: OneObject(Namespace(test_arg=14)), None),
        ("dict", lambda: OneObject({"test_arg": 14}), None),
        ("all", lambda: AllArguments(batch_size=179), None),
        ("odd_self", lambda: OddSelf(batch_size=179), None),
        ("datamodule", lambda: BM(), lambda: OneObjectDM(Namespace(test_arg=14))),
    ]:
        model, dm = build(), dm_build() if dm_build else None
        trainer = _trainer(L, tmp_path / case, max_epochs=1, limit_train_batches=1, limit_val_batches=0)
        trainer.fit(model, datamodule=dm)
        path = str(tmp_path / case / "hp.ckpt")
        trainer.save_checkpoint(path)
        ckpt = torch.load(path, weights_only=False)
        cls = type(dm) if dm is not None else type(model)
        loaded = cls.load_from_checkpoint(path)
        overridden = cls.load_from_checkpoint(path, **({"batch_size": 99} if case in ("all", "odd_self") else {}))
        seen[case] = {"saved": dict(ckpt[cls.CHECKPOINT_HYPER_PARAMS_KEY]),
                      "name": ckpt.get(cls.CHECKPOINT_HYPER_PARAMS_NAME), "loaded": dict(loaded.hparams),
                      "type": type(loaded.hparams).__name__, "overridden": dict(overridden.hparams)}
    for bad in (42, [1, 2], "not_an_argument"):
        seen[f"bad {bad!r}"] = outcome(lambda: OneObject(bad))
    return seen


def test_save_hyperparameters_round_trip_as_lightning(PL, TL, tmp_path):
    lightning = _hparams_round_trip(PL, tmp_path / "pl")
    assert lightning["namespace"]["name"] == "hparams" and lightning["all"]["name"] == "kwargs"
    assert lightning["odd_self"]["overridden"] == {"batch_size": 99, "other_arg": 300}
    assert lightning["bad 42"][0] == "ValueError" and lightning["bad 'not_an_argument'"][0] == "KeyError"
    assert _hparams_round_trip(TL, tmp_path / "tl") == lightning


def _copies_after_fit(L: ModuleType, tmp_path) -> Dict[str, Any]:
    import copy

    model = boring_model_class(L)()
    trainer = _trainer(L, tmp_path, max_epochs=1, limit_train_batches=1, limit_val_batches=0)
    trainer.fit(model)
    clone = copy.deepcopy(model)
    return {"clone_trainer": clone._trainer, "original_kept": model.trainer is trainer,
            "same_weights": torch.equal(clone.layer.weight, model.layer.weight)}


def test_module_copy_leaves_the_trainer_behind(PL, TL, tmp_path):
    lightning = _copies_after_fit(PL, tmp_path / "pl")
    assert lightning == {"clone_trainer": None, "original_kept": True, "same_weights": True}
    assert _copies_after_fit(TL, tmp_path / "tl") == lightning


def _hparams_at_fit(L: ModuleType, tmp_path) -> Dict[str, Any]:
    """What a fit does with hyper-parameters: unpicklable ones dropped with a warning, the initial values
    logged (not later edits), nothing logged for modules that never saved any, dataclass fields, and a
    checkpoint that kept them under a Lightning-0.7 key."""
    from dataclasses import dataclass
    from unittest import mock

    BM = boring_model_class(L)

    class Unpicklable(BM):
        def __init__(self, foo="bar", fn=(lambda x: x + 1)):
            super().__init__()
            self.save_hyperparameters()

    class EditedLater(BM):
        def __init__(self, **kwargs):
            super().__init__()
            self.save_hyperparameters()

    @dataclass(eq=False)
    class DataclassModel(BM):
        mandatory: int
        optional: str = "optional"
        ignore_me: bool = False

        def __post_init__(self):
            super().__init__()
            self.save_hyperparameters(ignore=("ignore_me",))

    seen: Dict[str, Any] = {}
    model = Unpicklable()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _trainer(L, tmp_path / "u", max_steps=1, limit_val_batches=0).fit(model)
    seen["dropped"] = ([str(w.message) for w in caught if "cannot be pickled" in str(w.message)], dict(model.hparams))

    model = EditedLater(running_arg=123)
    model.hparams.running_arg = -1
    logger = mock.MagicMock(name="logger")
    logger.name, logger.save_dir, logger.version = "mock", str(tmp_path / "m"), "0"
    del logger.__iter__
    _trainer(L, tmp_path / "m", max_steps=1, limit_val_batches=0, logger=logger).fit(model)
    seen["logged_initial"] = [dict(c.args[0]) for c in logger.log_hyperparams.call_args_list]
    logger.reset_mock()
    _trainer(L, tmp_path / "n", max_steps=1, limit_val_batches=0, logger=logger).fit(BM())
    seen["nothing_saved_nothing_logged"] = logger.log_hyperparams.call_count
    seen["dataclass"] = dict(DataclassModel(33, optional="cocofruit").hparams)

    class Legacy(BM):
        def __init__(self, batch_size=64):
            super().__init__()
            self.save_hyperparameters()

    trainer = _trainer(L, tmp_path / "l", max_steps=1, limit_val_batches=0)
    trainer.fit(Legacy())
    path = str(tmp_path / "l" / "legacy.ckpt")
    trainer.save_checkpoint(path)
    raw = torch.load(path, weights_only=False)
    raw["module_arguments"] = dict(raw.pop("hyper_parameters"), batch_size=-17)
    torch.save(raw, path)
    seen["legacy_key"] = Legacy.load_from_checkpoint(path).hparams.batch_size
    return seen


def test_hparams_at_fit_as_lightning(PL, TL, tmp_path):
    lightning = _hparams_at_fit(PL, tmp_path / "pl")
    assert lightning["dropped"][1] == {"foo": "bar"} and len(lightning["dropped"][0]) == 1
    assert lightning["logged_initial"] == [{"running_arg": 123}]
    assert lightning["nothing_saved_nothing_logged"] == 0 and lightning["legacy_key"] == -17
    assert _hparams_at_fit(TL, tmp_path / "tl") == lightning


# --------------------------------------------------------------------------------------------
# Lightning's import paths under core/, and its hyper-parameter files
# --------------------------------------------------------------------------------------------

def _core(L: ModuleType) -> ModuleType:
    import importlib

    return importlib.import_module(f"{L.__name__}.core")


def test_core_paths_are_the_same_objects(TL):
    import importlib
    from unittest import mock

    core = _core(TL)
    assert importlib.import_module("trainer.core.module").LightningModule is TL.LightningModule
    assert importlib.import_module("trainer.core.datamodule").LightningDataModule is TL.LightningDataModule
    assert importlib.import_module("trainer.core.mixins").HyperparametersMixin is core.module.HyperparametersMixin
    dm = TL.LightningDataModule.from_datasets(torch.utils.data.TensorDataset(torch.zeros(4)), batch_size=4)
    with mock.patch("trainer.core.datamodule.DataLoader") as patched:  # what Lightning's own test patches
        dm.train_dataloader()
    assert patched.call_count == 1 and patched.call_args.kwargs == dict(
        batch_size=4, shuffle=True, num_workers=0, pin_memory=True)


def _hparams_files(L: ModuleType, tmp_path) -> Dict[str, Any]:
    from argparse import Namespace
    from enum import Enum

    class Option(str, Enum):
        first = "first_value"

    saving = _core(L).saving
    tmp_path.mkdir(parents=True)
    hparams = {"batch_size": 32, "lr": 0.001, "root": "./any/path", "nested": {"n": 123}, "switch": Option.first}
    seen: Dict[str, Any] = {}
    for kind, value in (("dict", hparams), ("namespace", Namespace(**hparams))):
        path = tmp_path / f"{kind}.yaml"
        saving.save_hparams_to_yaml(str(path), value)
        seen[f"yaml {kind}"] = saving.load_hparams_from_yaml(str(path), use_omegaconf=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        saving.save_hparams_to_yaml(str(tmp_path / "skip.yaml"), {"dtype": torch.float32, "ok": 1})
        seen["missing"] = saving.load_hparams_from_yaml(str(tmp_path / "absent.yaml"), use_omegaconf=False)
    seen["skipped"] = (saving.load_hparams_from_yaml(str(tmp_path / "skip.yaml"), use_omegaconf=False),
                       sorted(f"{w.category.__name__}: {str(w.message).replace(str(tmp_path), '')}" for w in caught))
    csv_path = str(tmp_path / "tags.csv")
    saving.save_hparams_to_tags_csv(csv_path, {"batch_size": 32, "name": "abc", "ratio": 0.5, "flag": True})
    seen["csv"] = saving.load_hparams_from_tags_csv(csv_path)
    seen["missing folder"] = outcome(lambda: saving.save_hparams_to_tags_csv(str(tmp_path / "no" / "t.csv"), {}))
    if seen["missing folder"]:
        seen["missing folder"] = (seen["missing folder"][0], seen["missing folder"][1].replace(str(tmp_path), ""))

    class FromTags(boring_model_class(L)):
        def __init__(self, lr: float = 0.1):
            super().__init__(lr=lr)
            self.save_hyperparameters()

    trainer = _trainer(L, tmp_path / "fit", max_steps=1, limit_val_batches=0)
    trainer.fit(FromTags())
    trainer.save_checkpoint(str(tmp_path / "m.ckpt"))
    saving.save_hparams_to_tags_csv(str(tmp_path / "lr.csv"), {"lr": 0.25})
    seen["hparams_file csv"] = FromTags.load_from_checkpoint(str(tmp_path / "m.ckpt"),
                                                             hparams_file=str(tmp_path / "lr.csv")).lr
    seen["hparams_file txt"] = outcome(lambda: FromTags.load_from_checkpoint(str(tmp_path / "m.ckpt"),
                                                                             hparams_file=str(tmp_path / "x.txt")))
    return seen


def test_hparams_files_as_lightning(PL, TL, tmp_path):
    lightning = _hparams_files(PL, tmp_path / "pl")
    assert lightning["yaml dict"]["switch"] == "first" and lightning["csv"]["flag"] is True
    assert lightning["missing"] == {} and lightning["hparams_file csv"] == 0.25
    assert _hparams_files(TL, tmp_path / "tl") == lightning


def _from_datasets_collections(L: ModuleType) -> List[Any]:
    from helpers import make_dataset

    def describe(x):
        if isinstance(x, torch.utils.data.DataLoader):
            return ("loader", len(x.dataset), x.batch_size)
        if isinstance(x, dict):
            return {k: describe(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return (type(x).__name__, [describe(v) for v in x])
        return repr(x)

    return [describe(L.LightningDataModule.from_datasets(ds, batch_size=2).train_dataloader())
            for ds in ([1, 2, 3], (make_dataset(4), make_dataset(2)), {"a": [make_dataset(4)], "b": make_dataset(3)})]


def test_from_datasets_nested_collections(PL, TL):
    lightning = _from_datasets_collections(PL)
    assert lightning[0] == ("list", ["1", "2", "3"])  # not datasets: left as they are
    assert _from_datasets_collections(TL) == lightning


def _predict_sampler_epoch(L: ModuleType, tmp_path) -> Tuple[str, str, int, str]:
    import importlib

    from helpers import InputOnlyDataset

    dataset = InputOnlyDataset(8)
    loader = torch.utils.data.DataLoader(
        dataset, sampler=torch.utils.data.DistributedSampler(dataset, num_replicas=1, rank=0), batch_size=2)
    trainer = _trainer(L, tmp_path, limit_predict_batches=1, use_distributed_sampler=False)
    trainer.fit_loop.epoch_progress.current.processed = 2
    trainer.predict(boring_model_class(L)(), loader)
    used = trainer.predict_dataloaders
    wrapper = importlib.import_module(f"{L.__name__}.overrides.distributed")._IndexBatchSamplerWrapper
    return (isinstance(used.batch_sampler, wrapper), type(used.batch_sampler.sampler).__name__,
            used.batch_sampler.sampler.epoch, type(used.sampler).__name__)


def test_predict_loader_sampler_follows_training_epoch(PL, TL, tmp_path):
    lightning = _predict_sampler_epoch(PL, tmp_path)
    assert lightning == (True, "DistributedSampler", 2, "SequentialSampler")
    assert _predict_sampler_epoch(TL, tmp_path) == lightning


def _eval_step_branches_on_logged_value(L: ModuleType, tmp_path) -> Dict[str, Any]:
    """A validation_step whose Python control flow reads a logged tensor (torch.allclose in an ``if``)."""
    BM = boring_model_class(L)

    class Branching(BM):
        def validation_step(self, batch, batch_idx):
            loss = self.loss(batch)
            self.log("val_loss", loss, on_step=True, on_epoch=True)
            if torch.allclose(loss, torch.zeros(())):
                return None
            return loss

    trainer = _trainer(L, tmp_path, limit_train_batches=2, limit_val_batches=2, max_epochs=1, num_sanity_val_steps=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = Branching()
        trainer.fit(model)
        validated = trainer.validate(model, verbose=False)
    return {"logged": {k: float(v) for k, v in trainer.logged_metrics.items()}, "validated": validated,
            "fallback": [str(w.message) for w in caught if type(w.message).__name__ == "CompileWarning"]}


def test_eval_step_branching_on_logged_value_falls_back(PL, TL, tmp_path):
    from helpers import compiled_engine

    lightning = _eval_step_branches_on_logged_value(PL, tmp_path / "pl")
    ours = _eval_step_branches_on_logged_value(TL, tmp_path / "tl")
    fallback = ours.pop("fallback")
    lightning.pop("fallback")
    assert ours["logged"] == pytest.approx(lightning["logged"], rel=1e-6)
    assert ours["validated"] == [pytest.approx(lightning["validated"][0], rel=1e-6)]
    if compiled_engine():
        assert len(fallback) == 1 and "validation_step" in fallback[0] and "allclose" in fallback[0]
    else:
        assert fallback == []


def _callback_self_log(L: ModuleType, tmp_path) -> Dict[str, Any]:
    """``self.log`` inside a Callback's hooks (Lightning attaches the module's log/log_dict to callbacks)."""

    class SelfLogging(L.Callback):
        def on_train_start(self, trainer, pl_module):
            self.log("on_train_start", 1)

        def on_train_epoch_start(self, trainer, pl_module):
            self.log("on_train_epoch_start", 2)

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.log_dict({"on_train_batch_end": 3, "also": 4.5})

        def on_train_epoch_end(self, trainer, pl_module):
            self.log("on_train_epoch_end", 5, prog_bar=True)

        def on_fit_end(self, trainer, pl_module):
            self.fit_end = outcome(lambda: self.log("on_fit_end", 6))

    callback = SelfLogging()
    trainer = _trainer(L, tmp_path, limit_train_batches=1, limit_val_batches=1, max_epochs=1, callbacks=[callback])
    trainer.fit(boring_model_class(L)())
    return {"callback_metrics": {k: float(v) for k, v in trainer.callback_metrics.items()},
            "progress_bar": dict(trainer.progress_bar_metrics), "fit_end": callback.fit_end}


def test_callback_self_log_as_lightning(PL, TL, tmp_path):
    lightning = _callback_self_log(PL, tmp_path / "pl")
    assert lightning["callback_metrics"] == {"on_train_start": 1.0, "on_train_epoch_start": 2.0,
                                             "on_train_batch_end": 3.0, "also": 4.5, "on_train_epoch_end": 5.0}
    assert lightning["fit_end"][0] == "MisconfigurationException"
    assert _callback_self_log(TL, tmp_path / "tl") == lightning


def _log_metric_objects(L: ModuleType, tmp_path) -> Dict[str, Any]:
    """Logging a torchmetrics.Metric that is not / is an attribute of the module."""
    torchmetrics = pytest.importorskip("torchmetrics")
    BM = boring_model_class(L)

    def loose_metric():
        metric = torchmetrics.MeanMetric()
        metric.update(1.0)
        return metric

    class NoMetricAttribute(BM):
        def training_step(self, batch, batch_idx):
            self.log("m", loose_metric())
            return self.loss(batch)

    class OtherMetricAttributes(NoMetricAttribute):
        def __init__(self):
            super().__init__()
            self.kept, self.total = torchmetrics.MeanMetric(), torchmetrics.SumMetric()

    class Registered(BM):
        def __init__(self):
            super().__init__()
            self.mean_loss = torchmetrics.MeanMetric()

        def training_step(self, batch, batch_idx):
            loss = self.loss(batch)
            self.mean_loss.update(loss)
            self.log("mean_loss", self.mean_loss, on_step=False, on_epoch=True)
            return loss

    seen: Dict[str, Any] = {}
    for cls in (NoMetricAttribute, OtherMetricAttributes, Registered):
        trainer = _trainer(L, tmp_path / cls.__name__, max_epochs=1, limit_train_batches=2, limit_val_batches=0)
        seen[cls.__name__] = outcome(lambda: trainer.fit(cls())) or {
            k: round(float(v), 6) for k, v in trainer.callback_metrics.items()}
    return seen


def test_log_metric_object_needs_an_attribute_as_lightning(PL, TL, tmp_path):
    lightning = _log_metric_objects(PL, tmp_path / "pl")
    assert lightning["NoMetricAttribute"][0] == "MisconfigurationException"
    assert "['kept', 'total']" in lightning["OtherMetricAttributes"][1]
    assert set(lightning["Registered"]) == {"mean_loss"}
    assert _log_metric_objects(TL, tmp_path / "tl") == lightning


def test_checkpoint_tensors_stay_on_their_device_where_it_exists(TL):
    """load_from_checkpoint's default placement: an unavailable accelerator's tensors come to the CPU,
    any other tensor keeps its device (Lightning's _default_map_location)."""
    from trainer.core.saving import keep_device_if_available

    class Storage:
        def cpu(self):
            return "moved to cpu"

    unavailable = [loc for loc, ok in (("cuda:0", torch.cuda.is_available()),
                                       ("mps", torch.backends.mps.is_available())) if not ok]
    for location in unavailable:
        assert keep_device_if_available(Storage(), location) == "moved to cpu"
    assert keep_device_if_available(Storage(), "cpu") is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_checkpoint_loads_back_on_cuda(PL, TL, tmp_path):
    def device_after_load(L, path):
        model = boring_model_class(L)().cuda()
        torch.save({"state_dict": model.state_dict(), "hyper_parameters": {}}, str(path))
        return str(type(model).load_from_checkpoint(str(path)).device)

    lightning = device_after_load(PL, tmp_path / "pl.ckpt")
    assert lightning.startswith("cuda")
    assert device_after_load(TL, tmp_path / "tl.ckpt") == lightning


def _predict_pulling_batches(L: ModuleType, tmp_path) -> Dict[str, Any]:
    """``predict_step(self, dataloader_iter)``: the step takes (batch, batch_idx, dataloader_idx) itself."""

    class Pulling(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.starts, self.steps, self.ends = [], [], []

        def on_predict_batch_start(self, batch, batch_idx, dataloader_idx):
            self.starts.append((batch, batch_idx, dataloader_idx))

        def predict_step(self, dataloader_iter):
            batch, batch_idx, dataloader_idx = next(dataloader_iter)
            self.steps.append((batch, batch_idx, dataloader_idx))
            return batch * 10

        def on_predict_batch_end(self, outputs, batch, batch_idx, dataloader_idx):
            self.ends.append((outputs, batch, batch_idx, dataloader_idx))

    model = Pulling()
    trainer = _trainer(L, tmp_path, limit_predict_batches=3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        predictions = trainer.predict(model, {"a": [0, 1], "b": [2, 3, 4, 5]})
    return {"starts": model.starts, "steps": model.steps, "ends": model.ends, "predictions": predictions,
            "warned": any("Found `dataloader_iter` argument in the `predict_step`" in str(w.message) for w in caught)}


def test_predict_step_pulling_batches_as_lightning(PL, TL, tmp_path):
    lightning = _predict_pulling_batches(PL, tmp_path / "pl")
    assert lightning["starts"][0] == (None, 0, 0) and lightning["steps"][-1] == (4, 2, 1)
    assert lightning["predictions"] == [[0, 10], [20, 30, 40]] and lightning["warned"]
    assert _predict_pulling_batches(TL, tmp_path / "tl") == lightning


def _predict_dataloader_idx_checks(L: ModuleType, tmp_path) -> Dict[str, Any]:
    BM = boring_model_class(L)

    class TwoLoaders(BM):
        def predict_dataloader(self):
            return [super().predict_dataloader(), super().predict_dataloader()]

    cases = {
        "one loader, required idx": type("RequiredIdx", (BM,), {
            "predict_step": lambda self, batch, batch_idx, dataloader_idx: None}),
        "one loader, defaulted idx": type("DefaultIdx", (BM,), {
            "predict_step": lambda self, batch, batch_idx, dataloader_idx=0: None}),
        "one loader, idx in batch start": type("StartIdx", (BM,), {
            "on_predict_batch_start": lambda self, batch, batch_idx, dataloader_idx: None}),
        "two loaders, no idx": type("NoIdx", (TwoLoaders,), {"predict_step": lambda self, batch, batch_idx: None}),
        "two loaders, *args": type("StarArgs", (TwoLoaders,), {
            "predict_step": lambda self, batch, batch_idx, *_: None}),
        "two loaders, **kwargs": type("StarKwargs", (TwoLoaders,), {
            "predict_step": lambda self, batch, batch_idx, **_: None}),
        "two loaders, batch end without idx": type("EndNoIdx", (TwoLoaders,), {
            "predict_step": lambda self, batch, batch_idx, dataloader_idx=0: None,
            "on_predict_batch_end": lambda self, outputs, batch, batch_idx: None}),
    }
    seen = {}
    for case, cls in cases.items():
        trainer = _trainer(L, tmp_path, limit_predict_batches=1)
        seen[case] = outcome(lambda: trainer.predict(cls()))
    return seen


def test_predict_dataloader_idx_checks_as_lightning(PL, TL, tmp_path):
    lightning = _predict_dataloader_idx_checks(PL, tmp_path)
    assert lightning["one loader, defaulted idx"] is None and lightning["two loaders, *args"] is None
    assert lightning["two loaders, no idx"][0] == "RuntimeError"
    assert _predict_dataloader_idx_checks(TL, tmp_path) == lightning


def test_is_picklable_at_lightnings_path(PL, TL):
    import importlib

    def answers(L):
        is_picklable = importlib.import_module(f"{L.__name__}.utilities").is_picklable
        return [is_picklable(x) for x in ({"a": 1}, lambda x: x, torch.zeros(2), open)]

    lightning = answers(PL)
    assert lightning == [True, False, True, True]
    assert answers(TL) == lightning


@pytest.mark.parametrize("trainer_kw, clip_kw", [
    (dict(gradient_clip_val=1e-4), dict(gradient_clip_val=0.01)),
    (dict(gradient_clip_algorithm="norm"), dict(gradient_clip_algorithm="foo")),  # the conflict wins
    (dict(), dict(gradient_clip_algorithm="foo")),
    (dict(), dict(gradient_clip_val="x")),
    (dict(), dict(gradient_clip_val=0.5, gradient_clip_algorithm="VALUE")),
])
def test_clip_gradients_errors_as_lightning(PL, TL, tmp_path, trainer_kw, clip_kw):
    def run(L):
        class Clipping(boring_model_class(L)):
            def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
                self.clip_gradients(optimizer, **clip_kw)

        trainer = _trainer(L, tmp_path, max_epochs=1, limit_train_batches=1, limit_val_batches=0, **trainer_kw)
        return outcome(lambda: trainer.fit(Clipping()))

    assert run(TL) == run(PL)
