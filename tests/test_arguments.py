"""``trainer.arguments.TrainerArguments``: the constructor's arguments checked and normalised once, before the
Trainer wires anything (the error cases themselves are in tests/test_bad_input.py and the parity suites)."""
from __future__ import annotations

import inspect
from datetime import timedelta

import pytest

import trainer as L
from trainer.arguments import TrainerArguments
from trainer.exceptions import MisconfigurationException


def _given(**overrides):
    """``Trainer.__init__``'s defaults with ``overrides``, as the constructor passes them."""
    params = inspect.signature(L.Trainer.__init__).parameters
    given = {name: p.default for name, p in params.items() if name != "self"}
    unknown = set(overrides) - set(given)
    assert not unknown, unknown
    return dict(given, **overrides)


def test_every_constructor_argument_is_a_field():
    params = [name for name in inspect.signature(L.Trainer.__init__).parameters if name != "self"]
    fields = list(TrainerArguments.__dataclass_fields__)
    assert fields[:len(params)] == params  # same names, same order: check(**locals()) cannot drift


def test_defaults_resolve_as_lightning_resolves_them():
    args = TrainerArguments.check(**_given())
    assert args.limits == dict.fromkeys(
        ("limit_train_batches", "limit_val_batches", "limit_test_batches", "limit_predict_batches"), 1.0)
    assert args.overfit == 0.0 and args.max_time is None and args.val_check_seconds is None
    assert args.precision_flag == "32-true" and args.gradient_clip_algorithm is None


def test_parsed_forms():
    args = TrainerArguments.check(**_given(max_time="00:01:30:00", val_check_interval={"minutes": 2},
                                           limit_val_batches=3.0, gradient_clip_algorithm="NORM", precision="bf16"))
    assert args.max_time == timedelta(hours=1, minutes=30)
    assert args.val_check_seconds == 120.0
    assert args.limits["limit_val_batches"] == 3 and isinstance(args.limits["limit_val_batches"], int)
    assert args.gradient_clip_algorithm == "norm"
    assert args.precision_flag == "bf16-mixed"


def test_barebones_switches_the_features_off():
    args = TrainerArguments.check(**_given(barebones=True))
    assert (args.logger, args.enable_checkpointing, args.enable_progress_bar, args.enable_model_summary,
            args.log_every_n_steps, args.num_sanity_val_steps) == (False, False, False, False, 0, 0)


def test_a_precision_plugin_decides_the_precision():
    from trainer.plugins import MixedPrecision

    args = TrainerArguments.check(**_given(plugins=[MixedPrecision("bf16-mixed", "cpu")]))
    assert args.precision_flag == "bf16-mixed"


def test_the_first_bad_argument_raises_before_the_trainer_exists(monkeypatch):
    """Nothing is wired (no strategy resolved) when an argument is bad."""
    import trainer.trainer as trainer_module

    def no_strategy(*a, **k):
        raise AssertionError("the strategy was resolved before every argument was checked")

    monkeypatch.setattr(trainer_module, "resolve_strategy", no_strategy)
    with pytest.raises(MisconfigurationException, match="max_steps"):
        L.Trainer(max_steps=-5)
    with pytest.raises(MisconfigurationException, match="limit_val_batches"):
        L.Trainer(limit_val_batches=1.5)
