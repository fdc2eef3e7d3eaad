"""Which framework a test runs under: pytorch-lightning (the oracle) or `trainer`.

Tests are written once against a framework module ``L`` (``import pytorch_lightning as L`` or
``import trainer as L``), so the SAME LightningModule/Callback code runs under both. The
``trainer`` side is skipped only while ``trainer/trainer.py`` does not exist yet; once it exists,
any import error is a real error (a broken package must not turn into green skips).
"""
from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

import pytest

LIGHTNING = "lightning"
TRAINER = "trainer"
FRAMEWORK_NAMES = (LIGHTNING, TRAINER)


def trainer_available() -> bool:
    """True once the eager Trainer module exists (its import errors are not swallowed)."""
    try:
        return importlib.util.find_spec("trainer.trainer") is not None
    except ModuleNotFoundError:  # `trainer` itself not on the path
        return False


def import_framework(name: str) -> ModuleType:
    """Return the framework module for ``name``; skips ``trainer`` only while it is absent."""
    if name == LIGHTNING:
        return importlib.import_module("pytorch_lightning")
    if name == TRAINER:
        if not trainer_available():
            pytest.skip("trainer.trainer (the eager Trainer) has not landed yet")
        return importlib.import_module("trainer")
    raise ValueError(f"unknown framework {name!r}")


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
