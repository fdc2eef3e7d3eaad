"""ModelCheckpoint: configuration errors, naming, top-k bookkeeping, save-before-delete, state dict, and
side-by-side parity with pytorch-lightning's ModelCheckpoint driven through the same fit sequence."""
from __future__ import annotations

import os
from datetime import timedelta

import pytest
import pytorch_lightning.callbacks as pl_callbacks  # noqa: E402  (test extra: a missing oracle fails)
import torch

from trainer.callbacks import ModelCheckpoint
from trainer.exceptions import MisconfigurationException
from trainer.loggers import CSVLogger

VAL_LOSS = [3.0, 1.0, 2.0, 0.5]
VAL_ACC = [0.1, 0.5, 0.4, 0.9]
METRICS = [{"val_loss": a, "val_acc": b} for a, b in zip(VAL_LOSS, VAL_ACC)]


# ----------------------------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(save_top_k=-2), "save_top_k=-2"),
        (dict(every_n_train_steps=-1), "every_n_train_steps=-1"),
        (dict(every_n_epochs=-1), "every_n_epochs=-1"),
        (dict(every_n_epochs=2, every_n_train_steps=3), "mutually exclusive"),
        (dict(every_n_train_steps=3, train_time_interval=timedelta(seconds=1)), "mutually exclusive"),
        (dict(save_top_k=3), r"save_top_k=3, monitor=None"),
        (dict(mode="avg"), "`mode` can be min, max but got avg"),
    ],
)
def test_misconfiguration_matches_lightning(kwargs, match):
    from pytorch_lightning.utilities.exceptions import MisconfigurationException as PLMisconf

    with pytest.raises(MisconfigurationException, match=match) as ours:
        ModelCheckpoint(**kwargs)
    with pytest.raises(PLMisconf) as theirs:
        pl_callbacks.ModelCheckpoint(**kwargs)
    assert str(ours.value) == str(theirs.value)
    assert isinstance(ours.value, ValueError)


def test_defaults_and_state_key():
    cb = ModelCheckpoint(monitor="val_loss")
    theirs = pl_callbacks.ModelCheckpoint(monitor="val_loss")
    assert cb.state_key == theirs.state_key
    assert cb.state_key == (
        "ModelCheckpoint{'monitor': 'val_loss', 'mode': 'min', 'every_n_train_steps': 0, 'every_n_epochs': 1,"
        " 'train_time_interval': None}"
    )
    assert ModelCheckpoint(every_n_train_steps=5).state_key == pl_callbacks.ModelCheckpoint(every_n_train_steps=5).state_key
    assert (cb.CHECKPOINT_NAME_LAST, cb.FILE_EXTENSION, cb.CHECKPOINT_JOIN_CHAR, cb.STARTING_VERSION) == ("last", ".ckpt", "-", 1)
    assert cb.save_top_k == 1 and cb.every_n_epochs == 1 and cb.best_model_path == "" and cb.best_model_score is None
    assert set(cb.state_dict()) == set(theirs.state_dict())


@pytest.mark.parametrize(
    "filename, metrics, auto, expected",
    [
        (None, {"epoch": 2, "step": 30}, True, "epoch=2-step=30.ckpt"),
        ("{epoch}-{val_loss:.2f}", {"epoch": 1, "val_loss": torch.tensor(0.12345)}, True, "epoch=1-val_loss=0.12.ckpt"),
        ("{epoch:03d}", {"epoch": 7}, True, "epoch=007.ckpt"),
        ("{epoch}-{missing}", {"epoch": 1}, True, "epoch=1-missing=0.ckpt"),
        ("ep{epoch:02d}-{val/acc:.1f}", {"epoch": 3, "val/acc": torch.tensor(0.97)}, False, "ep03-1.0.ckpt"),
        ("{val_loss}-{val_loss_2}", {"val_loss": 1, "val_loss_2": 2}, True, "val_loss=1-val_loss_2=2.ckpt"),
        ("plain", {}, True, "plain.ckpt"),
    ],
)
def test_format_checkpoint_name_matches_lightning(filename, metrics, auto, expected):
    ours = ModelCheckpoint(filename=filename, auto_insert_metric_name=auto)
    theirs = pl_callbacks.ModelCheckpoint(filename=filename, auto_insert_metric_name=auto)
    assert ours.format_checkpoint_name(dict(metrics)) == expected
    assert theirs.format_checkpoint_name(dict(metrics)) == expected
    assert ours.format_checkpoint_name(dict(metrics), ver=3) == theirs.format_checkpoint_name(dict(metrics), ver=3)
    assert ours.format_checkpoint_name({}, "last", prefix="pre") == theirs.format_checkpoint_name({}, "last", prefix="pre")


# ----------------------------------------------------------------------------------------------- dirpath


def test_dirpath_resolution(tmp_path, fake_trainer):
    # no logger: default_root_dir/checkpoints
    t = fake_trainer(tmp_path)
    cb = ModelCheckpoint()
    cb.setup(t, None, "fit")
    assert cb.dirpath == os.path.join(str(tmp_path), "checkpoints")

    # first logger: save_dir/name/version_N/checkpoints
    logger = CSVLogger(str(tmp_path / "logs"), name="exp", version=4)
    t = fake_trainer(tmp_path, loggers=[logger])
    cb = ModelCheckpoint()
    cb.setup(t, None, "fit")
    assert cb.dirpath == os.path.join(str(tmp_path / "logs"), "exp", "version_4", "checkpoints")

    # string version is used verbatim
    t = fake_trainer(tmp_path, loggers=[CSVLogger(str(tmp_path), name="n", version="run_a")])
    cb = ModelCheckpoint()
    cb.setup(t, None, "fit")
    assert cb.dirpath.endswith(os.path.join("n", "run_a", "checkpoints"))

    # explicit dirpath wins and is made absolute
    cb = ModelCheckpoint(dirpath="rel/dir")
    cb.setup(t, None, "fit")
    assert cb.dirpath == os.path.realpath("rel/dir")


def test_warns_when_dir_not_empty(tmp_path, fake_trainer):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "old.ckpt").write_text("x")
    with pytest.warns(UserWarning, match="exists and is not empty"):
        ModelCheckpoint().setup(fake_trainer(tmp_path), None, "fit")


# ----------------------------------------------------------------------------------------------- parity


def _relative(cb, trainer):
    d = cb.dirpath

    def rel(p):
        return os.path.relpath(p, d) if p else p

    files = sorted(os.path.relpath(os.path.join(r, f), d) for r, _, fs in os.walk(d) for f in fs) if os.path.isdir(d) else []
    score = None if cb.best_model_score is None else float(cb.best_model_score)
    return dict(
        files=files,
        saved=[rel(p) for p in trainer.saved],
        best_model_path=rel(cb.best_model_path),
        best_model_score=score,
        best_k_models={rel(k): float(v) for k, v in cb.best_k_models.items()},
        kth_best_model_path=rel(cb.kth_best_model_path),
        kth_value=float(cb.kth_value),
        last_model_path=rel(cb.last_model_path),
        links=sorted(f for f in files if os.path.islink(os.path.join(d, f))),
    )


PARITY_CASES = {
    "default": dict(),
    "monitor_top2": dict(monitor="val_loss", save_top_k=2),
    "monitor_max_last_template": dict(monitor="val_acc", mode="max", filename="{epoch}-{val_acc:.2f}", save_last=True),
    "top_all": dict(monitor="val_loss", save_top_k=-1),
    "top0_last": dict(monitor="val_loss", save_top_k=0, save_last=True),
    "every_3_steps_last": dict(every_n_train_steps=3, save_last=True),
    "every_2_steps_monitor": dict(every_n_train_steps=2, monitor="val_loss", save_top_k=2),
    "link_last": dict(monitor="val_loss", save_last="link"),
    "version_counter": dict(filename="ckpt", monitor="val_loss", save_top_k=-1),
    "no_version_counter": dict(filename="ckpt", monitor="val_loss", save_top_k=-1, enable_version_counter=False),
    "train_epoch_end": dict(monitor="val_loss", save_on_train_epoch_end=True, save_top_k=2),
    "every_2_epochs": dict(every_n_epochs=2, monitor="val_acc", mode="max"),
    "no_auto_name": dict(filename="e{epoch:02d}-{val_loss:.1f}", auto_insert_metric_name=False, monitor="val_loss"),
    # trainer settings that move the save from train-epoch end to validation end
    "val_check_half": (dict(monitor="val_loss", save_top_k=2), dict(val_check_interval=0.5)),
    "check_val_every_2": (dict(monitor="val_loss", save_last=True), dict(check_val_every_n_epoch=2)),
    "steps_deferred_to_val": (dict(every_n_train_steps=3, monitor="val_loss"), dict(val_check_interval=0.5)),
}


@pytest.mark.parametrize("case", sorted(PARITY_CASES))
def test_fit_sequence_parity_with_lightning(case, tmp_path, fake_trainer, drive_fit):
    kwargs, trainer_kwargs = PARITY_CASES[case] if isinstance(PARITY_CASES[case], tuple) else (PARITY_CASES[case], {})
    results = []
    for name, cls in (("ours", ModelCheckpoint), ("lightning", pl_callbacks.ModelCheckpoint)):
        trainer = fake_trainer(tmp_path / name, **trainer_kwargs)
        cb = cls(**kwargs)
        drive_fit(trainer, cb, METRICS, batches=3)
        results.append(_relative(cb, trainer))
    assert results[0] == results[1]


def test_nan_and_no_validation_parity(tmp_path, fake_trainer, drive_fit):
    metrics = [{"loss": 2.0}, {"loss": float("nan")}, {"loss": 1.0}]
    results = []
    for name, cls in (("ours", ModelCheckpoint), ("lightning", pl_callbacks.ModelCheckpoint)):
        trainer = fake_trainer(tmp_path / name, num_val_batches=[0])
        cb = cls(monitor="loss", save_top_k=2)
        drive_fit(trainer, cb, [{}] * 3, batches=2, train_metrics=metrics, validate=False)
        results.append(_relative(cb, trainer))
    assert results[0] == results[1]
    assert results[0]["best_model_score"] == 1.0
    # the NaN epoch ranked worst (as +inf) and was the one displaced by epoch 2
    assert results[0]["files"] == ["epoch=0-step=2.ckpt", "epoch=2-step=6.ckpt"]


# ----------------------------------------------------------------------------------------------- behaviour


def test_best_score_and_top_k_files(tmp_path, fake_trainer, drive_fit):
    trainer = fake_trainer(tmp_path)
    cb = ModelCheckpoint(monitor="val_loss", save_top_k=2, save_last=True)
    drive_fit(trainer, cb, METRICS, batches=2)
    assert float(cb.best_model_score) == 0.5
    assert os.path.basename(cb.best_model_path) == "epoch=3-step=8.ckpt"
    assert sorted(os.listdir(cb.dirpath)) == ["epoch=1-step=4.ckpt", "epoch=3-step=8.ckpt", "last.ckpt"]
    assert os.path.basename(cb.kth_best_model_path) == "epoch=1-step=4.ckpt"
    assert float(cb.current_score) == 0.5
    assert cb.last_model_path == os.path.join(cb.dirpath, "last.ckpt")


def test_old_best_removed_only_after_new_save(tmp_path, fake_trainer, drive_fit):
    """save_top_k=1: when the new best is written, the old best must still exist; it goes afterwards."""
    events = []

    class Recording(type(fake_trainer(tmp_path))):
        def save_checkpoint(self, filepath, weights_only=False):
            events.append(("save", os.path.basename(filepath), sorted(os.listdir(cb.dirpath)) if os.path.isdir(cb.dirpath) else []))  # noqa: E501
            super().save_checkpoint(filepath, weights_only)

    trainer = Recording(tmp_path)
    cb = ModelCheckpoint(monitor="val_loss")
    drive_fit(trainer, cb, [{"val_loss": 2.0}, {"val_loss": 1.0}], batches=1)
    # at the second save, the first checkpoint was still on disk
    assert events[1][1] == "epoch=1-step=2.ckpt"
    assert events[1][2] == ["epoch=0-step=1.ckpt"]
    assert os.listdir(cb.dirpath) == ["epoch=1-step=2.ckpt"]


def test_failed_save_keeps_previous_best(tmp_path, fake_trainer, drive_fit):
    trainer = fake_trainer(tmp_path)
    cb = ModelCheckpoint(monitor="val_loss")
    drive_fit(trainer, cb, [{"val_loss": 2.0}], batches=1)
    first = cb.best_model_path

    def boom(filepath, weights_only=False):
        raise OSError("disk full")

    trainer.save_checkpoint = boom
    trainer.global_step += 1
    trainer.current_epoch = 1
    trainer.callback_metrics["val_loss"] = torch.tensor(1.0)
    with pytest.raises(OSError):
        cb.on_train_epoch_end(trainer, None)
    assert os.path.exists(first)


def test_missing_monitor_raises_after_validation(tmp_path, fake_trainer, drive_fit):
    trainer = fake_trainer(tmp_path)
    cb = ModelCheckpoint(monitor="val_missing")
    with pytest.raises(MisconfigurationException, match=r"`ModelCheckpoint\(monitor='val_missing'\)` could not find"):
        drive_fit(trainer, cb, [{"val_loss": 1.0}], batches=1)


def test_missing_monitor_warns_without_validation(tmp_path, fake_trainer, drive_fit):
    trainer = fake_trainer(tmp_path, num_val_batches=[0])
    cb = ModelCheckpoint(monitor="nope_never_logged")
    with pytest.warns(UserWarning, match="could not find the monitored key"):
        drive_fit(trainer, cb, [{}], batches=1, validate=False)


def test_no_save_outside_fit_or_during_sanity_check(tmp_path, fake_trainer):
    trainer = fake_trainer(tmp_path)
    cb = ModelCheckpoint()
    cb.setup(trainer, None, "fit")
    trainer.global_step = 1
    trainer.sanity_checking = True
    cb.on_validation_end(trainer, None)
    trainer.sanity_checking = False
    trainer.state.fn = "validate"
    cb.on_validation_end(trainer, None)
    assert trainer.saved == []


def test_save_on_exception(tmp_path, fake_trainer):
    trainer = fake_trainer(tmp_path)
    cb = ModelCheckpoint(save_on_exception=True, save_last=True)
    cb.setup(trainer, None, "fit")
    trainer.global_step, trainer.current_epoch = 5, 1
    cb.on_exception(trainer, None, RuntimeError("x"))
    assert sorted(os.listdir(cb.dirpath)) == ["epoch=1-step=5.ckpt", "last.ckpt"]
    # nothing saved when disabled
    trainer2 = fake_trainer(tmp_path / "b")
    cb2 = ModelCheckpoint()
    cb2.setup(trainer2, None, "fit")
    trainer2.global_step = 5
    cb2.on_exception(trainer2, None, RuntimeError("x"))
    assert trainer2.saved == []


def test_train_time_interval(tmp_path, fake_trainer, drive_fit):
    trainer = fake_trainer(tmp_path)
    cb = ModelCheckpoint(train_time_interval=timedelta(seconds=0), save_top_k=-1)
    drive_fit(trainer, cb, [{}], batches=3)
    assert sorted(os.listdir(cb.dirpath)) == ["epoch=0-step=1.ckpt", "epoch=0-step=2.ckpt", "epoch=0-step=3.ckpt"]


def test_resume_does_not_delete_ckpt_path(tmp_path, fake_trainer, drive_fit):
    trainer = fake_trainer(tmp_path)
    cb = ModelCheckpoint(monitor="val_loss")
    drive_fit(trainer, cb, [{"val_loss": 2.0}], batches=1)
    resumed_from = cb.best_model_path
    trainer.ckpt_path = resumed_from
    trainer.global_step, trainer.current_epoch = 2, 1
    trainer.callback_metrics["val_loss"] = torch.tensor(1.0)
    cb.on_train_epoch_end(trainer, None)
    assert cb.best_model_path != resumed_from and os.path.exists(cb.best_model_path)
    assert os.path.exists(resumed_from)


def test_state_dict_roundtrip_and_dirpath_change(tmp_path, fake_trainer, drive_fit):
    trainer = fake_trainer(tmp_path)
    cb = ModelCheckpoint(monitor="val_loss", save_top_k=2, save_last=True)
    drive_fit(trainer, cb, METRICS, batches=1)
    state = cb.state_dict()
    assert list(state) == [
        "monitor", "best_model_score", "best_model_path", "current_score", "dirpath",
        "best_k_models", "kth_best_model_path", "kth_value", "last_model_path",
    ]
    fresh = ModelCheckpoint(monitor="val_loss", save_top_k=2, dirpath=cb.dirpath)
    fresh.load_state_dict(state)
    for key in ("best_model_path", "kth_best_model_path", "last_model_path", "best_k_models"):
        assert getattr(fresh, key) == getattr(cb, key)
    assert float(fresh.best_model_score) == 0.5 and float(fresh.kth_value) == 1.0

    other = ModelCheckpoint(monitor="val_loss", dirpath=str(tmp_path / "elsewhere"))
    with pytest.warns(UserWarning, match="The dirpath has changed"):
        other.load_state_dict(state)
    assert other.best_model_path == cb.best_model_path and other.best_k_models == {}


def test_after_save_checkpoint_called_on_loggers(tmp_path, fake_trainer, drive_fit):
    seen = []

    class Spy(CSVLogger):
        def after_save_checkpoint(self, checkpoint_callback):
            seen.append(checkpoint_callback.last_model_path or checkpoint_callback.best_model_path)

    trainer = fake_trainer(tmp_path, loggers=[Spy(str(tmp_path))])
    drive_fit(trainer, ModelCheckpoint(), [{}, {}], batches=1)
    assert len(seen) == 2


def test_find_last_checkpoints_and_to_yaml(tmp_path, fake_trainer, drive_fit):
    trainer = fake_trainer(tmp_path)
    cb = ModelCheckpoint(monitor="val_loss", save_top_k=2, save_last=True)
    drive_fit(trainer, cb, METRICS[:2], batches=1)
    assert cb._find_last_checkpoints(trainer) == {os.path.join(cb.dirpath, "last.ckpt")}
    cb.to_yaml()
    import yaml

    with open(os.path.join(cb.dirpath, "best_k_models.yaml")) as f:
        assert sorted(yaml.safe_load(f).values()) == [1.0, 3.0]


@pytest.mark.parametrize("val, expected", [("yes", True), ("False", False), ("link", "link")])
def test_save_last_annotation_is_a_type_a_parser_can_use_as_lightning(val, expected):
    """ModelCheckpoint's signature carries real types, as Lightning's (not PEP 563 strings): a CLI parser given
    the ``save_last`` annotation parses booleans and "link" from the command line."""
    from inspect import signature

    from jsonargparse import ArgumentParser

    for cls in (pl_callbacks.ModelCheckpoint, ModelCheckpoint):
        annot = signature(cls).parameters["save_last"].annotation
        parser = ArgumentParser()
        parser.add_argument("--a", type=annot)
        assert parser.parse_args(["--a", val]).a == expected
