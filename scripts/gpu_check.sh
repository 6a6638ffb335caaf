#!/usr/bin/env bash
# The GPU figures on one lent GPU, in about 5 minutes (each part has its own time limit; 8 in all):
# full-size random-weight AR decode ms/token vs the HBM floor, prefill of 4 camera views, which
# attention kernel each path can use, peak memory vs the computed plan, int8 (and NF4 when
# bitsandbytes is installed) decode, and one guidance step AR vs DiDA at 512x512. One JSON.
#
#   scripts/gpu_check.sh [OUT_DIR]        # python3 with CUDA torch >= 2.5; nothing is downloaded
#
# Writes OUT_DIR/gpu_check_all.json (default ./gpu_check_out) and the logs beside it.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${1:-${OUT:-$ROOT/gpu_check_out}}"
PY="${PYTHON:-python3}"
mkdir -p "$OUT"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device visible to torch')" || exit 2
"$PY" -c "import torch; print('device:', torch.cuda.get_device_name(0), '| torch', torch.__version__)"
start=$(date +%s)
timeout 300 "$PY" -m emu_ros.bench.gpu_check --config full --device cuda --json "$OUT/gpu_check.json" \
  > "$OUT/gpu_check.log" 2>&1; echo "gpu_check rc=$? ($(( $(date +%s) - start )) s)"; tail -n 60 "$OUT/gpu_check.log"
timeout 180 "$PY" -m emu_ros.bench.step_latency --config full --device cuda --decoder both --image 512 --cfg 3.0 \
  --json "$OUT/step_latency.json" > "$OUT/step_latency.log" 2>&1; echo "step_latency rc=$? ($(( $(date +%s) - start )) s)"
tail -n 25 "$OUT/step_latency.log"
"$PY" - "$OUT" <<'PY'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
merged = {}
for part in ("gpu_check", "step_latency"):
    f = out / f"{part}.json"
    merged[part] = json.loads(f.read_text()) if f.exists() else {"missing": f"{part} wrote no JSON (see {part}.log)"}
(out / "gpu_check_all.json").write_text(json.dumps(merged, indent=2) + "\n")
print("wrote", out / "gpu_check_all.json")
PY
echo "total $(( $(date +%s) - start )) s"
