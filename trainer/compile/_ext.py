"""``trainer._C``'s custom ops for the compiled CPU step (attention, GELU): whether they are built,
and their fake (shape) functions registered once per process."""
from __future__ import annotations

from typing import Callable, Dict

import torch

_READY: Dict[str, bool] = {}


def register_once(op: str, register: Callable[[], None]) -> bool:
    """Whether ``trainer._C`` is built with ``torch.ops.trainer.<op>``; the first time it is,
    ``register()`` (the fake functions of that op's family) runs."""
    if op not in _READY:
        from trainer.optim._backend import HAS_CPP  # imports trainer._C, which registers the ops

        _READY[op] = HAS_CPP and hasattr(torch.ops.trainer, op)
        if _READY[op]:
            register()
    return _READY[op]


__all__ = ["register_once"]
