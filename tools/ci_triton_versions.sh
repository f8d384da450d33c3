#!/usr/bin/env bash
# CI step: the Triton kernels under the older Triton releases users have (torch pins Triton:
# torch 2.14 takes 3.8, torch 2.11 takes 3.6). The newest Triton runs the whole suite in .ci/run;
# here, for each older release, in a venv of its own with torch 2.13.0 (CPU) beside it:
#
#   * the interpreter parity tests of every Triton op (TRITON_INTERPRET=1; the op's parity,
#     layouts, masks, stride-zero gradients, the device guard; opcheck and torch.compile are
#     left to the main run: they test torch.library, not Triton),
#   * the ahead-of-time compile checks for sm_90 and sm_80 (tests/ops/triton_aot.py: every
#     autotune config fits the card, spills as each test allows).
#
#   bash tools/ci_triton_versions.sh            # 3.6.0 and 3.8.0, side by side (CI_JOBS: nproc)
#   bash tools/ci_triton_versions.sh 3.6.0      # one release
#
# Triton 3.6's interpreter reads a range bound with int() of a one-element array, which NumPy
# 2.4 rejects ("only 0-dimensional arrays can be converted"): its venv takes numpy<2.4 (3.8 and
# newer squeeze first). Venvs are cached (tools/ci_lib.sh); Triton's own kernel cache makes a
# second run's compile checks fast.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
source tools/ci_lib.sh

VERSIONS=("$@")
if (( ${#VERSIONS[@]} == 0 )); then VERSIONS=(3.6.0 3.8.0); fi
TORCH_CPU_VERSION=${TORCH_CPU_VERSION:-2.13.0}
# the op suites' triton cases (parametrised by backend: "triton" in the id or the test's name)
TESTS=(tests/ops/test_word_attention.py tests/ops/test_damsm.py tests/ops/test_upsample_conv.py
       tests/ops/test_batch_norm.py tests/ops/test_upsample_conv_bn.py
       tests/ops/test_triton_device_guard.py)
SELECT="triton and not opcheck and not compile_matches_eager and not fullgraph"
START=$SECONDS

# check_version VERSION : venv (cached) and the tests of one release; its output on stdout
check_version() {
  local version=$1 numpy=numpy venv start=$SECONDS
  if [[ "$(printf '%s\n' "$version" 3.8 | sort -V | head -n 1)" != 3.8 ]]; then
    numpy="numpy<2.4"
  fi
  venv=$(cached_venv "triton-$version" "torch==$TORCH_CPU_VERSION" "triton==$version" "$numpy" \
         pyyaml pillow tqdm pytest hypothesis) || return 1
  "$venv/bin/python" -c "import torch, triton; print('torch', torch.__version__, 'triton', \
triton.__version__)"
  PYTHONPATH=$ROOT "$venv/bin/python" -m pytest -q -p no:cacheprovider "${TESTS[@]}" \
    -k "$SELECT" -W ignore::DeprecationWarning || return 1
  echo "== Triton $version: ok ($((SECONDS - start)) s)"
}

# The releases run side by side, one a core (each is a single-threaded pytest and ptxas).
JOBS=${CI_JOBS:-$(nproc)}
LOGS=$(mktemp -d)
trap 'rm -rf "$LOGS"' EXIT
pids=() status=0
for version in "${VERSIONS[@]}"; do
  while (( $(jobs -rp | wc -l) >= JOBS )); do wait -n || true; done
  check_version "$version" >"$LOGS/$version.log" 2>&1 &
  pids+=($!)
done
for i in "${!VERSIONS[@]}"; do
  wait "${pids[$i]}" || status=1
  echo "== Triton ${VERSIONS[$i]}"
  grep -v "^SKIPPED" "$LOGS/${VERSIONS[$i]}.log"
done
if (( status != 0 )); then
  echo "ci_triton_versions: a release failed ($((SECONDS - START)) s)" >&2
  exit 1
fi
echo "ci_triton_versions: ${VERSIONS[*]} passed ($((SECONDS - START)) s)"
