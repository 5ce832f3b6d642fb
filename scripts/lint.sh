#!/usr/bin/env bash
# Every linter, from the repo root; exits non-zero naming each tool that failed (scripts/test.sh runs it first).
#   Python (the venv's tools, configured in pyproject.toml): ruff check, mypy on src/h2l, lint-imports (layers).
#   Rust:  cargo clippy --release --all-targets -- -D warnings   in runtimes/rust (CARGO_TARGET_DIR is honoured)
#   Go:    gofmt -l (must print nothing) and go vet ./...         in runtimes/go
# A missing cargo/clippy/go is skipped with a note, or a failure when H2L_REQUIRE_RUNTIMES=1 (CI).
set -uo pipefail
cd "$(dirname "$0")/.."
VENV=${H2L_VENV:-.venv}
failed=()

run() {  # run NAME CMD...: run CMD, record NAME on failure
  local name=$1
  shift
  echo "lint: $name" >&2
  "$@" || failed+=("$name")
}

missing() {  # missing TOOL: skip, or fail under H2L_REQUIRE_RUNTIMES=1
  if [ "${H2L_REQUIRE_RUNTIMES:-}" = "1" ]; then
    echo "lint: $1 is required (H2L_REQUIRE_RUNTIMES=1) but not installed" >&2
    failed+=("$1 (missing)")
  else
    echo "lint: skipping $1 (not installed)" >&2
  fi
}

clippy() { (cd runtimes/rust && cargo clippy --release --all-targets --quiet -- -D warnings); }
go_vet() { (cd runtimes/go && go vet ./...); }
gofmt_clean() {  # gofmt -l lists unformatted files; any output is a failure
  local out
  out=$(cd runtimes/go && gofmt -l .) || return 1
  [ -z "$out" ] || { echo "gofmt: not formatted (run gofmt -w in runtimes/go):" >&2; echo "$out" >&2; return 1; }
}

run ruff "$VENV/bin/ruff" check src tests scripts
run mypy "$VENV/bin/mypy"
run lint-imports "$VENV/bin/lint-imports"

if command -v cargo >/dev/null && cargo clippy --version >/dev/null 2>&1; then
  run clippy clippy
else
  missing "cargo clippy"
fi

if command -v go >/dev/null && command -v gofmt >/dev/null; then
  run gofmt gofmt_clean
  run "go vet" go_vet
else
  missing "go (gofmt, go vet)"
fi

if [ ${#failed[@]} -gt 0 ]; then
  printf -v names '%s, ' "${failed[@]}"
  echo "lint: FAILED: ${names%, }" >&2
  exit 1
fi
echo "lint: ok" >&2
