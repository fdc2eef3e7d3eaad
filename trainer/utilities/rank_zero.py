"""Messages for the user, emitted once per job (global rank 0), on Lightning's channels.

Info lines go to the logger ``trainer.utilities.rank_zero`` at INFO, as Lightning's go to
``lightning.pytorch.utilities.rank_zero``: an application (or ``caplog``) that listens to one
listens to the other by swapping the package name.
"""
from __future__ import annotations

import logging
import warnings
from typing import Any, Type

from trainer.loggers.utilities import rank_zero_only

log = logging.getLogger(__name__)


def rank_zero_info(message: str, stacklevel: int = 2) -> None:
    """Log ``message`` at INFO on global rank 0."""
    if rank_zero_only.rank == 0:
        log.info(message, stacklevel=stacklevel)


def rank_zero_warn(message: str, category: Type[Warning] = UserWarning, stacklevel: int = 3, **kwargs: Any) -> None:
    """``warnings.warn`` on global rank 0."""
    if rank_zero_only.rank == 0:
        warnings.warn(message, category=category, stacklevel=stacklevel, **kwargs)


__all__ = ["rank_zero_info", "rank_zero_only", "rank_zero_warn"]
