"""What both searches share: the checkpoint that puts the run back afterwards, and muting loggers and the bar."""
from __future__ import annotations

import os
import uuid
from typing import TYPE_CHECKING, Any, Dict

if TYPE_CHECKING:  # pragma: no cover
    from trainer.trainer import Trainer


def save_initial_state(trainer: "Trainer", prefix: str) -> str:
    """Writes ``<default_root_dir>/.<prefix>_<uuid>.ckpt`` (Lightning's name) holding the run as it is now."""
    path = os.path.join(trainer.default_root_dir, f".{prefix}_{uuid.uuid4()}.ckpt")
    path = trainer.strategy.broadcast(path)
    trainer.save_checkpoint(path)
    return path


def restore_initial_state(trainer: "Trainer", path: str) -> None:
    """Weights, optimizer and scheduler states, callback states and loop counters from ``path``; then the file
    is removed (rank 0, as Lightning's ``strategy.remove_checkpoint``)."""
    try:
        trainer._checkpoint_connector.restore(path)
    finally:
        trainer.strategy.remove_checkpoint(path)


def mute_outputs(trainer: "Trainer") -> Dict[str, Any]:
    """Loggers become a ``DummyLogger`` and the user's callbacks are set aside (the caller installs its own);
    returns what ``unmute_outputs`` puts back."""
    from trainer.loggers.logger import DummyLogger

    saved = {"callbacks": trainer.callbacks, "loggers": trainer.loggers}
    trainer.logger = DummyLogger() if trainer.logger is not None else None
    return saved


def unmute_outputs(trainer: "Trainer", saved: Dict[str, Any]) -> None:
    trainer.callbacks = saved["callbacks"]
    trainer.loggers = saved["loggers"]


def set_progress_bar(trainer: "Trainer", enabled: bool) -> None:
    bar = trainer.progress_bar_callback
    if bar is not None:
        bar.enable() if enabled else bar.disable()
