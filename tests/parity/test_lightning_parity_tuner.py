"""Tuner parity (issue 15): ``Tuner.lr_find``/``scale_batch_size`` and the ``LearningRateFinder``/``BatchSizeFinder``
callbacks give Lightning's results and leave the run as Lightning leaves it.

Each case runs the same script under pytorch-lightning 2.6.6 (the oracle, asserted first) and under `trainer`.
The OOM model raises what a GPU would (``torch.cuda.OutOfMemoryError`` / ``RuntimeError("CUDA out of memory")``)
from its step when the batch is larger than a limit, as Lightning's own tests do.
"""
from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import Any, Dict, List

import pytest
import torch
from helpers import boring_model_class, compiled_engine, datamodule_class, import_framework, quiet_trainer_kwargs

pytestmark = [pytest.mark.parity, pytest.mark.filterwarnings("ignore::UserWarning")]


def _tuner(L: ModuleType) -> Any:
    package = "pytorch_lightning" if L.__name__ == "pytorch_lightning" else "trainer"
    return importlib.import_module(f"{package}.tuner").Tuner


def _oom_model(L: ModuleType, limit: int, adam: bool = False, error: str = "cuda", record: bool = True) -> type:
    """``record``: the steps append their batch size to ``self.seen`` (a Python side effect: the compiled engine
    runs such a step eagerly; the compiled-engine case records nothing)."""
    base = boring_model_class(L)

    class OOMModel(base):
        seen: List[int]

        def _check(self, batch: Any) -> None:
            x = batch[0] if isinstance(batch, (list, tuple)) else batch
            if record:
                self.seen.append(int(x.shape[0]))
            if x.shape[0] > limit:
                if error == "cuda":
                    raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
                raise RuntimeError("CUDA error: out of memory")

        def training_step(self, batch, batch_idx):
            self._check(batch)
            return super().training_step(batch, batch_idx)

        def validation_step(self, batch, batch_idx):
            self._check(batch)
            return super().validation_step(batch, batch_idx)

        def test_step(self, batch, batch_idx):
            self._check(batch)
            return super().test_step(batch, batch_idx)

        def configure_optimizers(self):
            if adam:
                return torch.optim.Adam(self.parameters(), lr=self.lr)
            return super().configure_optimizers()

    return OOMModel


def _new(cls: type, **kw: Any) -> Any:
    model = cls(**kw)
    model.seen = []
    return model


def _snapshot(model: torch.nn.Module) -> Dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _ckpt_files(path: Any) -> List[str]:
    return sorted(f for f in os.listdir(path) if f.endswith(".ckpt"))


# --------------------------------------------------------------------------------------------
# lr_find
# --------------------------------------------------------------------------------------------
def _lr_find_run(name: str, tmp_path: Any, mode: str, max_lr: float, threshold: Any) -> Dict[str, Any]:
    L = import_framework(name)
    model = boring_model_class(L)(lr=0.1, n=64, batch_size=4)
    before = _snapshot(model)
    cb = L.callbacks.Callback()
    trainer = L.Trainer(max_epochs=2, callbacks=[cb], **quiet_trainer_kwargs(tmp_path / name))
    finder = _tuner(L)(trainer).lr_find(model, min_lr=1e-4, max_lr=max_lr, num_training=30, mode=mode,
                                               early_stop_threshold=threshold)
    after = _snapshot(model)
    out = {
        "lrs": finder.results["lr"], "losses": finder.results["loss"], "suggestion": finder.suggestion(),
        "model_lr": model.lr, "global_step": trainer.global_step,
        "weights_restored": all(torch.equal(before[k], after[k]) for k in before),
        "ckpts": _ckpt_files(tmp_path / name), "callbacks_kept": cb in trainer.callbacks,
        "status": trainer.state.status.value, "should_stop": trainer.should_stop,
    }
    trainer.fit(model)  # the real run afterwards: from step 0, with the suggested lr
    out["fit_steps"] = trainer.global_step
    out["fit_weight"] = model.layer.weight.detach().clone()
    return out


@pytest.mark.parametrize("mode, max_lr, threshold", [("exponential", 10.0, 4.0), ("linear", 0.5, None)])
def test_lr_find_matches_lightning(tmp_path, mode, max_lr, threshold):
    pl = _lr_find_run("lightning", tmp_path, mode, max_lr, threshold)
    assert pl["weights_restored"] and pl["global_step"] == 0 and pl["ckpts"] == [] and pl["callbacks_kept"]
    assert pl["model_lr"] == pl["suggestion"] and pl["status"] == "finished" and not pl["should_stop"]
    assert len(pl["lrs"]) == (25 if threshold else 30)  # the exponential run stops early: the loss diverged
    ours = _lr_find_run("trainer", tmp_path, mode, max_lr, threshold)
    assert ours["lrs"] == pytest.approx(pl["lrs"], rel=1e-12)
    assert ours["losses"] == pytest.approx(pl["losses"], rel=1e-5, nan_ok=True)
    assert ours["suggestion"] == pytest.approx(pl["suggestion"], rel=1e-12)
    for key in ("model_lr", "global_step", "weights_restored", "ckpts", "callbacks_kept", "status", "should_stop",
                "fit_steps"):
        assert ours[key] == pytest.approx(pl[key]) if isinstance(pl[key], float) else ours[key] == pl[key], key
    torch.testing.assert_close(ours["fit_weight"], pl["fit_weight"], rtol=1e-5, atol=1e-6)


def test_lr_find_update_attr_false_and_hparams(tmp_path):
    """``update_attr=False`` leaves lr alone; an ``lr`` in hparams only (save_hyperparameters) is found and set."""
    results = {}
    for name in ("lightning", "trainer"):
        L = import_framework(name)

        class HModel(boring_model_class(L)):
            def __init__(self, learning_rate: float = 0.05):
                super().__init__(n=128)
                del self.lr
                self.save_hyperparameters()

            def configure_optimizers(self):
                return torch.optim.SGD(self.parameters(), lr=self.hparams.learning_rate)

        kept, tuned = HModel(), HModel()
        t1 = L.Trainer(max_epochs=1, **quiet_trainer_kwargs(tmp_path / name / "a"))
        f1 = _tuner(L)(t1).lr_find(kept, num_training=12, update_attr=False)
        t2 = L.Trainer(max_epochs=1, **quiet_trainer_kwargs(tmp_path / name / "b"))
        f2 = _tuner(L)(t2).lr_find(tuned, num_training=20, min_lr=1e-4, max_lr=0.5, early_stop_threshold=None)
        results[name] = (kept.hparams.learning_rate, len(f1.results["lr"]), tuned.hparams.learning_rate, f2.suggestion())
    pl, ours = results["lightning"], results["trainer"]
    assert pl[0] == 0.05 and pl[2] == pl[3]
    assert ours[:2] == pl[:2] and ours[2] == pytest.approx(pl[2]) and ours[3] == pytest.approx(pl[3])


def test_lr_finder_and_batch_size_finder_callbacks_inside_fit(tmp_path):
    """Both callbacks in one fit (Adam: its state must be put back too), then training goes on with the found lr
    and batch size: the same hooks, steps, optimizer state and weights as Lightning."""
    results = {}
    for name in ("lightning", "trainer"):
        L = import_framework(name)
        calls: List[Any] = []

        class Recorder(L.Callback):
            def on_sanity_check_start(self, trainer, pl_module):
                calls.append("sanity")

            def on_train_epoch_start(self, trainer, pl_module):
                calls.append(("epoch", trainer.global_step, pl_module.batch_size))

        model = _new(_oom_model(L, limit=8, adam=True, error="runtime"), lr=0.1, n=64, batch_size=4)
        kw = quiet_trainer_kwargs(tmp_path / name)
        kw["logger"] = L.loggers.CSVLogger(str(tmp_path / name))
        lr_cb = L.callbacks.LearningRateFinder(num_training_steps=20, min_lr=1e-4, max_lr=1)
        bs_cb = L.callbacks.BatchSizeFinder(mode="binsearch")
        trainer = L.Trainer(max_epochs=2, callbacks=[lr_cb, bs_cb, Recorder()], **kw)
        trainer.fit(model)
        opt = trainer.optimizers[0]
        results[name] = {
            "lrs": lr_cb.optimal_lr.results["lr"], "suggestion": lr_cb.optimal_lr.suggestion(), "model_lr": model.lr,
            "opt_lr": opt.param_groups[0]["lr"], "bs": bs_cb.optimal_batch_size, "model_bs": model.batch_size,
            "calls": calls, "global_step": trainer.global_step, "seen": model.seen,
            "adam_steps": sorted(float(s["step"]) for s in opt.state.values()),
            "weight": model.layer.weight.detach().clone(), "ckpts": _ckpt_files(tmp_path / name),
            "logged_steps": [row for row in open(os.path.join(trainer.logger.log_dir, "metrics.csv"))]
            if os.path.exists(os.path.join(trainer.logger.log_dir, "metrics.csv")) else [],
        }
    pl, ours = results["lightning"], results["trainer"]
    assert pl["bs"] == pl["model_bs"] == 7 and pl["calls"][0] == "sanity" and pl["ckpts"] == []
    assert pl["model_lr"] == pl["opt_lr"] == pl["suggestion"]
    for key in ("lrs", "bs", "model_bs", "calls", "global_step", "seen", "adam_steps", "ckpts", "logged_steps"):
        assert ours[key] == pl[key], key
    for key in ("suggestion", "model_lr", "opt_lr"):
        assert ours[key] == pytest.approx(pl[key], rel=1e-6), key
    torch.testing.assert_close(ours["weight"], pl["weight"], rtol=1e-5, atol=1e-6)


def test_lr_finder_callback_then_training_restores_adam_state(tmp_path):
    """The finder's trial steps fill Adam's state; the run then trains from the restored (empty) state with the
    suggested lr: Lightning's weights and step counts. Under the compiled engine the step set up before the restore
    is dropped (its optimizer state tensors were replaced) and the training still runs compiled."""
    results = {}
    for name in ("lightning", "trainer"):
        L = import_framework(name)

        class AdamModel(boring_model_class(L)):
            def configure_optimizers(self):
                return torch.optim.Adam(self.parameters(), lr=self.lr)

        model = AdamModel(lr=0.1, n=64, batch_size=4)
        finder = L.callbacks.LearningRateFinder(num_training_steps=12, min_lr=1e-4, max_lr=0.5,
                                                early_stop_threshold=None)
        trainer = L.Trainer(max_epochs=2, callbacks=[finder], **quiet_trainer_kwargs(tmp_path / name))
        trainer.fit(model)
        opt = trainer.optimizers[0]
        results[name] = {
            "lr": model.lr, "global_step": trainer.global_step, "weight": model.layer.weight.detach().clone(),
            "adam_steps": sorted(float(st["step"]) for st in opt.state.values()),
            "report": getattr(trainer, "compile_report", None),
        }
    pl, ours = results["lightning"], results["trainer"]
    assert pl["global_step"] == 32 and pl["adam_steps"] == [32.0, 32.0]
    assert ours["lr"] == pytest.approx(pl["lr"], rel=1e-6)
    assert ours["global_step"] == pl["global_step"] and ours["adam_steps"] == pl["adam_steps"]
    torch.testing.assert_close(ours["weight"], pl["weight"], rtol=1e-5, atol=1e-6)
    if compiled_engine():
        assert ours["report"].mode == "full" and ours["report"].steps_run == 32, str(ours["report"])


# --------------------------------------------------------------------------------------------
# scale_batch_size
# --------------------------------------------------------------------------------------------
def _scale_run(name: str, tmp_path: Any, method: str, mode: str, where: str, error: str = "cuda",
               record: bool = True) -> Dict[str, Any]:
    L = import_framework(name)
    kw = quiet_trainer_kwargs(tmp_path / name / f"{method}-{mode}-{where}")
    trainer = L.Trainer(max_epochs=1, **kw)
    cls = _oom_model(L, limit=5, error=error, record=record)
    datamodule = None
    if where == "model":
        model = _new(cls, n=200, batch_size=1)
    elif where == "hparams":
        class HModel(cls):
            def __init__(self, batch_size: int = 1):
                super().__init__(n=200)
                del self.batch_size
                self.save_hyperparameters()

            def train_dataloader(self):
                from helpers import make_loader

                return make_loader(self.n, self.hparams.batch_size)

            def val_dataloader(self):
                from helpers import make_loader

                return make_loader(self.n // 2, self.hparams.batch_size, seed=1)

            def test_dataloader(self):
                from helpers import make_loader

                return make_loader(self.n // 2, self.hparams.batch_size, seed=2)

        model = _new(HModel)
    else:
        model = _new(cls, n=200, batch_size=1)
        del model.batch_size
        datamodule = datamodule_class(L)(n_train=200, n_val=100, batch_size=1)
    before = _snapshot(model)
    tuner = _tuner(L)(trainer)
    found = tuner.scale_batch_size(model, datamodule=datamodule, method=method, mode=mode, init_val=1)
    holder = datamodule if where == "datamodule" else (model.hparams if where == "hparams" else model)
    value = holder["batch_size"] if isinstance(holder, dict) else holder.batch_size
    after = _snapshot(model)
    return {
        "found": found, "attr": value, "seen": model.seen, "status": trainer.state.status.value,
        "global_step": trainer.global_step, "ckpts": _ckpt_files(kw["default_root_dir"]),
        "weights_restored": all(torch.equal(before[k], after[k]) for k in before),
        "callbacks": [type(c).__name__ for c in trainer.callbacks],
        "compile_report": getattr(trainer, "compile_report", None),
    }


@pytest.mark.parametrize("mode, expected", [("power", 4), ("binsearch", 4)])
@pytest.mark.parametrize("method", ["fit", "validate", "test"])
def test_scale_batch_size_matches_lightning(tmp_path, method, mode, expected):
    pl = _scale_run("lightning", tmp_path, method, mode, "model")
    assert pl["found"] == pl["attr"] == expected and pl["status"] == "finished" and pl["ckpts"] == []
    assert pl["weights_restored"] and pl["global_step"] == 0
    ours = _scale_run("trainer", tmp_path, method, mode, "model")
    for key in ("found", "attr", "seen", "status", "global_step", "ckpts", "weights_restored", "callbacks"):
        assert ours[key] == pl[key], key


@pytest.mark.parametrize("where", ["hparams", "datamodule"])
def test_scale_batch_size_on_hparams_and_datamodule(tmp_path, where):
    pl = _scale_run("lightning", tmp_path, "fit", "binsearch", where, error="runtime")
    assert pl["found"] == pl["attr"] == 4
    ours = _scale_run("trainer", tmp_path, "fit", "binsearch", where, error="runtime")
    for key in ("found", "attr", "seen", "status", "ckpts", "weights_restored"):
        assert ours[key] == pl[key], key


def test_scale_batch_size_compiled_engine_builds_one_graph_per_size(tmp_path):
    """Under the compiled engine each tried batch size is a new graph (a new batch signature), never a recompile:
    power mode doubles 2 -> 64 on a 64-sample dataset (stops there, as Lightning: the size reached the dataset's
    length); every size trained, one graph each."""
    found = {}
    for name in ("lightning", "trainer"):
        L = import_framework(name)
        model = boring_model_class(L)(n=64, batch_size=2)
        trainer = L.Trainer(max_epochs=1, **quiet_trainer_kwargs(tmp_path / name))
        found[name] = (_tuner(L)(trainer).scale_batch_size(model, mode="power"), model.batch_size)
        report = getattr(trainer, "compile_report", None)
    assert found["lightning"] == (64, 64)
    assert found["trainer"] == found["lightning"]
    if not compiled_engine():
        assert report is None
        return
    assert report.mode == "full" and report.recompiles == 0, str(report)
    assert report.graphs_built == 6, str(report)  # 2, 4, 8, 16, 32, 64


def test_scale_batch_size_compiled_engine_after_an_oom(tmp_path):
    """A size that runs out of memory drops the compiled step of that size (the capture saw the step raise);
    the next size is compiled afresh, not run eagerly, and the search gives Lightning's result."""
    pl = _scale_run("lightning", tmp_path, "fit", "binsearch", "model", record=False)
    ours = _scale_run("trainer", tmp_path, "fit", "binsearch", "model", record=False)
    assert ours["found"] == pl["found"] == 4 and ours["weights_restored"] and ours["ckpts"] == []
    report = ours["compile_report"]
    if not compiled_engine():
        assert report is None
        return
    # binsearch: 1, 2, 4 train, 8 and 6 run out of memory, 5 trains: the report covers the trials since the last OOM
    assert report.mode == "full" and report.recompiles == 0 and report.graphs_built == 1, str(report)


# --------------------------------------------------------------------------------------------
# fast_dev_run, errors
# --------------------------------------------------------------------------------------------
def test_fast_dev_run_skips_the_tuner(tmp_path):
    results = {}
    for name in ("lightning", "trainer"):
        L = import_framework(name)
        model = _new(_oom_model(L, limit=100), n=32)
        trainer = L.Trainer(fast_dev_run=True, **quiet_trainer_kwargs(tmp_path / name))
        tuner = _tuner(L)(trainer)
        with pytest.warns(UserWarning) as record:
            lr = tuner.lr_find(model)
            bs = tuner.scale_batch_size(model)
        messages = [str(w.message) for w in record if "Skipping" in str(w.message)]
        results[name] = (lr, bs, messages, model.seen, model.lr, model.batch_size)
    pl, ours = results["lightning"], results["trainer"]
    assert pl[0] is None and pl[1] is None and pl[3] == []
    assert pl[2] == ["Skipping learning rate finder since `fast_dev_run` is enabled.",
                     "Skipping batch size scaler since `fast_dev_run` is enabled."]
    assert ours == pl


def _outcome(fn: Any) -> Any:
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - compared below
        return type(exc).__name__, str(exc)
    return None


def _error_cases(L: ModuleType, tmp_path: Any) -> Dict[str, Any]:
    Model = boring_model_class(L)
    Tuner = _tuner(L)

    def trainer(**kw: Any) -> Any:
        return L.Trainer(max_epochs=1, **quiet_trainer_kwargs(tmp_path), **kw)

    class NoLR(Model):
        def __init__(self):
            super().__init__()
            del self.lr

    class NoBatch(Model):
        def __init__(self):
            super().__init__()
            del self.batch_size

    return {
        "bad method": _outcome(lambda: Tuner(trainer()).scale_batch_size(Model(), method="tune")),
        "lr_find not fit": _outcome(lambda: Tuner(trainer()).lr_find(Model(), method="validate")),
        "dataloaders with fit": _outcome(lambda: Tuner(trainer()).scale_batch_size(Model(), dataloaders=[])),
        "train loaders with test": _outcome(
            lambda: Tuner(trainer()).scale_batch_size(Model(), train_dataloaders=[], method="test")),
        "no lr attribute": _outcome(lambda: Tuner(trainer()).lr_find(NoLR())),
        "wrong attr_name": _outcome(lambda: Tuner(trainer()).lr_find(Model(), attr_name="my_lr")),
        "no batch_size": _outcome(lambda: Tuner(trainer()).scale_batch_size(NoBatch())),
        "loaders passed to fit": _outcome(
            lambda: Tuner(trainer()).scale_batch_size(Model(), train_dataloaders=Model().train_dataloader())),
        "finder already configured": _outcome(
            lambda: Tuner(trainer(callbacks=[L.callbacks.LearningRateFinder()])).lr_find(Model())),
        "bs finder already configured": _outcome(
            lambda: Tuner(trainer(callbacks=[L.callbacks.BatchSizeFinder()])).scale_batch_size(Model())),
        "bad lr mode": _outcome(lambda: L.callbacks.LearningRateFinder(mode="cosine")),
        "bad bs mode": _outcome(lambda: L.callbacks.BatchSizeFinder(mode="triple")),
    }


def test_tuner_errors_match_lightning(tmp_path):
    pl = _error_cases(import_framework("lightning"), tmp_path / "pl")
    assert all(v is not None for v in pl.values()), {k: v for k, v in pl.items() if v is None}
    ours = _error_cases(import_framework("trainer"), tmp_path / "ours")
    for case, expected in pl.items():
        assert ours[case] is not None, f"{case}: Lightning raises {expected}, `trainer` does not"
        assert ours[case][0] == expected[0], f"{case}: {ours[case]} vs Lightning {expected}"
        assert expected[1] in ours[case][1], f"{case}: {ours[case][1]!r} vs Lightning {expected[1]!r}"


def test_plot_without_matplotlib_raises_lightnings_error(tmp_path):
    if importlib.util.find_spec("matplotlib") is not None:
        pytest.skip("matplotlib is installed: plot() draws")
    messages = []
    for name in ("lightning", "trainer"):
        L = import_framework(name)
        trainer = L.Trainer(max_epochs=1, **quiet_trainer_kwargs(tmp_path / name))
        finder = _tuner(L)(trainer).lr_find(boring_model_class(L)(n=32), num_training=5)
        messages.append(_outcome(lambda: finder.plot(suggest=True)))
    assert messages[0] is not None and messages[0][1].startswith("To use the `plot` method")
    assert messages[1] == messages[0]
