"""The compiled engine's tests run trainer's CPU compute kernels (attention, GELU) wherever they are built.

The engine substitutes them only in a wide-vector build (``TRAINER_NATIVE=1``: AVX2/AVX-512); the portable
default build keeps ATen's kernels, which measured 6-10x faster than these compiled for SSE2
(trainer/compile/_ext.py). The tests check what the substitution computes, not its speed, so they lift that
gate: the rewrites and the kernels are tested in every build.
"""
from __future__ import annotations

import pytest

from trainer.compile import _ext


@pytest.fixture(autouse=True)
def _cpu_kernels_in_any_build(monkeypatch):
    monkeypatch.setattr(_ext, "MIN_VECTOR_BITS", 0)
    monkeypatch.setattr(_ext, "_READY", {})
    from trainer.compile import attention, gelu

    attention.available()  # registers the ops' fake functions where the kernels are built
    gelu.available()
