#!/usr/bin/env bash
# Pull benchmark: GPUS GPUs × HOURS hours of lem's 50 Hz series (scripts/bench/fleet-om: power stream, counter
# every 2 s, telemetry every 15 s) backfilled into a real Prometheus with `promtool tsdb create-blocks-from
# openmetrics`, then `lem-analyze pull --instance` of the whole window into one trace, Prometheus's own CPU and
# memory measured beside lem's (from /proc), then the streamed report of the pulled trace.
# Usage: scripts/bench-pull.sh [OUTDIR] [GPUS] [HOURS]   env: WORKERS (4), CHUNK (10m), KEEP=1 keeps the data.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-bin}
OUT=${1:-/tmp/lem-bench-pull}
GPUS=${2:-16}
HOURS=${3:-24}
WORKERS=${WORKERS:-4}
CHUNK=${CHUNK:-10m}
mkdir -p "$OUT"
rm -rf "$OUT/data" "$OUT/pulled"
END=$(($(date +%s) / 3600 * 3600 - 7200)) # whole hours, two before now: the data lies in blocks, not in the head
FROM=$((END - HOURS * 3600))
iso() { date -u -d "@$1" +%Y-%m-%dT%H:%M:%SZ; }
echo "bench-pull: $GPUS GPUs × ${HOURS} h at 50 Hz, $(iso $FROM) .. $(iso $END)"
(cd scripts/bench && go run ./fleet-om -gpus "$GPUS" -hours "$HOURS" -end "$END") >"$OUT/fleet.om"
ls -l "$OUT/fleet.om"
python3 scripts/bench/measure.py "$OUT/promtool.log" -- promtool tsdb create-blocks-from openmetrics "$OUT/fleet.om" "$OUT/data" >"$OUT/promtool.json"
cat "$OUT/promtool.json"
rm -f "$OUT/fleet.om"
du -sh "$OUT/data"
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
printf 'global:\n  scrape_interval: 1m\n' >"$OUT/prometheus.yml"
prometheus --config.file="$OUT/prometheus.yml" --storage.tsdb.path="$OUT/data" --storage.tsdb.retention.time=10y \
  --web.listen-address="127.0.0.1:$PORT" --log.level=warn >"$OUT/prometheus.log" 2>&1 &
PROM=$!
trap 'kill $PROM 2>/dev/null || true' EXIT
for _ in $(seq 600); do curl -fs "http://127.0.0.1:$PORT/-/ready" >/dev/null && break; sleep 0.1; done
cpu() { awk '{print ($14 + $15) / 100}' "/proc/$PROM/stat"; } # utime + stime, clock ticks of 1/100 s
rss() { awk -v k="$1:" '$1 == k {print $2 / 1024}' "/proc/$PROM/status"; }
C0=$(cpu)
R0=$(rss VmRSS)
python3 scripts/bench/measure.py "$OUT/pull.log" -- "$BIN/lem-analyze" pull --prometheus "http://127.0.0.1:$PORT" \
  --instance fleet-host:9464 --from "$(iso $FROM)" --to "$(iso $END)" --workers "$WORKERS" --chunk "$CHUNK" \
  -o "$OUT/pulled" >"$OUT/pull.json"
C1=$(cpu)
R1=$(rss VmRSS)
HWM=$(rss VmHWM)
cat "$OUT/pull.log"
python3 scripts/bench/measure.py "$OUT/report.csv" -- "$BIN/lem-analyze" report -f csv "$OUT"/pulled/*.parquet >"$OUT/report.json"
python3 - "$OUT" "$GPUS" "$HOURS" "$C0" "$C1" "$R0" "$R1" "$HWM" "$WORKERS" "$CHUNK" <<'PY'
import json, os, sys
out, gpus, hours, c0, c1, r0, r1, hwm, workers, chunk = sys.argv[1:]
pull = json.load(open(f"{out}/pull.json")); rep = json.load(open(f"{out}/report.json")); pt = json.load(open(f"{out}/promtool.json"))
line = open(f"{out}/pull.log").read().strip()
samples = int(line.split(" power samples")[0].split(", ")[-1])
size = sum(os.path.getsize(os.path.join(f"{out}/pulled", f)) for f in os.listdir(f"{out}/pulled"))
print(f"\n{gpus} GPUs × {hours} h: {samples:,} power samples; backfill (promtool) {pt['wall_s']:.0f} s, {pt['max_rss_mb']:.0f} MB")
print("| process | wall s | CPU s | memory MB |\n|---|---|---|---|")
print(f"| lem-analyze pull (--workers {workers} --chunk {chunk}) | {pull['wall_s']:.1f} | {pull['cpu_s']:.1f} | {pull['max_rss_mb']:.0f} (peak RSS) |")
print(f"| Prometheus 2 serving it (same interval) | | {float(c1) - float(c0):.1f} | {float(r0):.0f} → {float(r1):.0f} RSS ({float(hwm):.0f} peak since start) |")
print(f"| lem-analyze report -f csv of the pulled trace | {rep['wall_s']:.1f} | {rep['cpu_s']:.1f} | {rep['max_rss_mb']:.0f} (peak RSS) |")
print(f"\npull: {samples / pull['wall_s'] / 1e6:.2f} M samples/s end to end; trace {size / 1e6:.0f} MB ({size / samples:.2f} bytes a sample)")
PY
[ "${KEEP:-0}" = 1 ] || rm -rf "$OUT/data" "$OUT/pulled"
