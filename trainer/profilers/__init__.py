"""Lightning's ``lightning.pytorch.profilers``: ``Trainer(profiler="simple"|"advanced"|"pytorch"|"xla"|Profiler)``."""
from trainer.profilers.advanced import AdvancedProfiler
from trainer.profilers.base import PassThroughProfiler
from trainer.profilers.profiler import Profiler
from trainer.profilers.pytorch import PyTorchProfiler
from trainer.profilers.simple import SimpleProfiler
from trainer.profilers.xla import XLAProfiler

__all__ = [
    "AdvancedProfiler",
    "PassThroughProfiler",
    "Profiler",
    "PyTorchProfiler",
    "SimpleProfiler",
    "XLAProfiler",
]
