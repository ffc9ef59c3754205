#!/usr/bin/env bash
# make demo: exporter + runner + analyzer end to end, ending with the report.
#   GPU host: lem-exporter samples every GPU (Prometheus metrics on 127.0.0.1:$DEMO_PORT, full-rate recording);
#   lem-run measures the HF generate example on GPU 0 (an idle baseline first; other GPUs observed and reported
#   apart) and posts its markers to the exporter; lem-analyze reports the run directory, then the same run from
#   the exporter's own recording.
#   Elsewhere: the same chain over a recorded real H200 LLM trace, replayed in step by exporter and runner.
# Binaries may be built elsewhere and copied to bin/ (make build).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-bin}
out=${DEMO_OUT:-/tmp/lem-demo}
# A port nothing listens on (DEMO_PORT to choose one): the demo must talk to its own exporter, never to another
# one already on lem's port.
port=${DEMO_PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
rm -rf "$out"
mkdir -p "$out"
t0=$(date +%s.%N)
if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
  mode=gpu
  src=() run_src=()
  wl=(python3 examples/hf/generate.py --batch-size 8 --new-tokens 128 --repeats 2)
  extra=(--observe all) baseline=15s
  echo "lem demo: $(nvidia-smi -L | wc -l) NVIDIA GPU(s) — real measurement of the HF generate example (batch 8) on GPU 0"
else
  mode=replay
  rec=testdata/traces/h200-llm.parquet
  # From 26 s in: the baseline falls in the recording's idle stretch, the run in its batch-1 inference.
  src=(--replay "$rec" --loop --replay-from 26s)
  wl=(sh -c 'echo LEM_PHASE prefill; sleep 2; echo LEM_PHASE decode; sleep 5; echo LEM_RESULT output_tokens=4096 requests=8')
  extra=() baseline=5s
  echo "lem demo: no NVIDIA GPU — replaying a real H200 recording of LLM inference ($rec) through exporter and runner"
fi
export PYTHONUNBUFFERED=1
"$BIN/lem-exporter" "${src[@]}" --web.listen-address "127.0.0.1:$port" --record.dir "$out/exporter" \
  --record.flush-interval 2s >"$out/exporter.log" 2>&1 &
exporter=$!
export EXPLOG="$out/exporter.log"
trap 'kill $exporter 2>/dev/null || true' EXIT
python3 - "$port" "$exporter" <<'PY'
import os, sys, time, urllib.request
port, pid = sys.argv[1], int(sys.argv[2])
for _ in range(100):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        sys.exit(f"lem demo: lem-exporter exited at start (port {port} taken?); its log:\n" + open(os.environ["EXPLOG"]).read())
    try:
        if urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1).status == 200:
            sys.exit(0)
    except Exception:
        time.sleep(0.2)
sys.exit("lem demo: lem-exporter did not become ready (see exporter.log)")
PY
kill -0 $exporter 2>/dev/null || { echo "lem demo: lem-exporter is not running (see $out/exporter.log)" >&2; exit 1; }
echo "lem demo: lem-exporter ready on http://127.0.0.1:$port/metrics"
if [ "$mode" = replay ]; then
  # Start the runner's replay where the exporter's is now: both then see the same recorded instants.
  run_src=(--replay "$rec" --loop --replay-from "$(python3 -c "import sys,time; print('%.3fs' % (26+time.time()-float(sys.argv[1])))" "$t0")")
fi
echo
"$BIN/lem-run" "${run_src[@]}" --experiment demo --gpus 0 "${extra[@]}" --baseline "$baseline" --out "$out/runs" \
  --exporter "http://127.0.0.1:$port" -- "${wl[@]}" | grep -v '^LEM_'
echo
python3 - "$port" <<'PY'
import sys, urllib.request
body = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics").read().decode()
lines = [l for l in body.splitlines() if l.startswith(("lem_run_result", "lem_run_active", "lem_energy_joules_total"))]
print("lem demo: the exporter's view of the run (Prometheus metrics):")
print("\n".join("  " + l for l in lines[:12]))
PY
sleep 2.5 # the exporter reads the counter every 2 s: let one read follow the run's end
kill -TERM $exporter
wait $exporter 2>/dev/null || true
trap - EXIT
echo
echo "================ lem-analyze report $out/runs ================"
"$BIN/lem-analyze" report "$out/runs"
echo
echo "================ the same run from the exporter's recording ================"
"$BIN/lem-analyze" report -f csv "$out"/exporter/*.parquet | grep -E '^run_id|demo' || true
echo
echo "lem demo: run directory under $out/runs (manifest.json, trace.parquet, logs); exporter recording in $out/exporter"
