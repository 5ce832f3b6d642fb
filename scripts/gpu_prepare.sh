#!/usr/bin/env bash
# Prepare, on this machine, what scripts/gpu_check.sh needs on a lent H100/H200 (device tool), at no device time.
# The device image (Python 3.12, PyTorch, CPU onnxruntime 1.30; see the library's device/KINDS.md) lacks
# onnxruntime-gpu and a few of h2l's dependencies, and nothing there reaches PyPI. So:
#   .whl/            small wheels for cp312 manylinux: jsonschema and its needs, cryptography and its needs
#   .wparts/partK/   onnxruntime-gpu, 255 MB, in 60 MB parts (one call carries at most 64 MiB);
#                    part0 holds MANIFEST (name, sha256, count) and wheel-parts.sh
# Both folders are git-ignored, so they travel only when a call names them in `carry`.
# Then, with the device tool, calls less than 30 s apart (the machine stays warm):
#   for K in 0 .. last-1:  carry [".wparts/partK"]           run: mkdir -p /tmp/ort && cp .wparts/partK/* /tmp/ort/
#   last:                  carry [".wparts/partLAST", ".whl"] run: mkdir -p /tmp/ort && cp .wparts/partLAST/* /tmp/ort/ \
#                                                                && bash scripts/gpu_check.sh
# gpu_check.sh joins and checks the parts (sha256) and installs them before anything else.
set -euo pipefail
cd "$(dirname "$0")/.."
ORT_GPU=${ORT_GPU:-onnxruntime-gpu==1.31.1}
PY=${PYTHON:-python3}
TOOL=${WHEEL_PARTS:-../shared/tools/wheel-parts.sh}
[ -f "$TOOL" ] || { echo "gpu_prepare: $TOOL not found; set WHEEL_PARTS=path/to/wheel-parts.sh" >&2; exit 8; }
platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64 --platform manylinux_2_34_x86_64)
get() {  # one pinned wheel per name, for the device's Python, no dependency resolution (names are explicit)
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" -d "$1" "$2"
}
pin() {  # NAME -> NAME==VERSION from constraints.txt (the versions h2l is tested with)
  local v; v=$(grep -i "^$1==" constraints.txt | head -1 | cut -d= -f3)
  [ -n "$v" ] || { echo "gpu_prepare: $1 is not pinned in constraints.txt" >&2; exit 8; }
  echo "$1==$v"
}
rm -rf .whl .wparts && mkdir -p .whl
for name in jsonschema jsonschema-specifications referencing rpds-py cryptography cffi pycparser; do
  spec=$(pin "$name")  # on its own line: set -e stops here when the pin is missing (exit 8)
  get .whl "$spec"
done
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
get "$tmp" "$ORT_GPU"
bash "$TOOL" split "$tmp"/onnxruntime_gpu-*.whl .wparts
du -sh .whl .wparts/part* | sed 's/^/  /'
