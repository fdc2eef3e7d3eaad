#!/usr/bin/env bash
# Sets up .venv, runs the linters (scripts/lint.sh: ruff, mypy) and the whole test suite (CPU; GPU tests
# skip with a reason).
#
# Two passes: the whole suite (tests/conftest.py runs the eager engine, the oracle, unless a test asks
# for the compiled one; tests/compile tests the compiled engine explicitly), then the suites that
# compare with pytorch-lightning (parity, hook order, numerics, exact SIGKILL resume, logging, trainer,
# module, checkpoints, loops, callbacks, the main job) again under the default engine users get: TRAINER_COMPILE=1.
# With arguments, only `pytest "$@"` runs (one pass, as asked; no lint).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
if [ "$#" -gt 0 ]; then
  exec python -m pytest -q "$@"
fi
bash scripts/lint.sh
python -m pytest -q
echo "== the Lightning-parity suites again, under the compiled engine (TRAINER_COMPILE=1) =="
TRAINER_COMPILE=1 exec python -m pytest -q -p no:cacheprovider \
  tests/parity tests/test_hook_order.py tests/test_numerics.py tests/test_checkpoint_resume.py \
  tests/test_logger_connector.py tests/test_trainer.py tests/test_module.py tests/test_checkpoint.py \
  tests/loops tests/callbacks tests/examples
