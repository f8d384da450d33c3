#!/usr/bin/env bash
# CI step: benchmarks/run_gpu.sh cannot fall over. Run on the CPU (all GPU tests skip, the
# benchmarks in their CPU smoke mode) in a venv with the CUDA build of torch (2.14.1, from this
# disk) that lacks pyyaml, pillow, pytest-benchmark and hypothesis, with a folder of their wheels
# (and ninja) beside it (as a GPU machine without a package index gets them), and with a broken `nvcc` first
# on PATH and no CUDA_HOME (no toolkit: setup.py skips _C, the cuda backend says why). Checks the
# summary: the dependencies installed from the wheels, _C reported as not built and why, the
# tests/ops files run one by one, the Triton warm-up and the benchmark run; then a second run with
# a 3-second budget per test file must report the timeouts and still finish.
#
#   bash tools/ci_run_gpu_script.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
source tools/ci_lib.sh
unset PYTHONPATH  # what is checked is what got installed; set below where wanted
START=$SECONDS

ci_step "venv without pyyaml / pillow, and a folder of wheels"
TEMPLATE=$(cached_venv run-gpu-script "torch==${TORCH_CUDA_VERSION:-2.14.1}" numpy tqdm pytest)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cp -al "$TEMPLATE" "$WORK/venv"  # hard links: seconds; run_gpu.sh installs into the copy only
VENV="$WORK/venv"
for module in yaml PIL pytest_benchmark ninja; do
  if "$VENV/bin/python" -c "import $module" 2>/dev/null; then
    echo "ci_run_gpu_script: the venv must lack $module" >&2
    exit 1
  fi
done
WHEELS="$CI_CACHE/run-gpu-wheels"
if [[ ! -f "$WHEELS/.complete" ]]; then
  rm -rf "$WHEELS"
  "$VENV/bin/python" -m pip download -q -d "$WHEELS" pyyaml pillow pytest-benchmark hypothesis ninja \
    >"$CI_CACHE/run-gpu-wheels.log" 2>&1 || { tail -n 20 "$CI_CACHE/run-gpu-wheels.log"; exit 1; }
  touch "$WHEELS/.complete"
fi
mkdir -p "$WORK/bin"
printf '#!/bin/sh\necho "nvcc: broken wrapper" >&2\nexit 127\n' >"$WORK/bin/nvcc"
chmod +x "$WORK/bin/nvcc"
NO_NVCC_PATH="$WORK/bin:$(printf '%s' "$PATH" | tr ':' '\n' |
  while read -r d; do [[ -x "$d/nvcc" ]] || printf '%s\n' "$d"; done | paste -sd:)"
ci_done

# run_gpu OUT_DIR ENV... : the script on the CPU with the broken nvcc first on PATH
run_gpu() {
  local out=$1
  shift
  mkdir -p "$out"
  (unset CUDA_HOME CUDA_PATH
   env PATH="$NO_NVCC_PATH" PYTHON="$VENV/bin/python" OUT="$out" WHEELS="$WHEELS" \
     TRITON_INTERPRET=1 PIP_DISABLE_PIP_VERSION_CHECK=1 "$@" \
     bash "$ROOT/benchmarks/run_gpu.sh" >"$out/stdout.log" 2>&1) ||
    { tail -n 40 "$out/stdout.log"; echo "ci_run_gpu_script: run_gpu.sh failed" >&2; exit 1; }
}

# expect FILE TEXT : the summary holds TEXT
expect() {
  grep -qF -- "$2" "$1" || {
    echo "ci_run_gpu_script: summary lacks: $2" >&2
    cat "$1" >&2
    exit 1
  }
}

ci_step "run_gpu.sh on the CPU: missing dependencies, no toolkit"
FIRST="$WORK/first"
run_gpu "$FIRST" TOTAL_S=400 PER_FILE_S=120 REST_S=150 WARM_S=60 \
  GPU_TEST_FILES="tests/ops/test_phase_conv.py tests/ops/test_word_attention.py" \
  WARM_EXTRA="--device cpu --tiers tiny --dtypes fp32" \
  BENCH_EXTRA="--cpu-smoke --sections ops --ops word_attention --passes fwd"
S="$FIRST/summary.txt"
cat "$S"
expect "$S" "dependencies: installed from wheels in $WHEELS: pyyaml pillow pytest-benchmark hypothesis ninja"
if grep -q "STILL MISSING" "$S"; then echo "dependencies left missing" >&2; exit 1; fi
expect "$S" "install: ok"
expect "$S" "_C: not built (no CUDA toolkit found (set CUDA_HOME, or put nvcc on PATH))"
expect "$S" "pytest tests/ops/test_phase_conv.py: no tests selected (none marked gpu)"
expect "$S" "pytest tests/ops/test_word_attention.py: ok"
expect "$S" "pytest (rest of tests/): ok"
expect "$S" "warm: ok: warm: 7 warmed, 0 failed"
expect "$S" "bench: ok"
grep -q "CUDA toolkit: none (no CUDA toolkit found" "$FIRST/stdout.log" ||
  { echo "the missing toolkit is not reported" >&2; exit 1; }
ci_done

ci_step "run_gpu.sh with a 3 s budget per test file"
SECOND="$WORK/second"
run_gpu "$SECOND" TOTAL_S=600 PER_FILE_S=3 REST_S=3 SKIP_INSTALL=1 SKIP_WARM=1 SKIP_BENCH=1 \
  GPU_TEST_FILES="tests/ops/test_word_attention.py"
S="$SECOND/summary.txt"
cat "$S"
expect "$S" "dependencies: all present"
expect "$S" "pytest tests/ops/test_word_attention.py: timed out after 3 s"
expect "$S" "pytest (rest of tests/): timed out after 3 s"
expect "$S" "warm: skipped (SKIP_WARM)"
expect "$S" "bench: skipped (SKIP_BENCH)"
ci_done
echo "ci_run_gpu_script: passed ($((SECONDS - START)) s)"
