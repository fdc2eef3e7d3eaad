"""Fused multi-tensor optimizers: ``FusedAdamW``, ``FusedAdam``, ``FusedSGD``, ``FusedLion``.

Kernels come from, in order of preference: the CUDA kernels of ``trainer._C`` or the Triton
kernels of ``kernels/trainer_kernels`` (cuda tensors), the C++ CPU kernels of ``trainer._C`` (cpu tensors), and
``torch``'s own fused kernels. Nothing here raises at import when a backend is missing; see the
``HAS_*`` flags, and pass ``backend=`` to insist on one.
"""
from . import functional
from ._backend import (
    BACKENDS,
    HAS_CPP,
    HAS_CUDA_EXT,
    HAS_TRITON,
    BackendUnavailable,
    available_backends,
    compiled_update_uses_ext,
    resolve_backend,
)
from .functional import clip_coef_from_norm, found_inf_from_norm, grad_norm
from .optimizers import FusedAdam, FusedAdamW, FusedLion, FusedSGD

__all__ = [
    "BACKENDS",
    "HAS_CPP",
    "HAS_CUDA_EXT",
    "HAS_TRITON",
    "BackendUnavailable",
    "FusedAdam",
    "FusedAdamW",
    "FusedLion",
    "FusedSGD",
    "available_backends",
    "compiled_update_uses_ext",
    "clip_coef_from_norm",
    "found_inf_from_norm",
    "functional",
    "grad_norm",
    "resolve_backend",
]
