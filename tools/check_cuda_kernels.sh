#!/usr/bin/env bash
# Compile-check of the CUDA sources without torch or a GPU.
#
#   tools/check_cuda_kernels.sh            every csrc/*.cu with nvcc -c for sm_80 and sm_90
#
# Each kernel file is compiled (in parallel) to an object in a temporary directory with the flags
# torch's CUDAExtension uses (the C++ standard the installed torch's headers require, as
# attngan_fast/ops/cuda_build.py reads it: C++20 for torch 2.14, C++17 for 2.13 and older; -O3; no
# implicit half / bfloat16 conversions); one line per file. nvcc: $NVCC, else the toolkit
# cuda_build.py finds ($CUDA_HOME / $CUDA_PATH, the nvcc on PATH, torch's CUDA_HOME). Then csrc/bindings.cpp, which needs torch's headers, is syntax-checked with the host
# compiler against torch.utils.cpp_extension.include_paths() when torch and g++ are available (a
# CPU build of torch lacks one generated header, c10/cuda/impl/cuda_cmake_macros.h, so a stub of
# it is provided). Exits non-zero if anything fails.
set -uo pipefail
cd "$(dirname "$0")/.."

PY="${PYTHON:-python3}"
if [[ -z "${NVCC:-}" ]]; then
  home="$("$PY" attngan_fast/ops/cuda_build.py cuda-home 2>/dev/null || true)"
  if [[ -n "$home" ]]; then
    NVCC="$home/bin/nvcc"
  else
    NVCC="$(command -v nvcc || true)"
  fi
fi
if [[ -z "$NVCC" ]]; then
  echo "check_cuda_kernels: nvcc not found (put it on PATH or set CUDA_HOME)" >&2
  exit 2
fi
STD="$("$PY" attngan_fast/ops/cuda_build.py std 2>/dev/null || echo -std=c++17)"

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
FLAGS=("$STD" -O3 -Icsrc
       -D__CUDA_NO_HALF_OPERATORS__ -D__CUDA_NO_HALF_CONVERSIONS__
       -D__CUDA_NO_BFLOAT16_CONVERSIONS__ -D__CUDA_NO_HALF2_OPERATORS__
       -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90)

shopt -s nullglob
sources=(csrc/*.cu)
if (( ${#sources[@]} == 0 )); then
  echo "check_cuda_kernels: no csrc/*.cu files" >&2
  exit 1
fi

pids=()
for src in "${sources[@]}"; do
  name="$(basename "$src" .cu)"
  ( start=$SECONDS
    if "$NVCC" "${FLAGS[@]}" -c "$src" -o "$TMP/$name.o" >"$TMP/$name.log" 2>&1; then
      echo "ok    $src (sm_80, sm_90, $STD; $((SECONDS - start)) s)"
    else
      echo "FAIL  $src"
      sed 's/^/      /' "$TMP/$name.log"
      exit 1
    fi ) &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do
  wait "$pid" || status=1
done

# The binding: host-compiler syntax check against torch's headers.
if [[ -f csrc/bindings.cpp ]]; then
  CXX="${CXX:-g++}"
  if command -v "$CXX" >/dev/null && "$PY" -c "import torch" 2>/dev/null; then
    mkdir -p "$TMP/stub/c10/cuda/impl"
    printf '#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n' \
      >"$TMP/stub/c10/cuda/impl/cuda_cmake_macros.h"
    mapfile -t incs < <("$PY" - <<'PY'
import sysconfig
from torch.utils.cpp_extension import include_paths
for p in include_paths():
    print(p)
print(sysconfig.get_paths()["include"])
PY
)
    # nvcc's own include flags (where cuda_runtime_api.h lives), as its dry run reports them
    cuda_incs="$("$NVCC" --dryrun -c csrc/"$(basename "${sources[0]}")" -o "$TMP/dry.o" 2>&1 |
                 sed -n 's/^#\$ INCLUDES="\(.*\)".*/\1/p' | head -n 1)"
    args=()
    for p in "${incs[@]}"; do args+=(-isystem "$p"); done
    # torch's own headers come first; the stub only fills the generated header a CPU build lacks
    args+=(-isystem "$TMP/stub")
    for flag in $cuda_incs; do args+=(-isystem "${flag#-I}"); done
    if "$CXX" "$STD" -fsyntax-only -Wall -Wextra -DTORCH_EXTENSION_NAME=_C \
        -DTORCH_API_INCLUDE_EXTENSION_H "${args[@]}" -Icsrc csrc/bindings.cpp \
        >"$TMP/bindings.log" 2>&1 && ! grep -q "warning:" "$TMP/bindings.log"; then
      echo "ok    csrc/bindings.cpp (syntax, $CXX + torch headers)"
    else
      echo "FAIL  csrc/bindings.cpp"
      sed 's/^/      /' "$TMP/bindings.log"
      status=1
    fi
  else
    echo "skip  csrc/bindings.cpp (needs $CXX and an importable torch)"
  fi
fi
exit "$status"
