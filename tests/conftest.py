"""Shared fixtures. Keep minimal; helpers live in ``tests/helpers``."""
from __future__ import annotations

import os
import sys

import pytest

_TESTS = os.path.dirname(os.path.abspath(__file__))
_ROOT = os.path.dirname(_TESTS)
# `helpers` is imported as a top-level package from tests/, and the repo root makes `trainer`
# importable even when the package is not pip-installed (plain `pytest` from a checkout).
# The eager engine is the oracle of the parity suites and CPU compiles cost seconds each: run them
# eager unless the environment asks otherwise (`TRAINER_COMPILE=1 pytest ...`). tests/compile
# tests the compiled engine explicitly, including the compile-on default with this variable unset.
os.environ.setdefault("TRAINER_COMPILE", "0")
for _p in (_TESTS, os.path.join(_ROOT, "kernels"), _ROOT):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from helpers.frameworks import FRAMEWORK_NAMES, import_framework  # noqa: E402


@pytest.fixture(params=FRAMEWORK_NAMES)
def L(request):
    """The framework module under test: ``pytorch_lightning`` or ``trainer`` (same test code)."""
    return import_framework(request.param)


@pytest.fixture
def PL():
    """pytorch-lightning, the oracle."""
    return import_framework("lightning")


@pytest.fixture
def TL():
    """`trainer`; skipped only while trainer/trainer.py does not exist."""
    return import_framework("trainer")
