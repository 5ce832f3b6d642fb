#!/usr/bin/env bash
# One prepared script for a lent H100/H200 (the device tool): the CUDA checks and benches in one call.
# It installs nothing from the network: it uses the machine's python3 (PyTorch, onnx, onnxruntime are
# there) plus wheels carried in .whl/ (e.g. jsonschema and its deps, or onnxruntime-gpu where it fits).
#   device run:  bash scripts/gpu_check.sh        (carry .whl when present; results land in $OUT)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/h2l-gpu}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
H2L="python3 -m h2l"
{
echo "== card"; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; date -u
echo "== libraries"
python3 - <<'PY'
import torch, onnxruntime as ort
from h2l.runtime.sessions import cuda_status
print("torch", torch.__version__, "cuda:", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
print("onnxruntime", ort.__version__, ort.get_available_providers())
print("onnxruntime CUDA EP usable:", cuda_status())
PY
W=/tmp/h2l-gpu-work; rm -rf "$W"; mkdir -p "$W"
echo "== teacher (shipped demo data, precomputed embeddings)"
$H2L teacher build --qa src/h2l/data/demo/bike_qa.json --embeddings src/h2l/data/demo/bike_qa.embeddings.npz --out "$W/t.npz"
echo "== distill on CUDA (torch)"
time $H2L distill "$W/t.npz" --out "$W/s.pt" --device cuda --quiet
echo "== export + verify --provider cuda"
$H2L export --teacher "$W/t.npz" --student "$W/s.pt" --out "$W/bundle"
$H2L verify "$W/bundle" --provider cuda; echo "verify --provider cuda exit code: $?"
echo "== bench (CPU 1 thread, torch CPU, and CUDA: onnxruntime CUDA EP with I/O binding where usable, torch CUDA)"
$H2L bench "$W/bundle" --checkpoint "$W/s.pt" --providers cpu,torch,cuda --batch 1,32 --out "$OUT/bench_bundle.json"
echo "== routed teacher + CUDA graphs (replay measured: per-node kernels must stop after capture)"
$H2L export --teacher "$W/t.npz" --student "$W/s.pt" --out "$W/bundle_routed" --routed
$H2L bench "$W/bundle_routed" --providers cpu,cuda --batch 1,32 --out "$OUT/bench_cuda_graph.json"
python3 -c "import json; print(json.dumps(json.load(open('$OUT/bench_cuda_graph.json')).get('cuda_graph'), indent=1))"
$H2L bench --sweep --n 16,64,256,1024,4096,16384 --providers cpu,cuda --batch 1,32 --quick \
  --out "$OUT/bench_sweep.json" --plot "$OUT/bench_sweep.png"
} 2>&1 | tee "$OUT/gpu_check.log"
