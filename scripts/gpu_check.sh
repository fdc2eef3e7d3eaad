#!/usr/bin/env bash
# On a machine with a CUDA GPU: the checks only a GPU can run, in one go (device time is short).
# Builds trainer._C with its CUDA kernels, runs the tests that skip on CPU machines (CUDA kernels,
# fused optimizers, fp16 AMP, CUDA-graph replay) and the GPU rows of the side-by-side benchmark.
# Logs go to $OUT (or ./gpu_check_out).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_check_out}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || { echo "no GPU (nvidia-smi failed)"; exit 1; }
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "torch has no CUDA here: install a CUDA build of torch first" | tee "$OUT/error.txt"; exit 1
fi
"$PY" -m pip install --disable-pip-version-check -q --no-build-isolation -e ".[test,triton]" > "$OUT/build.txt" 2>&1
"$PY" -c "import trainer._C as C; print('trainer._C with_cuda =', C.with_cuda)" | tee -a "$OUT/build.txt"
"$PY" -m pytest -q -rs tests/optim tests/compile/test_cudagraphs.py tests/compile/test_fp16.py \
  tests/test_numerics.py > "$OUT/gpu_tests.txt" 2>&1
echo "gpu tests: $(tail -1 "$OUT/gpu_tests.txt")"
"$PY" benchmarks/compare.py --device cuda --workloads tiny_mlp mlp gpt --repeats 3 --max-others -1 \
  --json "$OUT/compare_cuda.json" > "$OUT/compare_cuda.txt" 2>&1
grep -A12 "^| workload" "$OUT/compare_cuda.txt"
