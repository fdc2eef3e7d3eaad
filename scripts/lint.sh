#!/usr/bin/env bash
# Lint step of the test command (scripts/test.sh runs it before the tests; CI runs scripts/test.sh):
# ruff (pyflakes, pycodestyle, import order, complexity limit) on the whole tree, then mypy on the
# `trainer` and `trainer_kernels` packages. Both are configured in pyproject.toml; mypy's cache is
# .mypy_cache (gitignored), so a second run only re-checks what changed.
# Uses the active Python environment (scripts/test.sh activates .venv; the test extra installs both).
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== ruff check =="
python -m ruff check .
echo "== mypy =="
python -m mypy
