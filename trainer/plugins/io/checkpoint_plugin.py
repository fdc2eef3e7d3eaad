"""``CheckpointIO``: the interface a checkpoint IO plugin implements (Lightning's)."""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Dict, Optional


class CheckpointIO(ABC):
    """Writes, reads and removes checkpoint files; ``Trainer(plugins=[MyCheckpointIO()])`` makes the strategy use it."""

    @abstractmethod
    def save_checkpoint(self, checkpoint: Dict[str, Any], path: Any, storage_options: Optional[Any] = None) -> None:
        """Writes ``checkpoint`` to ``path``."""

    @abstractmethod
    def load_checkpoint(self, path: Any, map_location: Optional[Any] = None,
                        weights_only: Optional[bool] = None) -> Dict[str, Any]:
        """Reads the checkpoint at ``path``."""

    @abstractmethod
    def remove_checkpoint(self, path: Any) -> None:
        """Deletes the checkpoint at ``path``."""

    def teardown(self) -> None:
        """Called when the strategy tears down (e.g. wait for pending writes)."""
