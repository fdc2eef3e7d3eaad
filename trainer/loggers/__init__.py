"""Experiment loggers with Lightning's names, arguments and on-disk layout."""
from __future__ import annotations

import os

from trainer._unavailable import requires
from trainer.loggers.csv_logs import CSVLogger
from trainer.loggers.logger import DummyLogger, Logger
from trainer.loggers.mlflow import MLFlowLogger
from trainer.loggers.tensorboard import _TENSORBOARD_AVAILABLE, TensorBoardLogger
from trainer.loggers.wandb import WandbLogger

CometLogger = requires("CometLogger", "comet_ml", "pip install comet-ml", "Comet experiment tracking")
LitLogger = requires("LitLogger", "litlogger", "pip install litlogger", "Lightning AI's hosted logger")

__all__ = [
    "CometLogger",
    "LitLogger",
    "CSVLogger",
    "DummyLogger",
    "Logger",
    "MLFlowLogger",
    "TensorBoardLogger",
    "WandbLogger",
    "default_logger",
]


def _slurm_job_id() -> int | None:
    """The SLURM job id used as the default version (Lightning's), ``None`` outside batch SLURM jobs."""
    if os.environ.get("SLURM_JOB_NAME") in ("bash", "interactive"):
        return None
    job_id = os.environ.get("SLURM_JOB_ID")
    try:
        return int(job_id) if job_id is not None else None
    except ValueError:
        return None


def default_logger(save_dir: str) -> Logger:
    """The logger ``Trainer(logger=True)`` creates: TensorBoard when installed, else CSV (Lightning's choice)."""
    if _TENSORBOARD_AVAILABLE:
        return TensorBoardLogger(save_dir=save_dir, name="lightning_logs", version=_slurm_job_id())
    import warnings

    warnings.warn(
        "`tensorboard` is not installed, so `logger=True` uses `CSVLogger` as the default logger."
        " `pip install tensorboard` to log to TensorBoard by default."
    )
    return CSVLogger(save_dir=save_dir, name="lightning_logs")
