# Shared by the tools/ci_*.sh steps (sourced): the cache folder, venvs keyed on what they hold,
# content hashes of input files, timed steps.
#
# ATTNGAN_FAST_CI_CACHE (default ~/.cache/attngan-fast-ci) holds what one CI run leaves for the
# next on the same machine; a fresh machine starts without it and builds everything.

CI_CACHE="${ATTNGAN_FAST_CI_CACHE:-$HOME/.cache/attngan-fast-ci}"
CI_PYTHON="${CI_PYTHON:-python3}"
mkdir -p "$CI_CACHE"

# content_hash WORD... : 16 hex digits over the words and, for each word naming a file, its
# content (folders: every file below, sorted), so that a key changes when an input does.
content_hash() {
  local word
  for word in "$@"; do
    printf '%s\n' "$word"
    if [[ -f "$word" ]]; then
      sha256sum "$word"
    elif [[ -d "$word" ]]; then
      find "$word" -type f -print0 | sort -z | xargs -0 sha256sum
    fi
  done | sha256sum | cut -c1-16
}

# cached_venv NAME PIP_ARGS... : the path of a venv holding PIP_ARGS (pip install arguments),
# made once per distinct (python, arguments) and reused; built under a lock, stamped when whole.
cached_venv() {
  local name=$1
  shift
  local key dir
  key=$(printf '%s\n' "$("$CI_PYTHON" -VV)" "$@" | sha256sum | cut -c1-12)
  dir="$CI_CACHE/venvs/$name-$key"
  mkdir -p "$CI_CACHE/venvs"
  (
    flock 9
    if [[ ! -f "$dir/.complete" ]]; then
      rm -rf "$dir"
      "$CI_PYTHON" -m venv "$dir" &&
        "$dir/bin/pip" install --disable-pip-version-check -q "$@" >"$dir.log" 2>&1 ||
        { echo "ci: pip install $* failed:" >&2; grep -v "is ignored" "$dir.log" | tail -n 20 >&2
          rm -rf "$dir"; exit 1; }
      touch "$dir/.complete"
    fi
  ) 9>"$dir.lock" || return 1
  echo "$dir"
}

# ci_step NAME : prints a header; ci_done prints the seconds since the last header
ci_step() { CI_STEP_NAME=$1; CI_STEP_START=$SECONDS; echo "== $1"; }
ci_done() { echo "== $CI_STEP_NAME: ok ($((SECONDS - CI_STEP_START)) s)"; }
