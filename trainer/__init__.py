"""trainer: Lightning 2.x's Trainer API, with the training step captured and run as generated code.

Swap ``import lightning.pytorch as L`` for ``import trainer as L``.
"""
from trainer import callbacks, loggers
from trainer.callbacks import Callback
from trainer.datamodule import LightningDataModule
from trainer.exceptions import MisconfigurationException
from trainer.module import LightningModule
from trainer.seed import seed_everything
from trainer.trainer import Trainer

__version__ = "0.1.0"

__all__ = [
    "Callback",
    "LightningDataModule",
    "LightningModule",
    "MisconfigurationException",
    "Trainer",
    "callbacks",
    "loggers",
    "seed_everything",
]
