"""Invalid Trainer arguments fail at construction; invalid modules fail at fit, clearly.

Contract for `trainer` (stricter than Lightning where Lightning accepts nonsense silently):
``Trainer(**bad)`` raises ``trainer.exceptions.MisconfigurationException`` (a ``ValueError``)
immediately, and its message contains the argument's name and ``repr`` of the bad value.

What pytorch-lightning 2.6.6 does with the same inputs (checked by ``test_lightning_reference``):
raises at construction for precision, gradient_clip_algorithm, val_check_interval, strategy,
accelerator, gpu-without-CUDA, tpu-without-torch_xla (ModuleNotFoundError), devices, max_epochs,
limit_train_batches, max_time, max_steps, limit_val_batches; ACCEPTS accumulate_grad_batches=0,
log_every_n_steps=-1, num_sanity_val_steps=-2, gradient_clip_val=-1, check_val_every_n_epoch=0 and
deterministic="maybe" (failing later or never). Values Lightning accepts as valid must stay valid
(``test_valid_values_accepted``), so strictness never breaks a working Lightning script.

Where Lightning raises a class of its own choosing (``TypeError`` for ``gradient_clip_val=(1, 2)``,
``ValueError`` for ``barebones=True`` with a feature it turns off, ``TypeError`` for
``trainer.fit(object())``), `trainer` raises that class with Lightning's wording:
tests/parity/test_lightning_own_behaviour.py compares them.
"""
from __future__ import annotations

import datetime
import importlib.util

import pytest
import torch
from helpers import boring_model_class, make_loader, misconfiguration_exception, quiet_trainer_kwargs

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

_CUDA = torch.cuda.is_available()
_XLA = importlib.util.find_spec("torch_xla") is not None

# (argument, bad value, does Lightning 2.6.6 raise at construction?)
BAD_ARGS = [
    ("accumulate_grad_batches", 0, False),
    ("precision", "17-mixed", True),
    ("gradient_clip_algorithm", "median", True),
    ("val_check_interval", -0.5, True),
    ("strategy", "nonsense", True),
    ("accelerator", "quantum", True),
    pytest.param("accelerator", "gpu", True, marks=pytest.mark.skipif(_CUDA, reason="CUDA is available here")),
    pytest.param("accelerator", "tpu", True, marks=pytest.mark.skipif(_XLA, reason="torch_xla is installed here")),
    ("devices", 0, True),
    ("max_epochs", -2, True),
    ("max_steps", -2, True),
    ("log_every_n_steps", -1, False),
    ("limit_train_batches", 1.5, True),
    ("limit_val_batches", -1, True),
    ("num_sanity_val_steps", -2, False),
    ("gradient_clip_val", -1, False),
    ("check_val_every_n_epoch", 0, False),
    ("deterministic", "maybe", False),
    ("max_time", "forever", True),
]


def _construct(L, tmp_path, name, value):
    kw = quiet_trainer_kwargs(tmp_path)
    kw.pop("devices")  # so that devices=0 / accelerator=... are tested alone
    if name == "accelerator":
        kw.pop("accelerator")
    kw[name] = value
    return L.Trainer(**kw)


@pytest.mark.parametrize("name, value, lightning_raises", BAD_ARGS)
def test_bad_constructor_argument(TL, tmp_path, name, value, lightning_raises):
    MisconfigurationException = misconfiguration_exception(TL)
    assert issubclass(MisconfigurationException, ValueError)
    with pytest.raises(MisconfigurationException) as info:
        _construct(TL, tmp_path, name, value)  # at construction, not at fit
    message = str(info.value)
    assert name in message, f"message does not name the argument {name!r}: {message!r}"
    assert repr(value) in message, f"message does not show the value {value!r}: {message!r}"


@pytest.mark.parametrize("name, value, lightning_raises", BAD_ARGS)
def test_lightning_reference(PL, tmp_path, name, value, lightning_raises):
    """Keeps the table's Lightning column honest (documentation of where we are stricter)."""
    if lightning_raises:
        with pytest.raises((ValueError, misconfiguration_exception(PL), ModuleNotFoundError)):
            _construct(PL, tmp_path, name, value)
    else:
        _construct(PL, tmp_path, name, value)


# Values Lightning 2.6.6 accepts; `trainer` must accept them too (no over-strict validation).
VALID_ARGS = [
    dict(gradient_clip_val=0),
    dict(gradient_clip_val=0.0),
    dict(gradient_clip_val=None),
    dict(gradient_clip_algorithm="value"),
    dict(gradient_clip_algorithm="norm"),
    dict(max_epochs=-1),
    dict(max_epochs=0),
    dict(max_epochs=None),
    dict(max_steps=-1),
    dict(max_steps=0),
    dict(min_steps=None, min_epochs=None),
    dict(num_sanity_val_steps=-1),
    dict(num_sanity_val_steps=0),
    dict(check_val_every_n_epoch=None, val_check_interval=10),
    dict(limit_train_batches=0),
    dict(limit_train_batches=1.0),
    dict(limit_train_batches=5),
    dict(val_check_interval=1.0),
    dict(val_check_interval=3),
    dict(deterministic=True),
    dict(deterministic=False),
    dict(deterministic="warn"),
    dict(max_time="00:00:01:00"),
    dict(max_time={"minutes": 1}),
    dict(max_time=datetime.timedelta(seconds=5)),
    dict(log_every_n_steps=0),
    dict(log_every_n_steps=1),
    dict(precision=32),
    dict(precision="32"),
    dict(precision="32-true"),
    dict(precision=64),
    dict(precision="64-true"),
    dict(precision="bf16"),
    dict(precision="bf16-mixed"),
    dict(precision=16),
    dict(precision="16-mixed"),
    dict(devices=1),
    dict(devices="auto"),
    dict(devices="1"),
    dict(strategy="auto"),
    dict(accumulate_grad_batches=1),
    dict(accumulate_grad_batches=4),
]


@pytest.mark.parametrize("kw", VALID_ARGS, ids=lambda kw: ",".join(f"{k}={v!r}" for k, v in kw.items()))
def test_valid_values_accepted(L, tmp_path, kw):
    base = quiet_trainer_kwargs(tmp_path)
    base.update(kw)
    L.Trainer(**base)


def test_accelerator_auto_constructs(L, tmp_path):
    kw = quiet_trainer_kwargs(tmp_path)
    kw.pop("accelerator")
    kw.pop("devices")
    L.Trainer(accelerator="auto", **kw)


# --------------------------------------------------------------------------------------------
# Invalid modules: a clear error at fit
# --------------------------------------------------------------------------------------------


def _no_training_step(L):
    class NoTrainingStep(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(8, 2)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    return NoTrainingStep()


def _no_configure_optimizers(L):
    class NoConfigureOptimizers(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(8, 2)

        def training_step(self, batch, batch_idx):
            return self.layer(batch[0]).sum()

    return NoConfigureOptimizers()


@pytest.mark.parametrize(
    "make_module, missing",
    [(_no_training_step, "training_step"), (_no_configure_optimizers, "configure_optimizers")],
    ids=["no_training_step", "no_configure_optimizers"],
)
def test_module_missing_required_method(L, tmp_path, make_module, missing):
    model = make_module(L)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = L.Trainer(max_epochs=1, **quiet_trainer_kwargs(tmp_path))  # constructing is fine
    with pytest.raises(misconfiguration_exception(L)) as info:
        trainer.fit(model, make_loader(8, 4))
    assert missing in str(info.value), str(info.value)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()), "trained before failing"


def test_training_step_returns_non_scalar_tensor(TL, tmp_path):
    """`trainer` names the culprit; Lightning only surfaces torch's "grad can be implicitly created
    only for scalar outputs" from backward (see test_training_step_non_scalar_lightning)."""

    class NonScalar(boring_model_class(TL)):
        def training_step(self, batch, batch_idx):
            return self(batch[0])  # shape (4, 2): not a loss

    trainer = TL.Trainer(max_epochs=1, **quiet_trainer_kwargs(tmp_path))
    with pytest.raises((ValueError, RuntimeError)) as info:
        trainer.fit(NonScalar(), make_loader(8, 4))
    message = str(info.value)
    assert "training_step" in message and "scalar" in message, message


def test_training_step_non_scalar_lightning(PL, tmp_path):
    class NonScalar(boring_model_class(PL)):
        def training_step(self, batch, batch_idx):
            return self(batch[0])

    trainer = PL.Trainer(max_epochs=1, **quiet_trainer_kwargs(tmp_path))
    with pytest.raises(RuntimeError, match="scalar"):
        trainer.fit(NonScalar(), make_loader(8, 4))
