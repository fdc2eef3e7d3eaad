"""Small helpers the built-in callbacks share: strategy collectives with a single-process fallback, warnings."""
from __future__ import annotations

import logging
import warnings
from typing import Any, Optional

_warned: set[str] = set()


def warn_once(message: str, category: type[Warning] = UserWarning, stacklevel: int = 3) -> None:
    """Warn with ``message`` the first time only (Lightning's ``WarningCache``)."""
    if message in _warned:
        return
    _warned.add(message)
    warnings.warn(message, category=category, stacklevel=stacklevel)


def is_global_zero(trainer: Any) -> bool:
    return bool(getattr(trainer, "is_global_zero", True))


def rank_zero_info(trainer: Any, log: logging.Logger, message: str) -> None:
    if is_global_zero(trainer):
        log.info(message)


def reduce_boolean_decision(trainer: Any, decision: bool, all: bool = True) -> bool:
    """``trainer.strategy.reduce_boolean_decision`` (every rank must agree), or ``decision`` on one process."""
    strategy = getattr(trainer, "strategy", None)
    if strategy is None or not hasattr(strategy, "reduce_boolean_decision"):
        return bool(decision)
    return bool(strategy.reduce_boolean_decision(bool(decision), all=all))


def broadcast(trainer: Any, obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (so ranks take the same branch), or ``obj`` itself on one process."""
    strategy = getattr(trainer, "strategy", None)
    if strategy is None or not hasattr(strategy, "broadcast"):
        return obj
    return strategy.broadcast(obj)


def barrier(trainer: Any) -> None:
    strategy = getattr(trainer, "strategy", None)
    if strategy is not None and hasattr(strategy, "barrier"):
        strategy.barrier()


def trainer_fn(trainer: Any) -> Optional[str]:
    """``trainer.state.fn`` as a plain string (``"fit"``, ``"validate"``, ...)."""
    state = getattr(trainer, "state", None)
    fn = getattr(state, "fn", None)
    if fn is None:
        return None
    return getattr(fn, "value", fn)


def total_val_batches(trainer: Any) -> float:
    num = getattr(trainer, "num_val_batches", 0)
    if isinstance(num, (list, tuple)):
        return sum(num)
    return num or 0


def val_check_interval_is_one_epoch(trainer: Any) -> bool:
    """Whether validation runs exactly once, at the end of each training epoch (``val_check_interval == 1.0``)."""
    if getattr(trainer, "_val_check_time_interval", None) is not None:
        return False
    vci = getattr(trainer, "val_check_interval", None)
    if vci is not None:
        return vci == 1.0
    # Trainer without ``val_check_interval``: validation runs every ``val_check_batch`` batches.
    vcb = getattr(trainer, "val_check_batch", None)
    ntb = getattr(trainer, "num_training_batches", None)
    return vcb is None or ntb is None or vcb == ntb or vcb == float("inf")
