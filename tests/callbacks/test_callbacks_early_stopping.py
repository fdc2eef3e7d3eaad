"""EarlyStopping: stopping epoch, counters and messages side by side with pytorch-lightning's."""
from __future__ import annotations

import pytest
import pytorch_lightning.callbacks as pl_callbacks  # noqa: E402  (test extra: a missing oracle fails)
import torch

from trainer.callbacks import EarlyStopping
from trainer.callbacks.early_stopping import EarlyStoppingReason
from trainer.exceptions import MisconfigurationException

CASES = {
    "patience": (dict(monitor="val_loss", patience=2), [3, 2, 2.5, 2.1, 2.2, 1.0]),
    "min_delta": (dict(monitor="val_loss", patience=2, min_delta=0.5), [3, 2.8, 2.6, 2.4, 1.0]),
    "max_mode": (dict(monitor="val_acc", mode="max", patience=1), [0.1, 0.3, 0.2, 0.9]),
    "stopping_threshold": (dict(monitor="val_loss", stopping_threshold=1.5), [3, 2, 1.4, 1.0]),
    "divergence": (dict(monitor="val_loss", divergence_threshold=5.0), [3, 6, 1]),
    "non_finite": (dict(monitor="val_loss"), [3, float("nan"), 1]),
    "non_finite_unchecked": (dict(monitor="val_loss", check_finite=False, patience=5), [3, float("inf"), 1]),
    "never_stops": (dict(monitor="val_loss", patience=3), [5, 4, 3, 2, 1]),
    "check_on_val_end": (dict(monitor="val_loss", patience=1, check_on_train_epoch_end=False), [3, 4, 1]),
}


def _run(cls, kwargs, values, trainer, drive_fit):
    key = kwargs["monitor"]
    cb = cls(**kwargs)
    drive_fit(trainer, cb, [{key: v} for v in values], batches=1)
    return cb


@pytest.mark.parametrize("case", sorted(CASES))
def test_parity_with_lightning(case, tmp_path, fake_trainer, drive_fit):
    kwargs, values = CASES[case]
    got = []
    for cls in (EarlyStopping, pl_callbacks.EarlyStopping):
        trainer = fake_trainer(tmp_path)
        cb = _run(cls, kwargs, values, trainer, drive_fit)
        got.append(
            dict(
                should_stop=trainer.should_stop,
                last_epoch=trainer.current_epoch,
                stopped_epoch=cb.stopped_epoch,
                wait_count=cb.wait_count,
                best_score=float(cb.best_score),
                reason=cb.stopping_reason.name,
                message=cb.stopping_reason_message,
                state=sorted(cb.state_dict()),
            )
        )
    assert got[0] == got[1]


def test_stopping_epoch_and_state(tmp_path, fake_trainer, drive_fit):
    trainer = fake_trainer(tmp_path)
    cb = _run(EarlyStopping, dict(monitor="val_loss", patience=2), [3, 2, 2.5, 2.1, 2.2], trainer, drive_fit)
    assert trainer.should_stop and cb.stopped_epoch == 3 and trainer.current_epoch == 3
    assert cb.stopping_reason == EarlyStoppingReason.PATIENCE_EXHAUSTED
    assert cb.stopping_reason_message == (
        "Monitored metric val_loss did not improve in the last 2 records. Best score: 2.000. Signaling Trainer to stop."
    )
    state = cb.state_dict()
    fresh = EarlyStopping(monitor="val_loss")
    fresh.load_state_dict(state)
    assert (fresh.wait_count, fresh.stopped_epoch, fresh.patience, float(fresh.best_score)) == (2, 3, 2, 2.0)
    assert fresh.stopping_reason == EarlyStoppingReason.PATIENCE_EXHAUSTED


def test_state_key_matches_lightning():
    assert EarlyStopping("val_loss", mode="max").state_key == pl_callbacks.EarlyStopping("val_loss", mode="max").state_key
    assert EarlyStopping("a").state_key == "EarlyStopping{'monitor': 'a', 'mode': 'min'}"


def test_bad_mode():
    with pytest.raises(MisconfigurationException, match="`mode` can be min, max, got avg"):
        EarlyStopping("x", mode="avg")


def test_strict_missing_metric_raises(tmp_path, fake_trainer, drive_fit):
    trainer = fake_trainer(tmp_path)
    with pytest.raises(RuntimeError, match="Early stopping conditioned on metric `nope` which is not available"):
        drive_fit(trainer, EarlyStopping("nope"), [{"val_loss": 1.0}], batches=1)
    trainer = fake_trainer(tmp_path)
    drive_fit(trainer, EarlyStopping("nope", strict=False), [{"val_loss": 1.0}] * 5, batches=1)
    assert not trainer.should_stop


def test_skips_outside_fit_and_sanity_check(tmp_path, fake_trainer):
    trainer = fake_trainer(tmp_path, callback_metrics={"val_loss": torch.tensor(float("nan"))})
    cb = EarlyStopping("val_loss", check_on_train_epoch_end=False)
    cb.setup(trainer, None, "fit")
    trainer.sanity_checking = True
    cb.on_validation_end(trainer, None)
    trainer.sanity_checking = False
    trainer.state.fn = "validate"
    cb.on_validation_end(trainer, None)
    assert not trainer.should_stop


def test_check_on_train_epoch_end_resolution(tmp_path, fake_trainer):
    for attrs, expected in [({}, True), (dict(val_check_interval=0.5), False), (dict(check_val_every_n_epoch=2), False)]:
        cb = EarlyStopping("x")
        cb.setup(fake_trainer(tmp_path, **attrs), None, "fit")
        assert cb._check_on_train_epoch_end is expected
