#!/usr/bin/env bash
# Everything a GPU machine has to do, in one call, in under 10 minutes on an H100; no step can stop
# the ones after it, and the summary says what ran, what did not and why:
#   1. environment: GPU, versions, the CUDA toolkit found (attngan-fast env)
#   2. Python dependencies checked and the missing ones installed, from $WHEELS (a folder of
#      wheels carried with the checkout) when it exists, else from the package index; never torch
#      or triton (they must be there: the machine's CUDA build)
#   3. pip install --no-deps --no-build-isolation -e .   (builds attngan_fast._C when a CUDA
#      toolkit is found; else the cuda backend builds it on first use, or says why it cannot)
#   4. pytest -m gpu: tests/ops first, one file at a time within PER_FILE_S each, then the rest
#      within REST_S (the G compile tests: slowest, least important for the kernels)
#   5. warm Triton's caches (benchmarks/warm_triton.py; TRITON_CACHE_AUTOTUNING=1 keeps the
#      autotuner's picks on disk for the processes after it)
#   6. attngan-fast bench: ceilings, end-to-end iteration (a)/(b)/(c), op microbenchmarks
#   7. pytest-benchmark over the ops, if time is left
# Results go to benchmarks/results/ (and are copied to $OUT when it is set, with the logs). Each
# section has a time budget; the whole script ends inside TOTAL_S (default 560 s).
#
#   bash benchmarks/run_gpu.sh
#   SKIP_PYTEST=1 E2E_SHARE=0 BENCH_EXTRA="--sections ops --tiers extra" bash benchmarks/run_gpu.sh
# Environment: TOTAL_S (560), SKIP_INSTALL=1, SKIP_PYTEST=1, SKIP_WARM=1, SKIP_BENCH=1 (the bench
# and pytest-benchmark), PER_FILE_S (60), REST_S
# (120), WARM_S (90), WARM_EXTRA (more warm_triton.py arguments), E2E_SHARE (60: per cent of the
# benchmark time for end-to-end, the rest for ops), BENCH_EXTRA (more bench arguments, e.g.
# "--sections e2e --configs coco"), GPU_TEST_FILES (the tests/ops files, default all), WHEELS
# (benchmarks/wheels), PYTHON (python3).
set -u -o pipefail
cd "$(dirname "$0")/.."

TOTAL_S=${TOTAL_S:-560}
START=$(date +%s)
PY=${PYTHON:-python3}
LOGS=${OUT:-/tmp/attngan-fast-logs}
WHEELS=${WHEELS:-benchmarks/wheels}
mkdir -p "$LOGS" benchmarks/results
export PYTHONUNBUFFERED=1 TRITON_CACHE_AUTOTUNING=1
elapsed() { echo $(( $(date +%s) - START )); }
left() { echo $(( TOTAL_S - $(date +%s) + START )); }
section() { echo; echo "=== $1 (at $(elapsed) s, $(left) s left)"; }
SUMMARY=()
note() { SUMMARY+=("$1"); }
# the outcome of a command's exit status: ok | failed (rc N) | timed out after N s
outcome() {
  case "$1" in
    0) echo "ok" ;;
    124|137) echo "timed out after $2 s" ;;
    5) echo "no tests selected (none marked gpu)" ;;
    *) echo "failed (rc $1)" ;;
  esac
}

section "environment"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,memory.total --format=csv \
  2>/dev/null || echo "nvidia-smi: not available"
if ! $PY -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'triton', triton.__version__)"; then
  echo "torch and triton must be installed (the CUDA build of torch for this machine): stopping"
  exit 2
fi
CUDA_HOME_FOUND=$($PY attngan_fast/ops/cuda_build.py cuda-home 2>"$LOGS/toolkit.log")
echo "CUDA toolkit: ${CUDA_HOME_FOUND:-none ($(tail -n 1 "$LOGS/toolkit.log"))}"
if [ -n "$CUDA_HOME_FOUND" ]; then export CUDA_HOME=${CUDA_HOME:-$CUDA_HOME_FOUND}; fi
# build the extension for this card only (a quarter of the compile time of the default list)
ARCH=$($PY -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())" 2>/dev/null \
  || echo "9.0")
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-$ARCH}
export MAX_JOBS=${MAX_JOBS:-16}

section "python dependencies"
# module:package pairs; pytest and the rest only for the tests and benchmarks
DEPS="yaml:pyyaml PIL:pillow numpy:numpy tqdm:tqdm pytest:pytest pytest_benchmark:pytest-benchmark
      hypothesis:hypothesis ninja:ninja"
missing_deps() {
  local pair out=()
  for pair in $DEPS; do
    $PY -c "import ${pair%%:*}" 2>/dev/null || out+=("${pair#*:}")
  done
  echo "${out[*]:-}"
}
MISSING=$(missing_deps)
if [ -z "$MISSING" ]; then
  note "dependencies: all present"
else
  echo "missing: $MISSING"
  for pkg in $MISSING; do  # one at a time: a package that cannot be had spoils no other
    if [ -d "$WHEELS" ]; then
      $PY -m pip install --no-index --find-links "$WHEELS" "$pkg" >>"$LOGS/deps.log" 2>&1
    else
      $PY -m pip install "$pkg" >>"$LOGS/deps.log" 2>&1
    fi || echo "could not install $pkg (see $LOGS/deps.log)"
  done
  STILL=$(missing_deps)
  FROM=$([ -d "$WHEELS" ] && echo "wheels in $WHEELS" || echo "the package index")
  note "dependencies: installed from $FROM: $MISSING${STILL:+; STILL MISSING: $STILL}"
fi
has() { $PY -c "import $1" 2>/dev/null; }

section "install (budget 150 s)"
INSTALL_RC=skipped
if [ -z "${SKIP_INSTALL:-}" ]; then
  timeout 150 $PY -m pip install --no-deps --no-build-isolation -e . >"$LOGS/install.log" 2>&1
  INSTALL_RC=$?
  grep "attngan-fast: " "$LOGS/install.log" | tail -n 1
  tail -n 2 "$LOGS/install.log"
  note "install: $(outcome "$INSTALL_RC" 150)"
else
  note "install: skipped (SKIP_INSTALL)"
fi
EXT=$($PY -c "import attngan_fast._C" 2>&1 | tail -n 1)
if [ -z "$EXT" ]; then
  note "_C: built"
else
  WHY=$($PY -c "from attngan_fast.ops import cuda_ext; print(cuda_ext.why_no_build() or \
'the cuda backend builds it on first use')" 2>&1 | tail -n 1)
  note "_C: not built ($WHY)"
fi
$PY -m attngan_fast.cli env >"$LOGS/env.txt" 2>&1 && cat "$LOGS/env.txt"

section "pytest -m gpu: tests/ops one file at a time (${PER_FILE_S:-60} s each), then the rest"
PER_FILE_S=${PER_FILE_S:-60}
REST_S=${REST_S:-120}
if [ -n "${SKIP_PYTEST:-}" ]; then
  note "pytest: skipped (SKIP_PYTEST)"
elif ! has pytest || ! has yaml || ! has PIL; then
  note "pytest: not run (pytest, pyyaml or pillow missing after the dependency step)"
else
  FILES=${GPU_TEST_FILES:-$(ls tests/ops/test_*.py)}
  for f in $FILES; do
    room=$(( $(left) - 200 ))  # keep 200 s for the warm-up and the benchmarks
    if [ "$room" -lt 10 ]; then note "pytest $f: not run (time budget spent)"; continue; fi
    budget=$(( room < PER_FILE_S ? room : PER_FILE_S ))
    log="$LOGS/pytest_$(basename "$f" .py).log"
    timeout "$budget" $PY -m pytest -m gpu -q -p no:cacheprovider "$f" >"$log" 2>&1
    rc=$?
    note "pytest $f: $(outcome "$rc" "$budget"): $(tail -n 1 "$log")"
  done
  room=$(( $(left) - 200 ))
  budget=$(( room < REST_S ? room : REST_S ))
  if [ "$room" -lt 10 ]; then
    note "pytest (rest of tests/): not run (time budget spent)"
  else
    timeout "$budget" $PY -m pytest -m gpu -q -p no:cacheprovider tests --ignore=tests/ops \
      >"$LOGS/pytest_rest.log" 2>&1
    rc=$?
    note "pytest (rest of tests/): $(outcome "$rc" "$budget"): $(tail -n 1 "$LOGS/pytest_rest.log")"
  fi
fi

section "warm Triton's caches"
WARM_S=${WARM_S:-90}
if [ -n "${SKIP_WARM:-}" ]; then
  note "warm: skipped (SKIP_WARM)"
elif ! has yaml; then
  note "warm: not run (pyyaml missing)"
else
  # shellcheck disable=SC2086  # WARM_EXTRA is split into arguments on purpose
  timeout $(( WARM_S + 60 )) $PY benchmarks/warm_triton.py --budget-s "$WARM_S" ${WARM_EXTRA:-} \
    >"$LOGS/warm.log" 2>&1
  rc=$?
  tail -n 3 "$LOGS/warm.log"
  note "warm: $(outcome "$rc" $(( WARM_S + 60 ))): $(tail -n 1 "$LOGS/warm.log")"
fi

section "benchmarks"
REMAIN=$(( $(left) - 40 ))  # keep 40 s for the overrun of the last item and the wrap-up
E2E_SHARE=${E2E_SHARE:-60}  # per cent of the benchmark time for the end-to-end section
E2E_S=$(( REMAIN * E2E_SHARE / 100 ))
OPS_S=$(( REMAIN - E2E_S ))
LATEST=""
if [ -n "${SKIP_BENCH:-}" ]; then
  note "bench: skipped (SKIP_BENCH)"
elif [ "$REMAIN" -lt 30 ]; then
  note "bench: not run (time budget spent)"
elif ! has yaml; then
  note "bench: not run (pyyaml missing)"
else
  echo "e2e budget ${E2E_S} s, ops budget ${OPS_S} s"
  BENCH_ARGS=(--e2e-budget-s "$E2E_S" --ops-budget-s "$OPS_S" --total-budget-s "$(( $(left) - 20 ))")
  if [ "$E2E_S" -lt 200 ]; then BENCH_ARGS+=(--no-large-batch); fi
  if [ -n "${OUT:-}" ]; then BENCH_ARGS+=(--copy-to "$OUT"); fi
  # shellcheck disable=SC2206  # BENCH_EXTRA is split into arguments on purpose
  if [ -n "${BENCH_EXTRA:-}" ]; then BENCH_ARGS+=(${BENCH_EXTRA}); fi
  MARK=$(mktemp)  # results newer than this file are this run's
  budget=$(( $(left) > 30 ? $(left) - 10 : 20 ))
  timeout "$budget" $PY -m attngan_fast.bench "${BENCH_ARGS[@]}" 2>&1 | tee "$LOGS/bench.log"
  rc=${PIPESTATUS[0]}
  LATEST=$(find benchmarks/results -name '*.json' -newer "$MARK" | head -n 1)
  if [ -n "${OUT:-}" ] && [ -n "$LATEST" ]; then  # a run cut short still leaves its partial files
    cp "$LATEST" "${LATEST%.json}.md" "$OUT"/ 2>/dev/null || true
  fi
  note "bench: $(outcome "$rc" "$budget"); results: ${LATEST:-none in benchmarks/results}"
fi

if [ -n "${SKIP_BENCH:-}" ]; then
  note "pytest-benchmark: skipped (SKIP_BENCH)"
elif [ "$(left)" -gt 90 ] && has pytest_benchmark; then
  section "pytest-benchmark (ops, core shapes)"
  timeout $(( $(left) - 30 )) $PY -m pytest benchmarks/ --benchmark-only -q -p no:cacheprovider \
    --benchmark-columns=median,iqr,rounds >"$LOGS/pytest_benchmark.log" 2>&1
  rc=$?
  tail -n 3 "$LOGS/pytest_benchmark.log"
  note "pytest-benchmark: $(outcome "$rc" $(( $(left) - 30 )))"
else
  note "pytest-benchmark: not run ($( has pytest_benchmark && echo 'time budget spent' \
    || echo 'pytest-benchmark missing'))"
fi

section "summary (total $(elapsed) s)"
printf '%s\n' "${SUMMARY[@]}" | tee "$LOGS/summary.txt"
if [ -n "$LATEST" ]; then $PY -m attngan_fast.bench --headline "$LATEST"; fi
exit 0
