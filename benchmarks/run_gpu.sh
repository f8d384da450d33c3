#!/usr/bin/env bash
# Everything a GPU machine has to do, in one call, in under 10 minutes on an H100:
#   1. pip install --no-deps --no-build-isolation -e .   (builds attngan_fast._C when nvcc exists)
#   2. pytest -m gpu                                       (the GPU parity tests)
#   3. attngan-fast bench: ceilings, end-to-end iteration (a)/(b)/(c), op microbenchmarks
#   4. pytest-benchmark over the ops, if time is left
# Results go to benchmarks/results/ (and are copied to $OUT when it is set, with the logs).
# Each section has a time budget; the benchmark sections stop starting new work when theirs is
# spent, so the whole script ends inside TOTAL_S (default 560 s). The short table prints last.
#
#   bash benchmarks/run_gpu.sh
#   SKIP_PYTEST=1 E2E_SHARE=0 BENCH_EXTRA="--sections ops --tiers extra" bash benchmarks/run_gpu.sh
# Environment: TOTAL_S (560), SKIP_INSTALL=1, SKIP_PYTEST=1, E2E_SHARE (60: per cent of the
# benchmark time for end-to-end, the rest for ops), BENCH_EXTRA (more bench arguments, e.g.
# "--sections e2e --configs coco"), PYTHON (python3).
set -u -o pipefail
cd "$(dirname "$0")/.."

TOTAL_S=${TOTAL_S:-560}
START=$(date +%s)
PY=${PYTHON:-python3}
LOGS=${OUT:-/tmp/attngan-fast-logs}
mkdir -p "$LOGS" benchmarks/results
export PYTHONUNBUFFERED=1
elapsed() { echo $(( $(date +%s) - START )); }
left() { echo $(( TOTAL_S - $(date +%s) + START )); }
section() { echo; echo "=== $1 (at $(elapsed) s, $(left) s left)"; }

section "environment"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,memory.total --format=csv || true
$PY -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)"
# build the extension for this card only (a quarter of the compile time of the default list)
ARCH=$($PY -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())" 2>/dev/null || echo "9.0")
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-$ARCH}
export MAX_JOBS=${MAX_JOBS:-16}

section "install (budget 150 s)"
INSTALL_RC=skipped
if [ -z "${SKIP_INSTALL:-}" ]; then
  timeout 150 $PY -m pip install --no-deps --no-build-isolation -e . >"$LOGS/install.log" 2>&1
  INSTALL_RC=$?
  tail -n 4 "$LOGS/install.log"
fi
EXT=$($PY -c "import attngan_fast._C; print('attngan_fast._C built')" 2>&1 | tail -n 1)
echo "install rc=$INSTALL_RC; $EXT"

section "pytest -m gpu (budget 120 s)"
PYTEST_RC=skipped
PYTEST_SUMMARY=""
if [ -z "${SKIP_PYTEST:-}" ]; then
  timeout 120 $PY -m pytest -m gpu -q -p no:cacheprovider tests >"$LOGS/pytest_gpu.log" 2>&1
  PYTEST_RC=$?
  tail -n 15 "$LOGS/pytest_gpu.log"
  PYTEST_SUMMARY=$(tail -n 1 "$LOGS/pytest_gpu.log")
fi

section "benchmarks"
REMAIN=$(( $(left) - 40 ))  # keep 40 s for the overrun of the last item and the wrap-up
E2E_SHARE=${E2E_SHARE:-60}  # per cent of the benchmark time for the end-to-end section
E2E_S=$(( REMAIN * E2E_SHARE / 100 ))
OPS_S=$(( REMAIN - E2E_S ))
echo "e2e budget ${E2E_S} s, ops budget ${OPS_S} s"
BENCH_ARGS=(--e2e-budget-s "$E2E_S" --ops-budget-s "$OPS_S" --total-budget-s "$(( $(left) - 20 ))")
if [ "$E2E_S" -lt 200 ]; then BENCH_ARGS+=(--no-large-batch); fi
if [ -n "${OUT:-}" ]; then BENCH_ARGS+=(--copy-to "$OUT"); fi
# shellcheck disable=SC2206  # BENCH_EXTRA is split into arguments on purpose
if [ -n "${BENCH_EXTRA:-}" ]; then BENCH_ARGS+=(${BENCH_EXTRA}); fi
MARK=$(mktemp)  # results newer than this file are this run's
timeout $(( $(left) > 30 ? $(left) - 10 : 20 )) $PY -m attngan_fast.bench "${BENCH_ARGS[@]}" 2>&1 | tee "$LOGS/bench.log"
BENCH_RC=$?
LATEST=$(find benchmarks/results -name '*.json' -newer "$MARK" | head -n 1)
if [ -n "${OUT:-}" ] && [ -n "$LATEST" ]; then  # a run cut short still leaves its partial files
  cp "$LATEST" "${LATEST%.json}.md" "$OUT"/ 2>/dev/null || true
fi

if [ "$(left)" -gt 90 ]; then
  section "pytest-benchmark (ops, core shapes)"
  timeout $(( $(left) - 30 )) $PY -m pytest benchmarks/ --benchmark-only -q -p no:cacheprovider \
    --benchmark-columns=median,iqr,rounds >"$LOGS/pytest_benchmark.log" 2>&1
  tail -n 3 "$LOGS/pytest_benchmark.log"
fi

section "summary (total $(elapsed) s)"
echo "install rc=$INSTALL_RC; $EXT"
echo "pytest -m gpu rc=$PYTEST_RC: $PYTEST_SUMMARY"
echo "bench rc=$BENCH_RC; results: $LATEST"
if [ -n "$LATEST" ]; then $PY -m attngan_fast.bench --headline "$LATEST"; fi
