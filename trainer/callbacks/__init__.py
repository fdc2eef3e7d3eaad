"""Built-in callbacks with Lightning 2.x's names, arguments and behaviour."""
from trainer.callbacks.batch_size_finder import BatchSizeFinder
from trainer.callbacks.callback import Callback, Checkpoint
from trainer.callbacks.early_stopping import EarlyStopping, EarlyStoppingReason
from trainer.callbacks.gradient_accumulation_scheduler import GradientAccumulationScheduler
from trainer.callbacks.lambda_function import LambdaCallback
from trainer.callbacks.lr_finder import LearningRateFinder
from trainer.callbacks.lr_monitor import LearningRateMonitor
from trainer.callbacks.model_checkpoint import ModelCheckpoint
from trainer.callbacks.model_summary import ModelSummary, summarize
from trainer.callbacks.on_exception_checkpoint import OnExceptionCheckpoint
from trainer.callbacks.progress import ProgressBar, RichProgressBar, RichProgressBarTheme, TQDMProgressBar
from trainer.callbacks.rich_model_summary import RichModelSummary
from trainer.callbacks.throughput_monitor import ThroughputMonitor
from trainer.callbacks.timer import Timer

__all__ = [
    "BatchSizeFinder",
    "Callback",
    "Checkpoint",
    "EarlyStopping",
    "EarlyStoppingReason",
    "GradientAccumulationScheduler",
    "LambdaCallback",
    "LearningRateFinder",
    "LearningRateMonitor",
    "ModelCheckpoint",
    "ModelSummary",
    "OnExceptionCheckpoint",
    "ProgressBar",
    "RichModelSummary",
    "RichProgressBar",
    "RichProgressBarTheme",
    "TQDMProgressBar",
    "ThroughputMonitor",
    "Timer",
    "summarize",
]
