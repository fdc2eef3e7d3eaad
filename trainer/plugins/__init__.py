"""Lightning's ``lightning.pytorch.plugins``: ``Trainer(plugins=[...])`` takes a precision plugin, a cluster
environment and a checkpoint IO plugin (at most one of each)."""
from trainer._unavailable import requires
from trainer.plugins.environments import ClusterEnvironment
from trainer.plugins.io import AsyncCheckpointIO, CheckpointIO, TorchCheckpointIO
from trainer.plugins.precision import (
    BitsandbytesPrecision,
    DoublePrecision,
    HalfPrecision,
    MixedPrecision,
    Precision,
    TransformerEnginePrecision,
    XLAPrecision,
)

XLACheckpointIO = requires("XLACheckpointIO", "torch_xla", "pip install torch_xla", "TPU checkpoint IO")

__all__ = [
    "AsyncCheckpointIO",
    "BitsandbytesPrecision",
    "CheckpointIO",
    "ClusterEnvironment",
    "DoublePrecision",
    "HalfPrecision",
    "MixedPrecision",
    "Precision",
    "TorchCheckpointIO",
    "TransformerEnginePrecision",
    "XLACheckpointIO",
    "XLAPrecision",
]
