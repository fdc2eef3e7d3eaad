"""Lightning's checkpoint IO plugins: how a strategy writes, reads and removes checkpoint files."""
from trainer.plugins.io.async_plugin import AsyncCheckpointIO
from trainer.plugins.io.checkpoint_plugin import CheckpointIO
from trainer.plugins.io.torch_plugin import TorchCheckpointIO

__all__ = ["AsyncCheckpointIO", "CheckpointIO", "TorchCheckpointIO"]
