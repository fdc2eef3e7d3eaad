"""Which framework a test runs under: pytorch-lightning (the oracle) or `trainer`.

Tests are written once against a framework module ``L`` (``import pytorch_lightning as L`` or
``import trainer as L``), so the SAME LightningModule/Callback code runs under both. The
``trainer`` side is skipped only while ``trainer/trainer.py`` does not exist yet; once it exists,
any import error is a real error (a broken package must not turn into green skips).
"""
from __future__ import annotations

import importlib
from types import ModuleType

LIGHTNING = "lightning"
TRAINER = "trainer"
FRAMEWORK_NAMES = (LIGHTNING, TRAINER)


def import_framework(name: str) -> ModuleType:
    """Return the framework module for ``name`` (a failing import fails the test: nothing is skipped)."""
    if name == LIGHTNING:
        return importlib.import_module("pytorch_lightning")
    if name == TRAINER:
        return importlib.import_module("trainer")
    raise ValueError(f"unknown framework {name!r}")


def compiled_engine() -> bool:
    """Whether `trainer` runs its compiled engine in this test run (``TRAINER_COMPILE``, which
    tests/conftest.py sets to 0 unless the run asks for the default engine: ``.ci/run``'s second pass)."""
    import os

    return os.environ.get("TRAINER_COMPILE", "1") != "0"


def misconfiguration_exception(L: ModuleType) -> type:
    """The framework's MisconfigurationException class."""
    if L.__name__ == "pytorch_lightning":
        from pytorch_lightning.utilities.exceptions import MisconfigurationException

        return MisconfigurationException
    from trainer.exceptions import MisconfigurationException

    return MisconfigurationException


def quiet_trainer_kwargs(tmp_path) -> dict:
    """Trainer kwargs that switch off everything that adds hooks/noise unrelated to a test."""
    return dict(
        accelerator="cpu",
        devices=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        logger=False,
        enable_checkpointing=False,
        default_root_dir=str(tmp_path),
    )
