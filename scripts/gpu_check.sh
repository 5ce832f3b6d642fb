#!/usr/bin/env bash
# One prepared script for a lent H100/H200 (the device tool): the CUDA checks and benches in one call.
# It installs nothing from the network: it uses the machine's python3 (PyTorch, onnx, onnxruntime are
# there) plus wheels carried in .whl/ (jsonschema, cryptography and their needs) and onnxruntime-gpu carried
# in parts to /tmp/ort by earlier calls: scripts/gpu_prepare.sh makes both and says how to carry them.
#   device run:  bash scripts/gpu_check.sh        (carry .whl when present; results land in $OUT)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/h2l-gpu}
mkdir -p "$OUT"
if [ -f /tmp/ort/MANIFEST ]; then  # onnxruntime-gpu, carried in parts by earlier calls (scripts/gpu_prepare.sh)
  bash /tmp/ort/wheel-parts.sh install /tmp/ort /tmp/site-ort && export PYTHONPATH="/tmp/site-ort${PYTHONPATH:+:$PYTHONPATH}"
fi
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
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
$H2L export "$W/t.npz" --student "$W/s.pt" --out "$W/bundle"
$H2L verify "$W/bundle" --provider cuda; echo "verify --provider cuda exit code: $?"
echo "== bench (CPU 1 thread, torch CPU, and CUDA: onnxruntime CUDA EP with I/O binding where usable, torch CUDA)"
$H2L bench "$W/bundle" --student "$W/s.pt" --provider cpu,torch,cuda --batch 1,32 --out "$OUT/bench_bundle.json"
echo "== routed teacher + CUDA graphs (replay measured: per-node kernels must stop after capture)"
$H2L export "$W/t.npz" --student "$W/s.pt" --out "$W/bundle_routed" --routed
$H2L bench "$W/bundle_routed" --provider cpu,cuda --batch 1,32 --out "$OUT/bench_cuda_graph.json"
python3 -c "import json; print(json.dumps(json.load(open('$OUT/bench_cuda_graph.json')).get('cuda_graph'), indent=1))"
$H2L bench --sweep --n 16,64,256,1024,4096,16384 --provider cpu,cuda --batch 1,32 --quick \
  --out "$OUT/bench_sweep.json" --plot "$OUT/bench_sweep.png"
echo "== per-step profile (issue 11): stream, labels, student step, full step at N = 1024 (L4 ff2048) and 16384 (ff512)"
echo "   targets (H100/H200): full step <= 3 ms at N = 1024, <= 5 ms at N = 16384; sync_free must be true"
python3 scripts/step_profile.py --device cuda --out "$OUT/step_profile.json"
echo "== timed large-N distillation: synthetic N = 4096, the recipe \`h2l distill\` picks, tf32, at most 8 minutes"
python3 - "$W/t4096.npz" <<'PY'
import sys
from h2l.importers.npz import save_npz
from h2l.model.synthetic import synthetic_teacher
save_npz(synthetic_teacher(4096, 384, seed=4096), sys.argv[1])
PY
$H2L arch 4096 | tail -1
start=$(date +%s)
timeout 480 $H2L distill "$W/t4096.npz" --out "$W/s4096.pt" --device cuda --precision tf32 --quiet --json \
  > "$OUT/distill_4096.json"; echo "distill exit code: $? (124 = stopped at 8 minutes; the last checkpoint stands)"
echo "wall: $(( $(date +%s) - start )) s"
python3 - "$W/t4096.npz" "$W/s4096.pt" "$OUT/distill_4096_fidelity.json" <<'PY'
import json, sys
import torch
from h2l.distill.checkpoint import load_checkpoint
from h2l.importers.npz import load_npz
from h2l.metrics import fidelity
from h2l.model.sampling import sampled_queries
t, ck = load_npz(sys.argv[1]), load_checkpoint(sys.argv[2])
m = ck.model()  # the best state so far, also when the 8-minute limit stopped the run
q = sampled_queries(t.keys, t.temperature, 2048, seed=12345)
with torch.no_grad():
    out = m(torch.from_numpy(q)).numpy()
row = {"n": 4096, "config": ck.config.to_dict(), "complete": ck.complete, "steps_run": ck.metrics.get("steps_run"),
       "elapsed_s": (ck.resume or {}).get("elapsed"), "unseen_sampled": fidelity(out, t.project(q)[0], t.answers)}
print(json.dumps(row)); open(sys.argv[3], "w").write(json.dumps(row, indent=2) + "\n")
PY
} 2>&1 | tee "$OUT/gpu_check.log"
