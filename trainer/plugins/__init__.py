"""Lightning's ``lightning.pytorch.plugins``: ``Trainer(plugins=[...])`` takes a precision plugin, a cluster
environment and a checkpoint IO plugin (at most one of each)."""
from trainer.plugins.environments import ClusterEnvironment
from trainer.plugins.io import AsyncCheckpointIO, CheckpointIO, TorchCheckpointIO
from trainer.plugins.precision import DoublePrecision, HalfPrecision, MixedPrecision, Precision

__all__ = [
    "AsyncCheckpointIO",
    "CheckpointIO",
    "ClusterEnvironment",
    "DoublePrecision",
    "HalfPrecision",
    "MixedPrecision",
    "Precision",
    "TorchCheckpointIO",
]
