"""``trainer._C``'s custom ops for the compiled CPU step (attention, GELU): whether they are built,
and their fake (shape) functions registered once per process."""
from __future__ import annotations

from typing import Callable, Dict

import torch

_READY: Dict[str, bool] = {}


MIN_VECTOR_BITS = 256


def vector_bits() -> int:
    """The vector width ``trainer._C``'s host code was compiled for (0: not built). The portable
    default build (no ``TRAINER_NATIVE=1``) targets x86-64's SSE2: 128."""
    from trainer.optim import _backend

    if not _backend.HAS_CPP:
        return 0
    return int(getattr(_backend._C, "vector_bits", 128))


def built(op: str) -> bool:
    """Whether ``trainer._C`` has ``torch.ops.trainer.<op>`` at all (any vector width)."""
    from trainer.optim._backend import HAS_CPP

    return HAS_CPP and hasattr(torch.ops.trainer, op)


def register_once(op: str, register: Callable[[], None]) -> bool:
    """Whether ``trainer._C`` is built with ``torch.ops.trainer.<op>`` for a wide vector ISA (AVX2 or
    AVX-512: ``TRAINER_NATIVE=1``); the first time it is, ``register()`` (the fake functions of that
    op's family) runs. The attention and GELU kernels are written for 16-float vectors: built for SSE2
    (the portable default) they measured 6-10x slower than ATen's kernels, which pick the ISA at run
    time, so the step keeps ATen's there."""
    if op not in _READY:
        from trainer.optim._backend import HAS_CPP  # imports trainer._C, which registers the ops

        _READY[op] = HAS_CPP and hasattr(torch.ops.trainer, op) and vector_bits() >= MIN_VECTOR_BITS
        if _READY[op]:
            register()
    return _READY[op]


__all__ = ["MIN_VECTOR_BITS", "built", "register_once", "vector_bits"]
