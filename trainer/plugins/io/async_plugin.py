"""``AsyncCheckpointIO``: writes checkpoints on a background thread (Lightning's plugin)."""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Dict, List, Optional

import torch

from trainer.plugins.io.checkpoint_plugin import CheckpointIO
from trainer.plugins.io.torch_plugin import TorchCheckpointIO
from trainer.utilities import apply_to_collection


class AsyncCheckpointIO(CheckpointIO):
    """Wraps ``checkpoint_io`` (default ``TorchCheckpointIO``): ``save_checkpoint`` copies the tensors (training
    goes on changing them) and returns at once; a failed write is raised at the next save or at ``teardown``,
    which waits for the pending writes. Reading and removing are the wrapped plugin's."""

    def __init__(self, checkpoint_io: Optional[CheckpointIO] = None) -> None:
        self.checkpoint_io = checkpoint_io if checkpoint_io is not None else TorchCheckpointIO()
        self._executor = ThreadPoolExecutor(max_workers=1)
        self._pending: List[Future] = []

    def _raise_failures(self) -> None:
        done = [f for f in self._pending if f.done()]
        self._pending = [f for f in self._pending if not f.done()]
        for future in done:
            future.result()

    def save_checkpoint(self, checkpoint: Dict[str, Any], path: Any, storage_options: Optional[Any] = None) -> None:
        self._raise_failures()
        snapshot = apply_to_collection(checkpoint, torch.Tensor, lambda t: t.detach().clone())
        self._pending.append(self._executor.submit(self.checkpoint_io.save_checkpoint, snapshot, path,
                                                   storage_options))

    def load_checkpoint(self, path: Any, map_location: Optional[Any] = None,
                        weights_only: Optional[bool] = None) -> Dict[str, Any]:
        self._wait()
        return self.checkpoint_io.load_checkpoint(path, map_location=map_location, weights_only=weights_only)

    def remove_checkpoint(self, path: Any) -> None:
        self._wait()
        self.checkpoint_io.remove_checkpoint(path)

    def _wait(self) -> None:
        pending, self._pending = self._pending, []
        for future in pending:
            future.result()

    def teardown(self) -> None:
        self._wait()
        self.checkpoint_io.teardown()
