"""trainer: Lightning 2.x's Trainer API, with the training step captured and run as generated code.

Swap ``import lightning.pytorch as L`` for ``import trainer as L``.
"""
import logging as _logging

# Like Lightning: INFO messages of this package (model summary, "`Trainer.fit` stopped") are shown
# unless the application configured logging itself.
_log = _logging.getLogger(__name__)
_log.setLevel(_logging.INFO)
if not _logging.getLogger().hasHandlers():
    _log.addHandler(_logging.StreamHandler())
    _log.propagate = False

from trainer import callbacks, loggers  # noqa: E402
from trainer.callbacks import Callback  # noqa: E402
from trainer.datamodule import LightningDataModule  # noqa: E402
from trainer.exceptions import MisconfigurationException  # noqa: E402
from trainer.module import LightningModule  # noqa: E402
from trainer.seed import seed_everything  # noqa: E402
from trainer.trainer import Trainer  # noqa: E402

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
