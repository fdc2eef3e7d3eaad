"""Built-in callbacks with Lightning 2.x's names, arguments and behaviour."""
from trainer.callbacks.batch_size_finder import BatchSizeFinder
from trainer.callbacks.callback import Callback, Checkpoint
from trainer.callbacks.device_stats_monitor import DeviceStatsMonitor
from trainer.callbacks.early_stopping import EarlyStopping, EarlyStoppingReason
from trainer.callbacks.finetuning import BackboneFinetuning, BaseFinetuning
from trainer.callbacks.gradient_accumulation_scheduler import GradientAccumulationScheduler
from trainer.callbacks.lambda_function import LambdaCallback
from trainer.callbacks.lr_finder import LearningRateFinder
from trainer.callbacks.lr_monitor import LearningRateMonitor
from trainer.callbacks.model_checkpoint import ModelCheckpoint
from trainer.callbacks.model_summary import ModelSummary, summarize
from trainer.callbacks.on_exception_checkpoint import OnExceptionCheckpoint
from trainer.callbacks.prediction_writer import BasePredictionWriter
from trainer.callbacks.progress import ProgressBar, RichProgressBar, RichProgressBarTheme, TQDMProgressBar
from trainer.callbacks.pruning import ModelPruning
from trainer.callbacks.rich_model_summary import RichModelSummary
from trainer.callbacks.spike import SpikeDetection
from trainer.callbacks.stochastic_weight_avg import StochasticWeightAveraging
from trainer.callbacks.throughput_monitor import ThroughputMonitor
from trainer.callbacks.timer import Timer
from trainer.callbacks.weight_averaging import EMAWeightAveraging, WeightAveraging

__all__ = [
    "BackboneFinetuning",
    "BaseFinetuning",
    "BasePredictionWriter",
    "BatchSizeFinder",
    "Callback",
    "Checkpoint",
    "DeviceStatsMonitor",
    "EMAWeightAveraging",
    "EarlyStopping",
    "EarlyStoppingReason",
    "GradientAccumulationScheduler",
    "LambdaCallback",
    "LearningRateFinder",
    "LearningRateMonitor",
    "ModelCheckpoint",
    "ModelPruning",
    "ModelSummary",
    "OnExceptionCheckpoint",
    "ProgressBar",
    "RichModelSummary",
    "RichProgressBar",
    "RichProgressBarTheme",
    "SpikeDetection",
    "StochasticWeightAveraging",
    "TQDMProgressBar",
    "ThroughputMonitor",
    "Timer",
    "WeightAveraging",
    "summarize",
]
