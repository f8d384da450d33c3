#!/usr/bin/env bash
# CI step: build attngan_fast._C against the CUDA build of torch as a user's install, a packager
# and the cuda backend's first-use build do; import it and check every binding the cuda backend
# calls and the architectures it holds. No GPU needed (no kernel runs).
#
#   bash tools/ci_cuda_build.sh
#
# 1. a build venv (cached): torch==$TORCH_CUDA_VERSION (from the index or a local wheel; pip is
#    never left to pick torch), setuptools, wheel, ninja;
# 2. pip wheel --no-deps --no-build-isolation . for $CI_ARCHS with the machine's CUDA toolkit;
# 3. a fresh venv: the wheel + torch==$TORCH_CUDA_VERSION, dependencies resolved as a user's
#    install resolves them; import attngan_fast._C, its bindings, SASS (and PTX) of $CI_ARCHS, the
#    sources carried for the first-use build, `attngan-fast env`;
# 4. the first-use build (cuda_ext.build_extension, torch.utils.cpp_extension.load) from the
#    source tree, which has no _C, into a TORCH_EXTENSIONS_DIR; the same checks.
#
# Cache (tools/ci_lib.sh): the build venv; the wheel and the first-use build, keyed on a hash of
# what decides them (csrc/, setup.py, pyproject.toml, MANIFEST.in, ops/cuda_build.py,
# ops/cuda_ext.py, this script, torch, nvcc and python versions, archs). Step 3 always runs in a
# new venv. Environment: TORCH_CUDA_VERSION (2.14.1), CI_ARCHS (9.0+PTX), CUDA_HOME (default:
# the toolkit of the nvcc on PATH, as nvcc reports it), MAX_JOBS (2).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
source tools/ci_lib.sh
unset PYTHONPATH  # what is checked is what got installed; set below where wanted

TORCH_CUDA_VERSION=${TORCH_CUDA_VERSION:-2.14.1}
CI_ARCHS=${CI_ARCHS:-9.0+PTX}
export MAX_JOBS=${MAX_JOBS:-2}
START=$SECONDS

ci_step "toolkit"
if [[ -z "${CUDA_HOME:-}" ]]; then
  CUDA_HOME=$("$CI_PYTHON" attngan_fast/ops/cuda_build.py cuda-home)
fi
if [[ -z "$CUDA_HOME" ]]; then
  echo "ci_cuda_build: no CUDA toolkit (set CUDA_HOME or put nvcc on PATH)" >&2
  exit 2
fi
export CUDA_HOME
NVCC_VERSION=$("$CUDA_HOME/bin/nvcc" --version | sed -n 's/.*release \([0-9.]*\).*/\1/p')
echo "CUDA_HOME=$CUDA_HOME (nvcc $NVCC_VERSION), archs $CI_ARCHS, torch $TORCH_CUDA_VERSION"
ci_done

ci_step "build venv (torch $TORCH_CUDA_VERSION)"
BUILD_VENV=$(cached_venv build-torch "torch==$TORCH_CUDA_VERSION" setuptools wheel ninja numpy)
"$BUILD_VENV/bin/python" -c "import torch; assert torch.version.cuda, 'torch without CUDA'; \
print('torch', torch.__version__, 'CUDA', torch.version.cuda)"
ci_done

KEY=$(content_hash csrc setup.py pyproject.toml MANIFEST.in attngan_fast/ops/cuda_build.py \
      attngan_fast/ops/cuda_ext.py tools/ci_cuda_build.sh "torch $TORCH_CUDA_VERSION" \
      "nvcc $NVCC_VERSION" "archs $CI_ARCHS" "$("$CI_PYTHON" -VV)")
WHEELS="$CI_CACHE/cuda-wheel/$KEY"

ci_step "wheel (key $KEY)"
if ! compgen -G "$WHEELS/attngan_fast-*.whl" >/dev/null; then
  rm -rf "$WHEELS" "$ROOT/build"
  mkdir -p "$WHEELS.tmp"
  start=$SECONDS
  TORCH_CUDA_ARCH_LIST=$CI_ARCHS "$BUILD_VENV/bin/pip" wheel --no-deps --no-build-isolation \
    --disable-pip-version-check -w "$WHEELS.tmp" . >"$WHEELS.log" 2>&1 ||
    { grep -v "is ignored" "$WHEELS.log" | tail -n 40; exit 1; }
  grep "attngan-fast: building the CUDA extension" "$WHEELS.log" || true
  mv "$WHEELS.tmp" "$WHEELS"
  echo "built in $((SECONDS - start)) s"
else
  echo "cached"
fi
WHEEL=$(compgen -G "$WHEELS/attngan_fast-*.whl" | head -n 1)
echo "$(basename "$WHEEL")"
ci_done

# the checks of steps 3 and 4: $1 = python, $2 = "wheel" | "first-use"
check_extension() {
  (cd "$(mktemp -d)" && CI_ARCHS=$CI_ARCHS "$1" - "$2" <<'PY'
import sys

import torch  # noqa: F401  (_C links against torch's libraries)

from attngan_fast.ops import cuda_build, cuda_ext

kind = sys.argv[1]
if kind == "wheel":
    import attngan_fast._C as ext

    assert cuda_build.source_dir() == cuda_build.WHEEL_CSRC, cuda_build.source_dir()
    assert cuda_build.sources(cuda_build.WHEEL_CSRC), "the wheel carries no CUDA sources"
    assert cuda_ext.extension_status()["built"]
else:
    assert cuda_ext._C is None, "the source tree should have no _C"
    ext = cuda_ext.build_extension()
missing = cuda_build.missing_bindings(ext)
assert not missing, f"missing bindings: {missing}"
archs = cuda_ext.compiled_archs(ext.__file__)
assert archs is not None, "no cuobjdump to read the architectures"
import os

for arch in os.environ["CI_ARCHS"].replace(" ", ";").split(";"):
    sm = arch.removesuffix("+PTX").replace(".", "")
    assert f"sm_{sm}" in archs["sass"], (arch, archs)
    if arch.endswith("+PTX"):
        assert f"compute_{sm}" in archs["ptx"], (arch, archs)
print(f"{kind}: {ext.__name__} imports, {len(cuda_build.BINDINGS)} bindings, archs {archs}")
PY
  )
}

ci_step "fresh venv: install the wheel as a user would"
FRESH=$(mktemp -d)
# deleting 5 GB of venv takes a minute of disk time: left to a background job at exit
trap '(rm -rf "$FRESH" &)' EXIT
"$CI_PYTHON" -m venv "$FRESH/venv"
"$FRESH/venv/bin/pip" install --disable-pip-version-check -q "$WHEEL" \
  "torch==$TORCH_CUDA_VERSION" >"$FRESH/install.log" 2>&1 ||
  { grep -v "is ignored" "$FRESH/install.log" | tail -n 40; exit 1; }
check_extension "$FRESH/venv/bin/python" wheel
(cd "$FRESH" && "$FRESH/venv/bin/attngan-fast" env | tee "$FRESH/env.txt")
grep -q "^_C            built" "$FRESH/env.txt"
ci_done

ci_step "first-use build (torch.utils.cpp_extension.load)"
JIT="$CI_CACHE/cuda-first-use/$KEY"
if [[ -f "$JIT/.ok" ]]; then
  echo "cached (same inputs built and checked before)"
else
  rm -rf "$JIT"
  mkdir -p "$JIT"
  start=$SECONDS
  (export PYTHONPATH=$ROOT TORCH_EXTENSIONS_DIR="$JIT" TORCH_CUDA_ARCH_LIST=$CI_ARCHS
   check_extension "$BUILD_VENV/bin/python" first-use)
  touch "$JIT/.ok"
  echo "built in $((SECONDS - start)) s"
fi
ci_done
# the cache keeps the current key only (a key per change of the inputs would pile up)
find "$CI_CACHE/cuda-wheel" "$CI_CACHE/cuda-first-use" -mindepth 1 -maxdepth 1 \
  ! -name "$KEY" ! -name "$KEY.*" -exec rm -rf {} +
echo "ci_cuda_build: all steps passed ($((SECONDS - START)) s)"
