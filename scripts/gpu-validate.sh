#!/usr/bin/env bash
# Real-GPU validation for the precision report (docs/RESULTS.md). Binaries built elsewhere in bin/.
#   scripts/gpu-validate.sh campaign OUT   HF generate campaign (batch 1/8/32 × 3 shuffled cycles, baseline per run),
#                                          transformers catalogue and audit, report
#   scripts/gpu-validate.sh multigpu OUT   exporter on every GPU at full capture (CPU per GPU) while lem-run
#                                          measures a known-shape load on GPU 0 with the others observed
# Each ends with a short summary.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-bin}
what=$1
OUT=${2:-/tmp/lem-gpu-validate}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
WL=${WORKLOADS:-}
for d in "$WL" ../shared/workloads gpu-inputs/workloads; do
  if [ -n "$d" ] && [ -f "$d/gpuload.py" ]; then WL=$d; break; fi
done
nvidia-smi --query-gpu=index,name,driver_version,power.limit,temperature.gpu --format=csv,noheader | tee "$OUT/gpus.csv"

case $what in
campaign)
  "$BIN/lem-run" introspect --backend transformers -o "$OUT/transformers.json" || echo "introspect failed"
  "$BIN/lem-run" campaign examples/hf/campaign.yaml --dry-run --out "$OUT/campaign" | tail -4
  # Interrupted (SIGINT) if it runs long: run the same command again to resume.
  timeout -s INT "${CAMPAIGN_LIMIT:-530}" "$BIN/lem-run" campaign examples/hf/campaign.yaml --out "$OUT/campaign" \
    >"$OUT/campaign.txt" 2>"$OUT/campaign.log" || true
  "$BIN/lem-analyze" report "$OUT/campaign" >"$OUT/report.md"
  "$BIN/lem-analyze" report -f json "$OUT/campaign" >"$OUT/report.json"
  "$BIN/lem-analyze" audit "$OUT/campaign" >"$OUT/audit.md"
  "$BIN/lem-analyze" validate "$OUT/campaign" >"$OUT/validate.txt" || true
  echo "================ campaign summary ================"
  grep -E "^campaign: run|error" "$OUT/campaign.log" | tail -12
  cat "$OUT/campaign.txt"
  sed -n '1,12p' "$OUT/audit.md"
  ;;
multigpu)
  n=$(nvidia-smi -L | wc -l)
  # Exporter on every GPU at lem-run's cadence (counter 1 s, telemetry 100 ms) with full-rate recording.
  "$BIN/lem-exporter" --web.listen-address 127.0.0.1:19401 --counter-interval 1s --telemetry-interval 100ms \
    --record.dir "$OUT/exporter" --record.flush-interval 5s >"$OUT/exporter.log" 2>&1 &
  exp=$!
  sleep 3
  read -r u0 s0 < <(awk '{print $14, $15}' /proc/$exp/stat)
  w0=$(date +%s.%N)
  "$BIN/lem-run" --experiment gpuload-gpu0 --gpus 0 --observe all --baseline 10s --out "$OUT/runs" \
    --exporter http://127.0.0.1:19401 -- python3 "$WL/gpuload.py" 4 >"$OUT/run.txt" 2>"$OUT/run.log"
  read -r u1 s1 < <(awk '{print $14, $15}' /proc/$exp/stat)
  w1=$(date +%s.%N)
  kill -TERM $exp; wait $exp || true
  python3 - "$u0" "$s0" "$u1" "$s1" "$w0" "$w1" "$n" <<'PY' | tee "$OUT/exporter-cpu.txt"
import os, sys
u0, s0, u1, s1 = map(int, sys.argv[1:5]); w = float(sys.argv[6]) - float(sys.argv[5]); n = int(sys.argv[7])
cpu = (u1 + s1 - u0 - s0) / os.sysconf("SC_CLK_TCK")
print(f"exporter on {n} GPUs during the run: {cpu:.2f} CPU s over {w:.1f} s = {100 * cpu / w:.2f} % of a core, "
      f"{100 * cpu / w / n:.2f} % per GPU")
PY
  "$BIN/lem-analyze" phases "$OUT"/exporter/*.parquet >"$OUT/exporter-phases.txt" 2>&1 || true
  "$BIN/lem-analyze" report "$OUT/runs" >"$OUT/report.md"
  echo "================ multi-GPU summary ================"
  cat "$OUT/run.txt"
  head -$((n + 3)) "$OUT/exporter-phases.txt"
  cat "$OUT/exporter-cpu.txt"
  ;;
*)
  echo "usage: $0 campaign|multigpu OUT" >&2
  exit 2
  ;;
esac
