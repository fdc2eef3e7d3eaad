"""Calling functions, logging and warning on global rank 0 only (Lightning's ``utilities.rank_zero``).

``rank_zero_only.rank`` is read from the launcher's environment at import; the DDP strategy sets it once the
process group exists. Every rank-zero decision in the package (the loggers' too) reads this one attribute.
"""
from __future__ import annotations

import functools
import logging
import os
import warnings
from typing import Any, Callable, Optional, TypeVar, Union

_T = TypeVar("_T")

# info lines go to ``trainer.utilities.rank_zero`` as Lightning's go to ``...pytorch.utilities.rank_zero``: an
# application (or ``caplog``) that listens to one listens to the other by swapping the package name
log = logging.getLogger(__name__)


def _rank_from_env() -> int:
    """The process's global rank from the launcher's environment (0 when not launched).

    ``RANK`` first: under torchrun it is the global rank, while ``LOCAL_RANK`` is only unique per node. Same key
    order as Lightning, so a job launched for Lightning behaves the same here.
    """
    for key in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        value = os.environ.get(key)
        if value is not None:
            try:
                return int(value)
            except ValueError:
                continue
    return 0


def rank_zero_only(fn: Callable[..., _T], default: Optional[_T] = None) -> Callable[..., Optional[_T]]:
    """Decorator: run ``fn`` only on global rank 0; elsewhere return ``default`` (None unless given)."""

    @functools.wraps(fn)
    def wrapped(*args: Any, **kwargs: Any) -> Optional[_T]:
        if rank_zero_only.rank == 0:  # type: ignore[attr-defined]
            return fn(*args, **kwargs)
        return default

    return wrapped


rank_zero_only.rank = _rank_from_env()  # type: ignore[attr-defined]


@rank_zero_only
def rank_zero_debug(*args: Any, stacklevel: int = 4, **kwargs: Any) -> None:
    """``logging.debug`` on global rank 0 only."""
    log.debug(*args, stacklevel=stacklevel, **kwargs)


@rank_zero_only
def rank_zero_info(*args: Any, stacklevel: int = 4, **kwargs: Any) -> None:
    """``logging.info`` on global rank 0 only."""
    log.info(*args, stacklevel=stacklevel, **kwargs)


@rank_zero_only
def rank_zero_warn(message: Union[str, Warning], stacklevel: int = 4, **kwargs: Any) -> None:
    """``warnings.warn`` on global rank 0 only (``category=`` and the other arguments pass through)."""
    warnings.warn(message, stacklevel=stacklevel, **kwargs)


def rank_zero_deprecation(message: Union[str, Warning], stacklevel: int = 5, **kwargs: Any) -> None:
    """A ``DeprecationWarning`` (unless ``category=`` says otherwise) on global rank 0 only."""
    kwargs.setdefault("category", DeprecationWarning)
    rank_zero_warn(message, stacklevel=stacklevel, **kwargs)


def rank_prefixed_message(message: str, rank: Optional[int]) -> str:
    """``"[rank: 1] message"`` when a rank is given, else the message as it is."""
    return message if rank is None else f"[rank: {rank}] {message}"


class WarningCache(set):
    """Emits each distinct message once (on global rank 0)."""

    def warn(self, message: str, stacklevel: int = 5, **kwargs: Any) -> None:
        if message not in self:
            self.add(message)
            rank_zero_warn(message, stacklevel=stacklevel, **kwargs)

    def deprecation(self, message: str, stacklevel: int = 6, **kwargs: Any) -> None:
        if message not in self:
            self.add(message)
            rank_zero_deprecation(message, stacklevel=stacklevel, **kwargs)

    def info(self, message: str, stacklevel: int = 5, **kwargs: Any) -> None:
        if message not in self:
            self.add(message)
            rank_zero_info(message, stacklevel=stacklevel, **kwargs)


__all__ = [
    "WarningCache", "rank_prefixed_message", "rank_zero_debug", "rank_zero_deprecation", "rank_zero_info",
    "rank_zero_only", "rank_zero_warn",
]
