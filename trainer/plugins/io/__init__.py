"""Lightning's checkpoint IO plugins: how a strategy writes, reads and removes checkpoint files
(``XLACheckpointIO`` raises naming ``torch_xla``)."""
from trainer._unavailable import requires
from trainer.plugins.io.async_plugin import AsyncCheckpointIO
from trainer.plugins.io.checkpoint_plugin import CheckpointIO
from trainer.plugins.io.torch_plugin import TorchCheckpointIO

XLACheckpointIO = requires("XLACheckpointIO", "torch_xla", "pip install torch_xla", "TPU checkpoint IO")

__all__ = ["AsyncCheckpointIO", "CheckpointIO", "TorchCheckpointIO", "XLACheckpointIO"]
