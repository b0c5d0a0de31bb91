#!/usr/bin/env bash
# Injects one fault (docs/faults/NAME.patch) into a scratch worktree of HEAD, builds it, and runs the
# test command named in the patch's `catch:` line. Exit 0: the tests failed, so the fault was caught.
# Exit 1: the tests passed with the fault in place (a miss). Usage: docs/faults/inject.sh NAME
set -euo pipefail
root="$(git -C "$(dirname "$0")" rev-parse --show-toplevel)"
patch="$root/docs/faults/$1.patch"
test -f "$patch" || { echo "no such fault: $1 (see docs/faults/*.patch)" >&2; exit 2; }
catch="$(sed -n 's/^catch: //p' "$patch")"
work="${MOECOVER_FAULT_DIR:-/tmp/moecover-fault}"   # a fixed path, so cargo rebuilds incrementally
git -C "$root" worktree remove --force "$work" 2>/dev/null || rm -rf "$work"
git -C "$root" worktree prune
git -C "$root" worktree add --quiet --detach "$work" HEAD
trap 'git -C "$root" worktree remove --force "$work"' EXIT
git -C "$work" apply "$patch"
cd "$work"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/tmp/moecover-fault-target}"
if [[ "$catch" == pytest* ]]; then
    # a quicker release build than the shipped one (no LTO); the tests do not depend on it
    python3 -m venv "$CARGO_TARGET_DIR/venv" >/dev/null
    # shellcheck disable=SC1091
    . "$CARGO_TARGET_DIR/venv/bin/activate"
    pip install --quiet maturin numpy scipy pytest pytest-timeout pytest-benchmark hypothesis matplotlib pandas
    CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
        maturin develop --release --quiet >/dev/null 2>&1
fi
echo "== fault $1: $(sed -n 's/^fault: //p' "$patch")"
echo "== running: $catch"
if eval "$catch"; then
    echo "== MISSED: the tests pass with fault $1 in place"
    exit 1
fi
echo "== CAUGHT: fault $1"
