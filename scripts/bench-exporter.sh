#!/usr/bin/env bash
# Exporter benchmark on an NVIDIA host, all three tools side by side on GPU 0 during one gpuload.py run:
# lem-exporter (defaults) vs a pynvml polling loop vs nvidia-smi -lms 20. Then lem-exporter alone at idle.
# Prints Markdown tables; raw data stays in OUTDIR. Usage: scripts/bench-exporter.sh [OUTDIR]
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-bin}
OUT=${1:-/tmp/lem-bench-exporter}
mkdir -p "$OUT"
WL=${WORKLOADS:-}
for d in "$WL" ../shared/workloads gpu-inputs/workloads; do
  if [ -n "$d" ] && [ -f "$d/gpuload.py" ]; then WL=$d; break; fi
done
export PYTHONUNBUFFERED=1
cputime() { awk '{print ($14+$15)/'"$(getconf CLK_TCK)"'}' "/proc/$1/stat"; }
PORT=19636

"$BIN/lem-exporter" --web.listen-address 127.0.0.1:$PORT --gpus 0 2> "$OUT/exporter.log" &
EXP=$!
python3 scripts/bench/pynvml_loop.py "$OUT/pynvml.txt" &
PY=$!
nvidia-smi -i 0 --query-gpu=timestamp,power.draw --format=csv,noheader,nounits -lms 20 > "$OUT/nvidia-smi.csv" &
SMI=$!
sleep 3
start_ns=$(date +%s%N); c0e=$(cputime $EXP); c0p=$(cputime $PY); c0s=$(cputime $SMI)
python3 "$WL/gpuload.py" 4 > "$OUT/gpuload.txt"
sleep 2
c1e=$(cputime $EXP); c1p=$(cputime $PY); c1s=$(cputime $SMI); stop_ns=$(date +%s%N)
curl -s -o "$OUT/exporter.parquet" "http://127.0.0.1:$PORT/api/v1/samples?gpu=0&format=parquet&start=$(( start_ns/1000000000 - 5 ))&end=$(( stop_ns/1000000000 + 1 ))"
curl -s "http://127.0.0.1:$PORT/metrics" > "$OUT/metrics.txt"
kill -TERM $PY $SMI; wait $PY $SMI 2>/dev/null || true
kill -TERM $EXP; wait $EXP || true
python3 - "$OUT" "$start_ns" "$stop_ns" "$c0e" "$c1e" "$c0p" "$c1p" "$c0s" "$c1s" <<'PY'
import json, sys
d, s, e = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
v = [float(x) for x in sys.argv[4:]]
json.dump({"start_ns": s, "stop_ns": e, "exporter": v[1]-v[0], "pynvml": v[3]-v[2], "nvidia_smi": v[5]-v[4]},
          open(f"{d}/cpu.json", "w"))
PY
echo "== side by side during gpuload.py (GPU 0)"
python3 scripts/bench/summarize.py "$OUT" | tee "$OUT/summary.md"
"$BIN/lem-analyze" phases "$OUT/exporter.parquet" --marks "$OUT/gpuload.txt" | tee "$OUT/phases.txt"

echo; echo "== lem-exporter alone at idle, 60 s per setting (CPU of the whole process, per GPU)"
echo "| setting | GPUs | CPU s/min | % of a core per GPU |"
echo "|---|---|---|---|"
ngpu=$(nvidia-smi -L | wc -l)
for setting in "defaults (counter 2 s, telemetry 1 s)|" "counter 1 s, telemetry 100 ms (lem-run cadence)|--counter-interval 1s --telemetry-interval 100ms"; do
  name=${setting%%|*}; flags=${setting#*|}
  "$BIN/lem-exporter" --web.listen-address 127.0.0.1:$PORT $flags 2>> "$OUT/exporter-idle.log" &
  EXP=$!
  sleep 5; c0=$(cputime $EXP); sleep 60; c1=$(cputime $EXP)
  kill -TERM $EXP; wait $EXP || true
  python3 -c "c=$c1-$c0; print(f'| $name | $ngpu | {c:.2f} | {100*c/60/$ngpu:.3f} % |')"
done
