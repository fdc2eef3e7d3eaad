"""Built-in callbacks with Lightning 2.x's names, arguments and behaviour."""
from trainer.callbacks.callback import Callback, Checkpoint
from trainer.callbacks.early_stopping import EarlyStopping, EarlyStoppingReason
from trainer.callbacks.lambda_function import LambdaCallback
from trainer.callbacks.lr_monitor import LearningRateMonitor
from trainer.callbacks.model_checkpoint import ModelCheckpoint
from trainer.callbacks.model_summary import ModelSummary, summarize
from trainer.callbacks.progress import ProgressBar, TQDMProgressBar
from trainer.callbacks.rich_model_summary import RichModelSummary
from trainer.callbacks.timer import Timer

__all__ = [
    "Callback",
    "Checkpoint",
    "EarlyStopping",
    "EarlyStoppingReason",
    "LambdaCallback",
    "LearningRateMonitor",
    "ModelCheckpoint",
    "ModelSummary",
    "ProgressBar",
    "RichModelSummary",
    "TQDMProgressBar",
    "Timer",
    "summarize",
]
