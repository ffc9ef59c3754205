#!/usr/bin/env bash
# Real-GPU check: records every GPU while a known-shape load runs, then prints capture completeness, gaps,
# counter-read latency and per-phase energy by counter, 50 Hz samples and hybrid. Binaries may be built elsewhere
# (make build) and copied; the host needs the NVIDIA driver and python3 with torch and nvidia-ml-py.
# Usage: scripts/gpu-check.sh [OUTDIR]
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-bin}
OUT=${1:-${OUT:-/tmp/lem-gpu-check}}
mkdir -p "$OUT"
WL=${WORKLOADS:-}
for d in "$WL" ../shared/workloads gpu-inputs/workloads; do
  if [ -n "$d" ] && [ -f "$d/gpuload.py" ]; then WL=$d; break; fi
done
[ -f "$WL/gpuload.py" ] || { echo "gpu-check: gpuload.py not found (set WORKLOADS=DIR)" >&2; exit 2; }
export PYTHONUNBUFFERED=1

nvidia-smi --query-gpu=index,name,driver_version,power.limit,persistence_mode,temperature.gpu --format=csv | tee "$OUT/nvidia-smi.csv"

echo "== 1. gpuload.py, counter read every 100 ms (dense, to compare methods)"
"$BIN/lem-run" record --counter-interval 100ms -o "$OUT/gpuload-dense.parquet" -- python3 "$WL/gpuload.py" 4 \
  > "$OUT/dense.txt" 2> "$OUT/dense.log"
echo "== 2. gpuload.py, default cadence (counter 1 s, drain 1 s, telemetry 100 ms)"
"$BIN/lem-run" record -o "$OUT/gpuload-default.parquet" -- python3 "$WL/gpuload.py" 4 \
  > "$OUT/default.txt" 2> "$OUT/default.log"
echo "== 3. idle, default cadence, 30 s (sampler CPU cost)"
"$BIN/lem-run" record --duration 30s -o "$OUT/idle.parquet" > "$OUT/idle.txt" 2> "$OUT/idle.log"

echo "== 4. the trace format read by pyarrow/pandas"
python3 - "$OUT/gpuload-dense.parquet" <<'PY' | tee "$OUT/pyarrow.txt"
import sys, pyarrow.parquet as pq
t = pq.read_table(sys.argv[1])
df = t.to_pandas()
print("schema:", ", ".join(f"{f.name}:{f.type}" for f in t.schema))
print("rows by kind:", df.groupby("kind").size().to_dict())
print("metadata keys:", sorted(k.decode() for k in pq.read_metadata(sys.argv[1]).metadata))
PY

if [ "${GPU_CHECK_LLM:-0}" = 1 ]; then
  echo "== 5. llmload.py (random-init ~1 B Llama, generate at batch 1/8/32), default cadence"
  "$BIN/lem-run" record -o "$OUT/llm.parquet" -- python3 "$WL/llmload.py" 4 > "$OUT/llm.txt" 2> "$OUT/llm.log"
fi

echo; echo "================ gpu-check summary ================"
for f in dense default idle llm; do [ -f "$OUT/$f.txt" ] || continue; echo "-- $f"; grep -v '^MARK' "$OUT/$f.txt"; done
