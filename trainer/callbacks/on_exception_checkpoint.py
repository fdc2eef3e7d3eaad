"""``OnExceptionCheckpoint``: save a checkpoint when a run raises (Lightning's callback).

The file is ``dirpath/filename.ckpt``, written with ``trainer.save_checkpoint`` (atomically) from ``on_exception``,
so it holds the state at the moment of the failure and resumes with ``Trainer.fit(ckpt_path=...)``. A run that ends
normally removes the file at ``teardown`` (the callback's teardown is not called after an exception).
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Union

from trainer.callbacks.callback import Checkpoint

if TYPE_CHECKING:  # pragma: no cover
    from trainer.trainer import Trainer


class OnExceptionCheckpoint(Checkpoint):
    """Save a checkpoint on exception.

    Args:
        dirpath: directory to save the checkpoint file in.
        filename: checkpoint filename, without the extension.

    Raises:
        ValueError: if ``filename`` is empty.

    Example::

        trainer = Trainer(callbacks=[OnExceptionCheckpoint(".")])
    """

    FILE_EXTENSION = ".ckpt"

    def __init__(self, dirpath: Union[str, "os.PathLike[str]"], filename: str = "on_exception") -> None:
        super().__init__()
        if not filename:
            raise ValueError("The filename cannot be empty")
        self.dirpath = dirpath
        self.filename = filename

    @property
    def ckpt_path(self) -> str:
        return os.path.join(self.dirpath, self.filename + self.FILE_EXTENSION)

    def on_exception(self, trainer: "Trainer", *_: Any, **__: Any) -> None:
        trainer.save_checkpoint(self.ckpt_path)

    def teardown(self, trainer: "Trainer", *_: Any, **__: Any) -> None:
        remove = getattr(trainer.strategy, "remove_checkpoint", None)
        if remove is not None:
            remove(self.ckpt_path)
        elif getattr(trainer, "is_global_zero", True) and os.path.exists(self.ckpt_path):
            os.remove(self.ckpt_path)
