#!/usr/bin/env bash
# Creates .venv (once) and installs the package with its test extras into it.
# torch is installed first from the pinned CPU build when absent, so that the loose
# `torch>=2.5` requirement of the package never pulls a multi-GB CUDA build on a CPU machine.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
if ! python -c "import torch" 2>/dev/null; then
  pip install --disable-pip-version-check -q "torch==${TRAINER_TORCH_VERSION:-2.13.0}"
fi
pip install --disable-pip-version-check -q setuptools wheel ninja
# --no-build-isolation: the C++ extension is built against the torch installed above.
pip install --disable-pip-version-check -q --no-build-isolation -e ".[test,triton]"
