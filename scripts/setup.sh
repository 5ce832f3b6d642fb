#!/usr/bin/env bash
# Idempotent set-up: a virtualenv with h2l (editable) and its pinned dependencies (constraints.txt).
#   H2L_VENV  where the venv lives (default: .venv in the repo)
#   PYTHON    the interpreter to build it from (default: python3, >= 3.11)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${H2L_VENV:-.venv}
PY=${PYTHON:-python3}
KEY=$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)
STAMP="$VENV/.h2l-deps-$KEY"
if [ ! -f "$STAMP" ]; then
  echo "setup: creating $VENV (dependencies $KEY; torch and onnxruntime-gpu are large downloads)" >&2
  rm -rf "$VENV"
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -c constraints.txt -e ".[embed,test]"
  touch "$STAMP"
fi
# Re-point the editable install at this checkout (a cached venv may have served another clone).
"$VENV/bin/python" -m pip install -q --no-deps --no-build-isolation -e . >/dev/null
echo "setup: ok ($VENV)" >&2
