#!/usr/bin/env bash
# The GPU check of issue 14, for one H100/H200 in under 9 minutes; fails loudly at the first problem.
#   1. build trainer._C with CUDA (in place) and assert it has CUDA kernels and that Triton imports;
#   2. pytest -m gpu, a skip counted as a failure (a CPU-only build must not pass);
#   3-4. benchmarks/gpu_check.py: correctness (bf16-mixed, 16-mixed with skipped steps, CUDA graphs
#        on/off vs Lightning) and speed (GPT-2-small tokens/s and MFU, fused AdamW GB/s, profiler counts);
#   5. everything under $OUT (or the folder given as $1): gpu_check.json, gpu_check.md, logs.
# DRY_RUN=1: on a CPU machine, check the wiring: no build, the gpu tests only collected, and
# gpu_check.py --dry-run (tiny sizes on the CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-${OUT:-gpu_check_out}}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
DRY_RUN=${DRY_RUN:-0}
export PYTHONUNBUFFERED=1
start=$SECONDS
stage() { echo "== $1 ($((SECONDS - start))s)"; }

if [ "$DRY_RUN" != 1 ]; then
  stage "device"
  nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || { echo "FAIL: no GPU (nvidia-smi failed)"; exit 1; }
  "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() and torch.version.cuda else 1)" \
    || { echo "FAIL: torch has no CUDA here"; exit 1; }

  stage "build trainer._C with CUDA"
  # in place (no reinstall): TRAINER_CUDA=1 so a version mismatch is tried, never a silent CPU-only build
  TRAINER_CUDA=1 MAX_JOBS=${MAX_JOBS:-16} "$PY" setup.py build_ext --inplace > "$OUT/build.txt" 2>&1 \
    || { tail -30 "$OUT/build.txt"; echo "FAIL: build"; exit 1; }
  grep "trainer._C:" "$OUT/build.txt"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

stage "extension and backends"
"$PY" - "$DRY_RUN" <<'EOF'
import sys
import trainer.optim as topt
dry = sys.argv[1] == "1"
print(f"HAS_CPP={topt.HAS_CPP} HAS_CUDA_EXT={topt.HAS_CUDA_EXT}")
if not dry:
    assert topt.HAS_CPP, "trainer._C did not load"
    assert topt.HAS_CUDA_EXT, "trainer._C has no CUDA kernels"
    import trainer_kernels as kernels  # the Triton backend: registers torch.ops.trainer_triton.*
    assert kernels.HAS_TRITON, f"the Triton backend did not import: {kernels.TRITON_ERROR}"
    assert topt.compiled_update_uses_ext({"cuda"}), "the compiled step would not use the CUDA kernels"
EOF

stage "pytest -m gpu (skips fail)"
if [ "$DRY_RUN" = 1 ]; then
  "$PY" -m pytest -q -p no:cacheprovider -m gpu --collect-only tests > "$OUT/gpu_tests.txt" 2>&1
  tail -1 "$OUT/gpu_tests.txt"
else
  # -rs lists skip reasons; a skipped gpu test means a missing GPU feature: a failure here
  "$PY" -m pytest -q -p no:cacheprovider -m gpu -rs tests > "$OUT/gpu_tests.txt" 2>&1 \
    || { tail -40 "$OUT/gpu_tests.txt"; echo "FAIL: gpu tests"; exit 1; }
  tail -1 "$OUT/gpu_tests.txt"
  if grep -q "skipped" <(tail -1 "$OUT/gpu_tests.txt"); then
    grep "^SKIPPED" "$OUT/gpu_tests.txt" | head -20; echo "FAIL: gpu tests skipped on a GPU"; exit 1
  fi
fi

stage "correctness and speed"
dry_flag=()
[ "$DRY_RUN" = 1 ] && dry_flag=(--dry-run)
"$PY" benchmarks/gpu_check.py "${dry_flag[@]}" --out "$OUT" > "$OUT/gpu_check.txt" 2>&1 \
  || { tail -40 "$OUT/gpu_check.txt"; echo "FAIL: gpu_check.py"; exit 1; }
stage "done"
cat "$OUT/gpu_check.md"
