"""CSVLogger / TensorBoardLogger: layout, versions, file contents, compared with pytorch-lightning's loggers."""
from __future__ import annotations

import os
from argparse import Namespace

import pytest
import pytorch_lightning.loggers as pl_loggers  # noqa: E402  (test extra: a missing oracle fails)
import torch

from trainer.loggers import CSVLogger, Logger, TensorBoardLogger, default_logger
from trainer.loggers import utilities as U


def _drive(logger):
    logger.log_hyperparams({"lr": 0.1, "layers": 2, "name": "mlp", "nested": {"a": 1}})
    logger.log_metrics({"train_loss": torch.tensor(1.5), "epoch": 0}, step=0)
    logger.log_metrics({"train_loss": 1.25, "epoch": 0}, step=1)
    logger.save()
    logger.log_metrics({"val_loss": torch.tensor(2.0), "val_acc": 0.5, "epoch": 0}, step=1)  # new keys: rewrite
    logger.log_metrics({"train_loss": 1.0, "epoch": 1}, step=2)
    logger.finalize("success")


def _read(path):
    with open(path) as f:
        return f.read()


def test_csv_parity_with_lightning(tmp_path):
    ours = CSVLogger(str(tmp_path / "ours"), name="exp", prefix="", flush_logs_every_n_steps=2)
    theirs = pl_loggers.CSVLogger(str(tmp_path / "pl"), name="exp", prefix="", flush_logs_every_n_steps=2)
    _drive(ours)
    _drive(theirs)
    assert ours.version == theirs.version == 0
    assert os.path.relpath(ours.log_dir, tmp_path / "ours") == os.path.relpath(theirs.log_dir, tmp_path / "pl")
    assert sorted(os.listdir(ours.log_dir)) == sorted(os.listdir(theirs.log_dir)) == ["hparams.yaml", "metrics.csv"]
    assert _read(os.path.join(ours.log_dir, "metrics.csv")) == _read(os.path.join(theirs.log_dir, "metrics.csv"))
    assert _read(os.path.join(ours.log_dir, "hparams.yaml")) == _read(os.path.join(theirs.log_dir, "hparams.yaml"))
    header = _read(os.path.join(ours.log_dir, "metrics.csv")).splitlines()[0]
    assert header == "epoch,step,train_loss,val_acc,val_loss"


def test_csv_prefix_and_step_none(tmp_path):
    for cls, sub in ((CSVLogger, "ours"), (pl_loggers.CSVLogger, "pl")):
        logger = cls(str(tmp_path / sub), prefix="fold1")
        logger.log_metrics({"a": 1.0})
        logger.log_metrics({"a": 2.0})
        logger.finalize("success")
    assert _read(tmp_path / "ours/lightning_logs/version_0/metrics.csv") == _read(
        tmp_path / "pl/lightning_logs/version_0/metrics.csv"
    )
    assert _read(tmp_path / "ours/lightning_logs/version_0/metrics.csv").splitlines()[0] == "fold1-a,step"


def test_versions_and_dirs(tmp_path):
    root = str(tmp_path)
    for v in (0, 1, 5):
        os.makedirs(os.path.join(root, "lightning_logs", f"version_{v}"))
    os.makedirs(os.path.join(root, "lightning_logs", "version_x"))
    open(os.path.join(root, "lightning_logs", "version_9"), "w").close()  # a file, not a folder
    for cls in (CSVLogger, TensorBoardLogger, pl_loggers.CSVLogger, pl_loggers.TensorBoardLogger):
        logger = cls(root)
        assert logger.version == 6, cls
        assert logger.name == "lightning_logs"
        assert logger.save_dir == root
        assert logger.root_dir == os.path.join(root, "lightning_logs")
        assert logger.log_dir == os.path.join(root, "lightning_logs", "version_6")
    for ours, theirs in (
        (CSVLogger(root, name=None, version="abc"), pl_loggers.CSVLogger(root, name=None, version="abc")),
        (TensorBoardLogger(root, name="", version=3, sub_dir="sub"), pl_loggers.TensorBoardLogger(root, name="", version=3, sub_dir="sub")),  # noqa: E501
    ):
        assert (ours.name, ours.version, ours.root_dir, ours.log_dir) == (theirs.name, theirs.version, theirs.root_dir, theirs.log_dir)  # noqa: E501


def test_csv_finalize_without_logging_creates_nothing(tmp_path):
    CSVLogger(str(tmp_path)).finalize("success")
    assert os.listdir(tmp_path) == []


def test_csv_existing_dir_warns_and_replaces_metrics(tmp_path):
    first = CSVLogger(str(tmp_path), version=0)
    first.log_metrics({"a": 1.0}, step=0)
    first.save()
    second = CSVLogger(str(tmp_path), version=0)
    with pytest.warns(UserWarning, match="exists and is not empty"):
        second.log_metrics({"b": 2.0}, step=0)
    second.save()
    assert _read(os.path.join(second.log_dir, "metrics.csv")).splitlines() == ["b,step", "2.0,0"]


def test_hparams_yaml_is_written_atomically(tmp_path, monkeypatch):
    logger = CSVLogger(str(tmp_path))
    logger.log_hyperparams(Namespace(lr=0.5))
    path = os.path.join(logger.log_dir, "hparams.yaml")
    assert _read(path) == "lr: 0.5\n"

    import yaml

    real_dump = yaml.dump

    def failing_dump(data, stream=None, **kw):
        if stream is not None:
            stream.write("lr: 0.")  # a partial write, then a crash
            raise OSError("disk full")
        return real_dump(data, **kw)

    monkeypatch.setattr(yaml, "dump", failing_dump)
    with pytest.raises(OSError):
        logger.log_hyperparams({"lr": 0.7})
    monkeypatch.undo()
    assert _read(path) == "lr: 0.5\n"  # the old file is intact
    assert sorted(os.listdir(logger.log_dir)) == ["hparams.yaml"]  # no temp file left behind


def test_hparams_skips_undumpable(tmp_path):
    class Weird:
        def __reduce_ex__(self, protocol):
            raise TypeError("no")

    with pytest.warns(UserWarning, match="Skipping 'w' parameter"):
        U.save_hparams_to_yaml(str(tmp_path / "h.yaml"), {"w": Weird(), "ok": 1})
    assert _read(tmp_path / "h.yaml") == "ok: 1\n"


def _scalars(log_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(log_dir)
    acc.Reload()
    return {tag: [(e.step, round(e.value, 6)) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tensorboard_parity_with_lightning(tmp_path):
    import tensorboard  # noqa: F401  (test extra: a missing package fails)
    ours = TensorBoardLogger(str(tmp_path / "ours"), prefix="p")
    theirs = pl_loggers.TensorBoardLogger(str(tmp_path / "pl"), prefix="p")
    for logger in (ours, theirs):
        _drive(logger)
        logger.log_metrics({"grouped": {"a": 1.0, "b": 2.0}}, step=3)
        logger.finalize("success")
    assert ours.version == theirs.version == 0
    assert _read(os.path.join(ours.log_dir, "hparams.yaml")) == _read(os.path.join(theirs.log_dir, "hparams.yaml"))
    assert _scalars(ours.log_dir) == _scalars(theirs.log_dir)
    assert _scalars(ours.log_dir)["p-hp_metric"] == [(0, -1.0)]
    files_ours = sorted(f.split(".")[0] for f in os.listdir(ours.log_dir))
    files_theirs = sorted(f.split(".")[0] for f in os.listdir(theirs.log_dir))
    assert files_ours == files_theirs  # event file(s), add_scalars sub-folders, hparams.yaml


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_tensorboard_no_default_hp_metric_and_graph(tmp_path):
    import tensorboard  # noqa: F401  (test extra: a missing package fails)
    logger = TensorBoardLogger(str(tmp_path), default_hp_metric=False, log_graph=True)
    logger.log_hyperparams({"a": 1})
    model = torch.nn.Linear(3, 2)
    with pytest.warns(UserWarning, match="Could not log computational graph"):
        logger.log_graph(model)
    logger.log_graph(model, torch.zeros(1, 3))
    logger.finalize("success")
    assert "hp_metric" not in _scalars(logger.log_dir)
    import pickle

    assert pickle.loads(pickle.dumps(logger))._experiment is None


def test_tensorboard_bad_value(tmp_path):
    import tensorboard  # noqa: F401  (test extra: a missing package fails)
    logger = TensorBoardLogger(str(tmp_path))
    with pytest.raises(ValueError, match="you tried to log"):
        logger.log_metrics({"x": "str"}, step=0)


def test_default_logger(tmp_path, monkeypatch):
    import trainer.loggers as loggers

    logger = default_logger(str(tmp_path))
    assert isinstance(logger, TensorBoardLogger) and logger.name == "lightning_logs"
    monkeypatch.setenv("SLURM_JOB_ID", "1234")
    monkeypatch.setenv("SLURM_JOB_NAME", "train")
    assert default_logger(str(tmp_path)).version == 1234
    monkeypatch.setenv("SLURM_JOB_NAME", "bash")
    assert default_logger(str(tmp_path)).version == 0
    monkeypatch.setattr(loggers, "_TENSORBOARD_AVAILABLE", False)
    with pytest.warns(UserWarning, match="CSVLogger"):
        logger = default_logger(str(tmp_path))
    assert isinstance(logger, CSVLogger) and logger.name == "lightning_logs"


def test_logger_base_is_abstract_and_custom_logger_works():
    with pytest.raises(TypeError):
        Logger()

    class Mine(Logger):
        name = "mine"
        version = 1

        def log_metrics(self, metrics, step=None):
            self.last = (metrics, step)

        def log_hyperparams(self, params, *args, **kwargs):
            pass

    m = Mine()
    m.experiment = object()  # plain attribute in the base, so assignment works
    m.log_metrics({"a": 1}, 3)
    assert m.last == ({"a": 1}, 3)
    assert m.save_dir is None and m.log_dir is None and m.root_dir is None
    m.finalize("success")
    m.after_save_checkpoint(None)


def test_rank_zero_only(monkeypatch):
    calls = []

    @U.rank_zero_only
    def f(x):
        calls.append(x)
        return x

    monkeypatch.setattr(U.rank_zero_only, "rank", 1)
    assert f(1) is None and calls == []
    monkeypatch.setattr(U.rank_zero_only, "rank", 0)
    assert f(2) == 2 and calls == [2]
    for env, expected in (({"RANK": "3", "LOCAL_RANK": "1"}, 3), ({"LOCAL_RANK": "2"}, 2), ({}, 0)):
        for key in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
            monkeypatch.delenv(key, raising=False)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        assert U._rank_from_env() == expected


def test_flatten_and_sanitize_match_lightning():
    from lightning_fabric.utilities.logger import _flatten_dict, _sanitize_params

    params = {"a": {"b": 1, "c": [{"d": 2}, {"e": 3}]}, "l": [1, 2], "ns": Namespace(x=1), "t": torch.nn.ReLU}
    assert U._flatten_dict(params) == _flatten_dict(params)
    assert U._sanitize_params(U._flatten_dict(params)) == _sanitize_params(_flatten_dict(params))
