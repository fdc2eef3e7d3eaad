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
# deepspeed (test extra) is an sdist whose build would compile its CUDA ops when asked to: never without a CUDA
# toolkit or a CUDA build of torch (its ops are JIT-built on first use instead, e.g. the CPU Adam of ZeRO-Offload).
if [ -z "${DS_BUILD_OPS:-}" ] && { ! command -v nvcc >/dev/null 2>&1 || \
     ! python -c "import sys, torch; sys.exit(torch.version.cuda is None)" 2>/dev/null; }; then
  export DS_BUILD_OPS=0
fi
# --no-build-isolation: the C++ extension is built against the torch installed above.
pip install --disable-pip-version-check -q --no-build-isolation -e ".[test,triton]"
