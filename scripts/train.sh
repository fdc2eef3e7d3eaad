#!/usr/bin/env bash
# Sets up .venv and runs the main job: a CNN on scikit-learn's bundled digits data set.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
exec python examples/train_digits.py "$@"
