"""Lightning's own behaviour as its own tests check it (issue 18): the errors users catch, the state
objects they compare, and copies of callbacks that reference the trainer.

Each test runs the same code under pytorch-lightning 2.6.6 (the oracle: its outcome is asserted
first, so a Lightning upgrade that changes it shows up here) and under `trainer`, and compares:
the exception's class (by name: each framework has its own MisconfigurationException) and that our
message contains Lightning's whole message (ours may add to it, after it).
"""
from __future__ import annotations

import copy
import logging
from types import ModuleType
from typing import Any, Callable, Dict, Optional, Tuple

import pytest
import torch
from helpers import boring_model_class, import_framework, quiet_trainer_kwargs

pytestmark = [pytest.mark.parity, pytest.mark.filterwarnings("ignore::UserWarning")]


def outcome(fn: Callable[[], Any]) -> Optional[Tuple[str, str, Tuple[str, ...]]]:
    """None when ``fn()`` returns; else (exception class name, message, builtin bases that catch it)."""
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - the point is to look at it
        bases = tuple(sorted(c.__name__ for c in type(exc).__mro__ if c.__module__ == "builtins"))
        return type(exc).__name__, str(exc), bases
    return None


def assert_raised_alike(ours, lightning, case: str) -> None:
    assert lightning is not None, f"{case}: Lightning no longer raises (oracle changed?)"
    assert ours is not None, f"{case}: Lightning raises {lightning[0]}: {lightning[1]!r}; `trainer` accepts it"
    assert ours[0] == lightning[0], f"{case}: `trainer` raises {ours[0]} ({ours[1]!r}), Lightning {lightning[0]}"
    assert set(lightning[2]) <= set(ours[2]), f"{case}: `except` on {lightning[2]} misses ours ({ours[2]})"
    assert lightning[1] in ours[1], f"{case}: Lightning's wording {lightning[1]!r} not in ours {ours[1]!r}"


def _trainer(L: ModuleType, tmp_path, **kw) -> Any:
    base = quiet_trainer_kwargs(tmp_path)
    base.update(kw)
    return L.Trainer(**base)


# --------------------------------------------------------------------------------------------
# 1. Errors at Trainer construction
# --------------------------------------------------------------------------------------------

# (case id, constructor kwargs, Lightning's class, a fragment of Lightning's wording)
CONSTRUCTOR_ERRORS = [
    ("max_epochs", dict(max_epochs=-2), "MisconfigurationException", "must be a non-negative integer or -1"),
    ("max_steps", dict(max_steps=-2), "MisconfigurationException", "must be a non-negative integer or -1"),
    ("gradient_clip_val_tuple", dict(gradient_clip_val=(1, 2)), "TypeError", "should be an int or a float"),
    ("gradient_clip_val_str", dict(gradient_clip_val="1.0"), "TypeError", "should be an int or a float"),
    ("gradient_clip_algorithm", dict(gradient_clip_algorithm="norm2"), "MisconfigurationException", "is invalid"),
    ("check_val_every_n_epoch_float", dict(check_val_every_n_epoch=1.5), "MisconfigurationException",
     "should be an integer, found"),
    ("check_val_every_n_epoch_str", dict(check_val_every_n_epoch="2"), "MisconfigurationException",
     "should be an integer, found"),
    ("reload_negative", dict(reload_dataloaders_every_n_epochs=-1), "MisconfigurationException",
     "should be an int >= 0"),
    ("reload_float", dict(reload_dataloaders_every_n_epochs=0.5), "MisconfigurationException",
     "should be an int >= 0"),
    ("fast_dev_run", dict(fast_dev_run=-1), "MisconfigurationException", "should be >= 0"),
    ("float_interval_no_epoch_schedule", dict(val_check_interval=0.5, check_val_every_n_epoch=None),
     "MisconfigurationException", "when `check_val_every_n_epoch=None`"),
    ("float_1_0_interval_no_epoch_schedule", dict(val_check_interval=1.0, check_val_every_n_epoch=None),
     "MisconfigurationException", "when `check_val_every_n_epoch=None`"),
    ("time_interval_three_parts", dict(val_check_interval="00:01:00"), "MisconfigurationException",
     "Invalid time format for `val_check_interval`: '00:01:00'. Expected 'DD:HH:MM:SS'."),
    ("time_interval_not_int", dict(val_check_interval="00:00:0a:00"), "MisconfigurationException",
     "Non-integer component in `val_check_interval` string: '00:00:0a:00'. Use 'DD:HH:MM:SS'."),
    ("time_interval_bad_dict_key", dict(val_check_interval={"minute": 1}), "TypeError", "minute"),
]

_BAREBONES = dict(accelerator="cpu", devices=1)  # not quiet_trainer_kwargs: barebones decides those itself
BAREBONES_ERRORS = [
    dict(enable_checkpointing=True),
    dict(logger=True),
    dict(logger=[]),  # Lightning: anything but None/False
    dict(enable_progress_bar=True),
    dict(enable_model_summary=True),
    dict(log_every_n_steps=1),
    dict(num_sanity_val_steps=2),
    dict(num_sanity_val_steps=-1),
    dict(fast_dev_run=True),
    dict(fast_dev_run=3),
    dict(detect_anomaly=True),
    dict(profiler="simple"),
    # several at once: Lightning names the first in its order of checks
    dict(profiler="simple", enable_checkpointing=True, detect_anomaly=True),
    dict(detect_anomaly=True, fast_dev_run=-1),  # barebones is checked before fast_dev_run's own check
]


@pytest.mark.parametrize("kw, lightning_class, wording", [c[1:] for c in CONSTRUCTOR_ERRORS],
                         ids=[c[0] for c in CONSTRUCTOR_ERRORS])
def test_constructor_error_as_lightning(PL, TL, tmp_path, kw, lightning_class, wording):
    expected = outcome(lambda: _trainer(PL, tmp_path, **kw))
    assert expected is not None and expected[0] == lightning_class and wording in expected[1], expected
    got = outcome(lambda: _trainer(TL, tmp_path, **kw))
    assert_raised_alike(got, expected, repr(kw))
    for name, value in kw.items():  # still names the argument and its value
        assert name in got[1] and (repr(value) in got[1] or str(value) in got[1]), got[1]


@pytest.mark.parametrize("kw", BAREBONES_ERRORS, ids=lambda kw: ",".join(f"{k}={v!r}" for k, v in kw.items()))
def test_barebones_conflict_as_lightning(PL, TL, tmp_path, kw):
    make = lambda L: L.Trainer(barebones=True, default_root_dir=str(tmp_path), **_BAREBONES, **kw)  # noqa: E731
    expected = outcome(lambda: make(PL))
    assert expected is not None and expected[0] == "ValueError" and "barebones mode" in expected[1], expected
    assert_raised_alike(outcome(lambda: make(TL)), expected, repr(kw))


@pytest.mark.parametrize("kw", [
    dict(), dict(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                 log_every_n_steps=0, num_sanity_val_steps=0, fast_dev_run=False, detect_anomaly=False),
    dict(fast_dev_run=0, logger=None),
])
def test_barebones_compatible_arguments_accepted(L, tmp_path, kw):
    trainer = L.Trainer(barebones=True, default_root_dir=str(tmp_path), **_BAREBONES, **kw)
    assert trainer.loggers == [] and trainer.checkpoint_callback is None and trainer.progress_bar_callback is None
    assert trainer.log_every_n_steps == 0 and trainer.num_sanity_val_steps == 0


def test_barebones_logs_what_it_turns_off(TL, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="trainer"):
        TL.Trainer(barebones=True, default_root_dir=str(tmp_path), **_BAREBONES)
    assert "You are running in `Trainer(barebones=True)` mode" in caplog.text
    assert "Profiling: `Trainer(profiler=...)`" in caplog.text


@pytest.mark.parametrize("kw", [dict(max_epochs=1.5), dict(max_steps=2.5), dict(max_steps=None)])
def test_stricter_than_lightning_with_its_wording(PL, TL, tmp_path, kw):
    """Lightning lets these through (a float epoch count; None steps fail later with a bare TypeError);
    `trainer` rejects them at construction, worded as Lightning's check for the same argument."""
    (name, value), = kw.items()
    lightning = outcome(lambda: _trainer(PL, tmp_path, **kw))
    assert lightning is None or lightning[0] == "TypeError"
    got = outcome(lambda: _trainer(TL, tmp_path, **kw))
    assert got is not None and got[0] == "MisconfigurationException", got
    assert f"`{name}` must be a non-negative integer or -1" in got[1] and repr(value) in got[1], got[1]


# --------------------------------------------------------------------------------------------
# 1b. Errors at the call
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fn", ["fit", "validate", "test", "predict"])
def test_entry_point_rejects_non_module(PL, TL, tmp_path, fn):
    expected = outcome(lambda: getattr(_trainer(PL, tmp_path), fn)(object()))
    assert expected is not None and expected[0] == "TypeError" and "model` must be a `LightningModule" in expected[1]
    assert_raised_alike(outcome(lambda: getattr(_trainer(TL, tmp_path), fn)(object())), expected, fn)


@pytest.mark.parametrize("fn", ["validate", "test", "predict"])
def test_entry_point_without_any_model(PL, TL, tmp_path, fn):
    expected = outcome(lambda: getattr(_trainer(PL, tmp_path), fn)())
    assert expected == ("TypeError", f"`Trainer.{fn}()` requires a `LightningModule` when it hasn't been passed in a"
                        " previous run", ("BaseException", "Exception", "TypeError", "object")), expected
    assert_raised_alike(outcome(lambda: getattr(_trainer(TL, tmp_path), fn)()), expected, fn)


def test_module_of_the_other_framework_named(TL, tmp_path):
    PL = import_framework("lightning")
    with pytest.raises(TypeError, match="single import style"):
        _trainer(TL, tmp_path).fit(boring_model_class(PL)())


# --------------------------------------------------------------------------------------------
# 2. State objects
# --------------------------------------------------------------------------------------------


def _state_observations(L: ModuleType, tmp_path) -> Dict[str, Any]:
    trainer = _trainer(L, tmp_path, max_epochs=1, limit_train_batches=2, limit_val_batches=1)
    State = type(trainer.state)
    Status = type(trainer.state.status)
    obs: Dict[str, Any] = {
        "fresh_equal": State() == State(),
        "initial_is_default": trainer.state == State(),
        "repr": repr(State()).replace(L.__name__, "<L>"),
    }
    trainer.fit(boring_model_class(L)())
    Fn = type(trainer.state.fn)
    obs["after_fit"] = trainer.state == State(status=Status.FINISHED, fn=Fn.FITTING, stage=None)
    obs["not_equal_other_fn"] = trainer.state != State(status=Status.FINISHED, fn=Fn.TESTING)
    obs["stopped"] = (trainer.state.stopped, trainer.state.finished, Status.INTERRUPTED.stopped, Status.RUNNING.stopped)
    obs["copy_equal"] = copy.copy(trainer.state) == trainer.state
    return obs


def test_trainer_state_compares_by_value(PL, TL, tmp_path):
    expected = _state_observations(PL, tmp_path / "pl")
    assert expected["fresh_equal"] and expected["after_fit"] and expected["not_equal_other_fn"]
    got = _state_observations(TL, tmp_path / "tl")
    expected.pop("repr"), got.pop("repr")  # enum module paths differ; the shape is checked below
    assert got == expected
    from trainer.trainer import TrainerState

    expected_repr = "TrainerState(status=<TrainerStatus.INITIALIZING: 'initializing'>, fn=None, stage=None)"
    assert repr(TrainerState()) == expected_repr


def test_running_stage_properties(PL, TL):
    from pytorch_lightning.trainer.states import RunningStage as PLStage

    from trainer.trainer import RunningStage as TLStage

    for name in ("TRAINING", "SANITY_CHECKING", "VALIDATING", "TESTING", "PREDICTING"):
        pl, tl = PLStage[name], TLStage[name]
        assert (tl.value, tl.evaluating, tl.dataloader_prefix) == (pl.value, pl.evaluating, pl.dataloader_prefix)


def _scheduler_configs(L: ModuleType, tmp_path) -> Dict[str, Any]:
    class M(boring_model_class(L)):
        def configure_optimizers(self):
            opt = torch.optim.SGD(self.parameters(), lr=0.1)
            step = torch.optim.lr_scheduler.StepLR(opt, step_size=1)
            plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt)
            self.schedulers = (step, plateau)
            return [opt], [{"scheduler": step, "interval": "step", "name": "s"},
                           {"scheduler": plateau, "monitor": "train_loss", "strict": False}]

        def training_step(self, batch, batch_idx):
            loss = super().training_step(batch, batch_idx)
            self.log("train_loss", loss)
            return loss

    model = M()
    trainer = _trainer(L, tmp_path, max_epochs=1, limit_train_batches=2, limit_val_batches=0)
    trainer.fit(model)
    configs = trainer.lr_scheduler_configs
    Config = type(configs[0])
    step, plateau = model.schedulers
    return {
        "equal": configs == [Config(step, name="s", interval="step"),
                             Config(plateau, reduce_on_plateau=True, monitor="train_loss", strict=False)],
        "differs": configs[0] != Config(step, name="s", interval="epoch"),
        "copy_equal": [copy.copy(c) for c in configs] == configs,
        "fields": [sorted(vars(c)) for c in configs],
    }


def test_lr_scheduler_config_compares_by_value(PL, TL, tmp_path):
    expected = _scheduler_configs(PL, tmp_path / "pl")
    assert expected["equal"] and expected["differs"]
    assert _scheduler_configs(TL, tmp_path / "tl") == expected


def _loggers_observations(L: ModuleType, tmp_path) -> Dict[str, Any]:
    trainer = _trainer(L, tmp_path)  # logger=False
    obs: Dict[str, Any] = {"off": (trainer.loggers, trainer.logger)}
    a, b = L.loggers.CSVLogger(str(tmp_path), name="a"), L.loggers.CSVLogger(str(tmp_path), name="b")
    mine = [a, b]
    trainer.loggers = mine
    obs["set_two"] = (trainer.loggers == [a, b], trainer.logger is a, trainer.loggers is mine)
    trainer.loggers = None
    obs["set_none"] = (trainer.loggers, trainer.logger)
    trainer.logger = b
    obs["logger_b"] = (trainer.loggers == [b], trainer.logger is b)
    trainer.loggers = []
    obs["set_empty"] = (trainer.loggers, trainer.logger)
    trainer.logger = a
    trainer.logger = False  # any falsy value clears, as in Lightning
    obs["logger_false"] = (trainer.loggers, trainer.logger)
    trainer.logger = a
    trainer.logger = None
    obs["logger_none"] = (trainer.loggers, trainer.logger)
    return obs


def test_loggers_setter_as_lightning(PL, TL, tmp_path):
    expected = _loggers_observations(PL, tmp_path / "pl")
    assert expected["off"] == ([], None) and expected["set_two"] == (True, True, True)
    assert _loggers_observations(TL, tmp_path / "tl") == expected


def test_default_and_explicit_loggers(L, tmp_path):
    kw = quiet_trainer_kwargs(tmp_path)
    kw.pop("logger")
    assert L.Trainer(logger=False, **kw).loggers == []
    assert len(L.Trainer(logger=True, **kw).loggers) == 1
    csv = L.loggers.CSVLogger(str(tmp_path))
    trainer = L.Trainer(logger=[csv], **kw)
    assert trainer.loggers == [csv] and trainer.logger is csv


def _freeze_observations(L: ModuleType) -> Dict[str, Any]:
    model = boring_model_class(L)()
    frozen = model.freeze()
    obs = {
        "freeze_returns_self": frozen is model,
        "frozen": (model.training, [p.requires_grad for p in model.parameters()]),
    }
    unfrozen = model.unfreeze()
    obs["unfreeze_returns_self"] = unfrozen is model
    obs["unfrozen"] = (model.training, [p.requires_grad for p in model.parameters()])
    obs["chained"] = boring_model_class(L)().freeze().training
    return obs


def test_freeze_unfreeze_as_lightning(PL, TL):
    expected = _freeze_observations(PL)
    assert expected["freeze_returns_self"] and expected["unfreeze_returns_self"]
    assert _freeze_observations(TL) == expected


# --------------------------------------------------------------------------------------------
# 3. Deep copies of callbacks (Lightning's test_callbacks_state_fit_ckpt_path)
# --------------------------------------------------------------------------------------------

_CKPT_ATTRIBUTES = ("best_model_path", "best_model_score", "best_k_models", "kth_best_model_path", "kth_value",
                    "last_model_path")


def _callbacks_state_fit_ckpt_path(L: ModuleType, tmp_path, **extra) -> Dict[str, Any]:
    """Lightning's test: fit, deep-copy ``trainer.callbacks`` (which reference the trainer, its strategy
    and so its wrapped optimizers), resume from last.ckpt, and compare with a deep copy taken by a
    callback in ``on_fit_start`` of the resumed run."""

    class CaptureCallbacksBeforeTraining(L.Callback):
        callbacks: list = []

        def on_fit_start(self, trainer, pl_module):
            self.callbacks = copy.deepcopy(trainer.callbacks)

    capture = CaptureCallbacksBeforeTraining()

    class Model(boring_model_class(L)):
        def validation_step(self, batch, batch_idx):
            loss = self.loss(batch)
            self.log("val_loss", loss)
            return loss

    def trainer_args() -> Dict[str, Any]:
        checkpoint = L.callbacks.ModelCheckpoint(dirpath=str(tmp_path), monitor="val_loss", save_last=True)
        return dict(default_root_dir=str(tmp_path), limit_train_batches=1, limit_val_batches=2, max_epochs=1,
                    logger=False, callbacks=[checkpoint, capture], accelerator="cpu", devices=1,
                    enable_progress_bar=True, enable_model_summary=False, **extra)

    model = Model()
    trainer = L.Trainer(**trainer_args())
    trainer.fit(model)
    before_resume = copy.deepcopy(trainer.callbacks)
    trainer = L.Trainer(**trainer_args())
    trainer.fit(model, ckpt_path=str(tmp_path / "last.ckpt"))
    assert len(before_resume) == len(capture.callbacks)
    obs = {"types": [type(c).__name__ for c in capture.callbacks]}
    for before, after in zip(before_resume, capture.callbacks):
        if isinstance(before, L.callbacks.ModelCheckpoint):
            for attribute in _CKPT_ATTRIBUTES:
                assert getattr(before, attribute) == getattr(after, attribute), attribute
            obs["best_model_score"] = float(after.best_model_score)
            obs["paths"] = [str(getattr(after, a)).replace(str(tmp_path), "<tmp>")
                            for a in ("best_model_path", "last_model_path")]
    # the copies are copies: their trainer is not the live one
    bar = [c for c in capture.callbacks if isinstance(c, L.callbacks.ProgressBar)]
    obs["copied_trainer"] = bool(bar) and bar[0].trainer is not trainer
    return obs


def test_callbacks_state_fit_ckpt_path(PL, TL, tmp_path):
    expected = _callbacks_state_fit_ckpt_path(PL, tmp_path / "pl")
    assert _callbacks_state_fit_ckpt_path(TL, tmp_path / "tl") == expected


def test_callbacks_deepcopy_after_compiled_fit(TL, tmp_path):
    """With the compiled engine on (the default outside the test suite), the callbacks' trainer reaches
    compiled graphs and dynamo guards, which do not copy: copies leave these caches behind."""
    obs = _callbacks_state_fit_ckpt_path(TL, tmp_path, compile=True)
    assert obs["copied_trainer"]


# --------------------------------------------------------------------------------------------
# Time-based val_check_interval (Lightning 2.6: str 'DD:HH:MM:SS', timedelta or a dict of its kwargs)
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("interval, per_epoch", [
    ("00:00:00:00", 4), ({"seconds": 0}, 4), (__import__("datetime").timedelta(0), 4),  # due after every batch
    ("01:00:00:00", 0), ({"days": 1}, 0),  # never due within the run: no validation at all, as in Lightning
])
def test_time_based_val_check_interval(tmp_path, interval, per_epoch):
    """Validation runs whenever the interval has passed since the last one (or the start of training), checked
    after each training batch; the number of validation runs equals Lightning's."""
    counts = {}
    for name in ("lightning", "trainer"):
        L = import_framework(name)

        class Counting(boring_model_class(L)):
            runs = 0

            def on_validation_epoch_end(self):
                Counting.runs += 1

        model = Counting(n=16, batch_size=4)
        trainer = _trainer(L, tmp_path / name, max_epochs=2, num_sanity_val_steps=0, val_check_interval=interval)
        assert trainer._val_check_time_interval == pytest.approx(
            0.0 if per_epoch else 86400.0)  # Lightning's attribute, read by callbacks such as ModelCheckpoint
        trainer.fit(model)
        counts[name] = Counting.runs
    assert counts["lightning"] == 2 * per_epoch
    assert counts["trainer"] == counts["lightning"]
