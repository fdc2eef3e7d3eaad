"""WandbLogger (offline runs) and MLFlowLogger (local file store): a fit with each logger under pytorch-lightning
and under `trainer`, and what each run recorded read back from disk and compared (Lightning's first).

No network: W&B runs offline (``WANDB_MODE=offline``) and are read from their ``run-<id>.wandb`` log; MLflow
writes to a ``file:`` store in the test's tmp dir and is read back with ``MlflowClient``.
"""
from __future__ import annotations

import math
import os
import re
import sys
from types import ModuleType
from typing import Any

import pytest
import torch
from helpers import boring_model_class, import_framework, quiet_trainer_kwargs

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wandb_offline import read_offline_run  # noqa: E402

pytest.importorskip("wandb")
pytest.importorskip("mlflow")
# Both loggers modules are imported now: MLFlowLogger's `tracking_uri` default is read from MLFLOW_TRACKING_URI at
# import (Lightning's), and `mlflow.set_tracking_uri` sets that variable once a run starts.
import_framework("lightning").loggers.MLFlowLogger
import_framework("trainer").loggers.MLFlowLogger

pytestmark = [pytest.mark.parity, pytest.mark.filterwarnings("ignore::UserWarning")]

HPARAMS = {"lr": 0.1, "layers": 2, "name": "mlp", "nested": {"a": 1, "b": [1, 2]}, "act": torch.nn.ReLU}


@pytest.fixture(autouse=True)
def _offline_env(monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb_config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb_cache"))
    # mlflow 3 refuses the file store (maintenance mode) unless asked: Lightning's default store is a file store
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    yield
    import wandb

    if wandb.run is not None:  # Lightning's finalize leaves the run open: close it before the next test
        wandb.finish()


def _logging_model(L: ModuleType) -> Any:
    class LoggingModel(boring_model_class(L)):
        def __init__(self) -> None:
            super().__init__()
            self.save_hyperparameters(HPARAMS)

        def training_step(self, batch, batch_idx):
            loss = super().training_step(batch, batch_idx)
            self.log("train_loss", loss)
            return loss

        def validation_step(self, batch, batch_idx):
            loss = super().validation_step(batch, batch_idx)
            self.log("val_loss", loss)
            return loss

    return LoggingModel()


def _fit(L: ModuleType, root, logger: Any, **kw: Any) -> Any:
    args = quiet_trainer_kwargs(root)
    args.update(logger=logger, max_epochs=2, log_every_n_steps=1, enable_checkpointing=True)
    args.update(kw)
    trainer = L.Trainer(**args)
    trainer.fit(_logging_model(L))
    return trainer


def _close_rows(ours: list, theirs: list) -> None:
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        assert a.keys() == b.keys()
        for key in a:
            if isinstance(b[key], float):
                assert math.isclose(a[key], b[key], rel_tol=1e-6, abs_tol=1e-7), (key, a[key], b[key])
            else:
                assert a[key] == b[key], key


# ------------------------------------------------------------------------------------------- MLflow
def _mlflow_run(logger: Any) -> dict:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"file:{logger.save_dir}")
    run = client.get_run(logger.run_id)
    history = {
        key: [(m.step, m.value) for m in client.get_metric_history(logger.run_id, key)] for key in run.data.metrics
    }

    def artifacts(path=None):
        found = []
        for item in client.list_artifacts(logger.run_id, path):
            found += artifacts(item.path) if item.is_dir else [item.path]
        return found

    return {
        "params": run.data.params,
        "history": history,
        "status": run.info.status,
        "run_name": run.data.tags.get("mlflow.runName"),
        "tags": {k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.")},
        "artifacts": sorted(artifacts()),
    }


def test_mlflow_fit_records_what_lightning_records(tmp_path):
    runs = {}
    for name in ("lightning", "trainer"):
        L = import_framework(name)
        store = tmp_path / name / "mlruns"
        logger = L.loggers.MLFlowLogger(
            experiment_name="exp", run_name="run1", tags={"team": "a"}, save_dir=str(store), log_model=True
        )
        trainer = _fit(L, tmp_path / name, logger)
        assert logger.save_dir == str(store)
        assert trainer.log_dir == str(store)
        assert logger.name == logger.experiment_id and logger.version == logger.run_id
        # Lightning files its checkpoints under save_dir/<experiment id>/<run id>/checkpoints
        assert os.path.isdir(os.path.join(str(store), logger.name, logger.version, "checkpoints"))
        runs[name] = _mlflow_run(logger)

    theirs, ours = runs["lightning"], runs["trainer"]
    assert theirs["status"] == "FINISHED" and theirs["run_name"] == "run1" and theirs["tags"] == {"team": "a"}
    assert "nested/a" in theirs["params"] and "epoch=1-step=8/metadata.yaml" in theirs["artifacts"]
    assert ours["params"] == theirs["params"]
    assert (ours["status"], ours["run_name"], ours["tags"]) == (theirs["status"], theirs["run_name"], theirs["tags"])
    assert ours["artifacts"] == theirs["artifacts"]
    assert ours["history"].keys() == theirs["history"].keys() == {"train_loss", "val_loss", "epoch"}
    for key in theirs["history"]:
        _close_rows([dict(step=s, v=v) for s, v in ours["history"][key]],
                    [dict(step=s, v=v) for s, v in theirs["history"][key]])


def test_mlflow_direct_calls_match_lightning(tmp_path):
    results = {}
    for name in ("lightning", "trainer"):
        L = import_framework(name)
        logger = L.loggers.MLFlowLogger(experiment_name="direct", save_dir=str(tmp_path / name), prefix="fold1")
        with pytest.warns(RuntimeWarning, match=re.escape("Replacing fold1-bad:key! with fold1-badkey.")):
            logger.log_metrics({"bad:key!": 1.0, "ok": torch.tensor(2.0), "text": "dropped"}, step=3)
        logger.log_hyperparams({"long": "x" * 300, **{f"p{i}": i for i in range(150)}})
        logger.finalize("failed")
        results[name] = _mlflow_run(logger)
    theirs, ours = results["lightning"], results["trainer"]
    assert theirs["status"] == "FAILED" and len(theirs["params"]["long"]) == 250
    assert theirs["history"] == {"fold1-badkey": [(3, 1.0)], "fold1-ok": [(3, 2.0)]}
    assert theirs.pop("run_name") and ours.pop("run_name")  # mlflow generates a random name for each
    assert ours == theirs


def test_mlflow_finalize_before_use_starts_no_run(tmp_path):
    from mlflow.tracking import MlflowClient

    layouts = []
    for name in ("lightning", "trainer"):
        store = tmp_path / name
        import_framework(name).loggers.MLFlowLogger(save_dir=str(store)).finalize("success")
        # the client makes the store (with mlflow's "Default" experiment); no experiment or run of the logger's
        assert MlflowClient(f"file:{store}").get_experiment_by_name("lightning_logs") is None
        layouts.append(sorted(os.listdir(store)))
    assert layouts[1] == layouts[0]


def test_mlflow_tracking_uri_and_bad_log_model(tmp_path, monkeypatch):
    from trainer.loggers import MLFlowLogger

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://example.invalid")  # read at import (Lightning's default)
    assert MLFlowLogger(tracking_uri="http://example.invalid").save_dir is None
    assert MLFlowLogger(save_dir=str(tmp_path)).save_dir == str(tmp_path)
    with pytest.raises(ValueError, match="`log_model` must be True, False or 'all', got 'best'"):
        MLFlowLogger(save_dir=str(tmp_path), log_model="best")


# ------------------------------------------------------------------------------------------- W&B
def test_wandb_fit_records_what_lightning_records(tmp_path):
    runs, ids = {}, {}
    for name in ("lightning", "trainer"):
        L = import_framework(name)
        save_dir = tmp_path / name
        logger = L.loggers.WandbLogger(project="proj", save_dir=str(save_dir), log_model="all")
        trainer = _fit(L, save_dir, logger)
        assert (logger.name, logger.save_dir, trainer.log_dir) == ("proj", str(save_dir), str(save_dir))
        ids[name] = logger.version
        assert logger.version == logger.experiment.id
        # checkpoints go to save_dir/<project>/<run id>/checkpoints (Lightning's layout for loggers without log_dir)
        assert os.listdir(save_dir / "proj" / logger.version / "checkpoints") == ["epoch=1-step=8.ckpt"]
        logger.experiment.finish()
        runs[name] = read_offline_run(str(save_dir))

    theirs, ours = runs["lightning"], runs["trainer"]
    assert theirs["config"]["act"] == "ReLU"  # classes are logged by name
    assert theirs["history"] and "trainer/global_step" in theirs["history"][0]
    assert ours["config"] == theirs["config"]
    _close_rows(ours["history"], theirs["history"])
    # one model artifact version per checkpoint written, named after the run
    their_artifacts = [(n.replace(ids["lightning"], "ID"), *rest) for n, *rest in theirs["artifacts"]]
    our_artifacts = [(n.replace(ids["trainer"], "ID"), *rest) for n, *rest in ours["artifacts"]]
    assert [a[0] for a in their_artifacts] == ["model-ID", "model-ID"]
    assert our_artifacts == their_artifacts


def test_wandb_arguments_match_lightning(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_PROJECT", "from_env")
    for name in ("lightning", "trainer"):
        L = import_framework(name)
        logger = L.loggers.WandbLogger(version="abc123", dir=str(tmp_path / "d"), save_dir=None)
        assert (logger.name, logger.version, logger.save_dir) == ("from_env", "abc123", str(tmp_path / "d"))
        logger = L.loggers.WandbLogger(id="x1", save_dir=str(tmp_path), name="display")
        assert (logger.version, logger.save_dir) == ("x1", str(tmp_path))


def test_wandb_offline_with_log_model_raises_like_lightning(tmp_path):
    from pytorch_lightning.loggers import WandbLogger as PLWandbLogger

    from trainer.exceptions import MisconfigurationException
    from trainer.loggers import WandbLogger

    with pytest.raises(Exception) as theirs:
        PLWandbLogger(offline=True, log_model=True)
    with pytest.raises(MisconfigurationException) as ours:
        WandbLogger(offline=True, log_model=True)
    assert type(theirs.value).__name__ == "MisconfigurationException"
    assert str(ours.value) == str(theirs.value)


def test_wandb_media_argument_errors_match_lightning(tmp_path):
    for name in ("lightning", "trainer"):
        L = import_framework(name)
        logger = L.loggers.WandbLogger(save_dir=str(tmp_path / name))
        with pytest.raises(TypeError, match='Expected a list as "images"'):
            logger.log_image("k", images="not a list")
        with pytest.raises(ValueError, match="Expected 2 items but only found 1 for caption"):
            logger.log_image("k", images=[1, 2], caption=["a"])


# ------------------------------------------------------------------------------------------- missing packages
@pytest.mark.parametrize(
    ("module", "cls", "hint"),
    [("trainer.loggers.wandb", "WandbLogger", "pip install wandb"), ("trainer.loggers.mlflow", "MLFlowLogger", "pip install mlflow")],  # noqa: E501
)
def test_missing_package_raises_install_hint(monkeypatch, module, cls, hint):
    import importlib

    mod = importlib.import_module(module)
    flag = "_WANDB_AVAILABLE" if cls == "WandbLogger" else "_MLFLOW_AVAILABLE"
    monkeypatch.setattr(mod, flag, False)
    with pytest.raises(ModuleNotFoundError, match=hint):
        getattr(mod, cls)()
