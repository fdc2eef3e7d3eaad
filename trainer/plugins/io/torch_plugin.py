"""``TorchCheckpointIO``: ``torch.save``/``torch.load`` files, written atomically (the default IO)."""
from __future__ import annotations

import os
import shutil
from typing import Any, Dict, Optional

from trainer.plugins.io.checkpoint_plugin import CheckpointIO


class TorchCheckpointIO(CheckpointIO):
    """The previous file at ``path`` survives a failed write (:func:`trainer.checkpoint.atomic_save`)."""

    def save_checkpoint(self, checkpoint: Dict[str, Any], path: Any, storage_options: Optional[Any] = None) -> None:
        if storage_options is not None:
            raise TypeError(
                "`Trainer.save_checkpoint(..., storage_options=...)` with `storage_options` arg"
                f" is not supported for `{self.__class__.__name__}`. Please implement your custom `CheckpointIO`"
                " to define how you'd like to use `storage_options`."
            )
        from trainer.checkpoint import atomic_save

        directory = os.path.dirname(os.fspath(path))
        if directory:
            os.makedirs(directory, exist_ok=True)
        atomic_save(checkpoint, path)

    def load_checkpoint(self, path: Any, map_location: Optional[Any] = None,
                        weights_only: Optional[bool] = None) -> Dict[str, Any]:
        from trainer.checkpoint import load_checkpoint_file

        return load_checkpoint_file(path, map_location=map_location if map_location is not None else "cpu")

    def remove_checkpoint(self, path: Any) -> None:
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.remove(path)
