#!/usr/bin/env bash
# Every real-GPU measurement lem's docs quote that needs a multi-GPU host, in one go (about 4 minutes on a 4-GPU
# host; parts that need more GPUs than the host has are skipped and say so). Binaries built elsewhere in bin/
# (make build); the host needs the NVIDIA driver and python3 with torch, transformers, nvidia-ml-py and pyarrow.
#
#   1. lem-exporter on every GPU, idle, 30 s at defaults and 30 s with --serial-counter-reads; then at defaults
#      for the whole load below (CPU per GPU, capture, counter-read latency per GPU), beside a pynvml loop and
#      nvidia-smi -lms 20 on GPU 0, with 200 scrapes a second for 30 s (scrape latency p99); and
#      `lem-run record --gpus all` around the same load (its capture table).
#   2. The load, one part per GPU at once:
#      GPU 0: docs/RESULTS.md §2 with both idles (scripts/gpu/hf-idle.yaml: HF generate at batch 1/8/32);
#      GPU 1: GPU sharing (scripts/gpu/share.py: per-process attribution against solo energies);
#      GPU 2: the precision workload (scripts/gpu/precision.py: square waves and known-energy bursts, shortened);
#      GPU 3: the HF example with markers through the Python client and through stdout on one run (batch 8,
#             8 rounds, --markers both), then 100 generate() calls, a window each (the J per call).
#   3. Summaries of each, and everything packed into $OUT/session.tar.gz.
#
# Usage: scripts/gpu-session.sh [OUTDIR]    (GPU_SESSION_DRY=1: replay a recorded trace, no GPU, short sleeps)
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-bin}
OUT=${1:-${OUT:-/tmp/lem-gpu-session}}
W=$(mktemp -d /tmp/lem-session.XXXX)
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 LEM_SESSION_DIR=$W
DRY=${GPU_SESSION_DRY:-0}
t0=$(date +%s)
say() { printf '[%4ds] %s\n' $(( $(date +%s) - t0 )) "$*" | tee -a "$W/session.log"; }
cputime() { awk '{print ($14+$15)/'"$(getconf CLK_TCK)"'}' "/proc/$1/stat" 2>/dev/null || echo 0; }

if [ "$DRY" = 1 ]; then
  NGPU=4
  src=(--replay testdata/traces/h200-llm.parquet --loop)
  D() { echo $(( $1 / 10 + 1 )); } # durations cut tenfold
else
  NGPU=$(nvidia-smi -L | wc -l)
  src=()
  D() { echo "$1"; }
  nvidia-smi --query-gpu=index,name,uuid,driver_version,power.limit,pstate,temperature.gpu,clocks.sm --format=csv \
    | tee "$W/gpus.csv"
fi
say "host: $NGPU GPUs, $(nproc) CPUs"

# exporter NAME PORT [flags…]: starts lem-exporter on every GPU, recording into $W/NAME; sets EXP.
exporter() {
  local name=$1 port=$2; shift 2
  "$BIN/lem-exporter" "${src[@]}" --web.listen-address "127.0.0.1:$port" --record.dir "$W/$name" \
    --record.flush-interval 5s "$@" >"$W/$name.log" 2>&1 &
  EXP=$!
  for _ in $(seq 50); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && return 0; sleep 0.2; done
  say "exporter $name did not become ready"; return 1
}
stop() { [ $# -gt 0 ] || return 0; kill -TERM "$@" 2>/dev/null; wait "$@" 2>/dev/null; }
peers() { # pynvml loop and nvidia-smi -lms 20 on GPU 0, into $W/$1-*
  [ "$DRY" = 1 ] && { PEERS=""; return; }
  python3 scripts/bench/pynvml_loop.py "$W/$1-pynvml.txt" & local a=$!
  nvidia-smi -i 0 --query-gpu=timestamp,power.draw --format=csv,noheader,nounits -lms 20 >"$W/$1-nvidia-smi.csv" & local b=$!
  PEERS="$a $b"
}
# cpu_over NAME SECONDS PIDS…: CPU seconds each PID used over the next SECONDS, appended to $W/cpu.tsv.
cpu_over() {
  local name=$1 secs=$2; shift 2
  local -a before=()
  for p in "$@"; do before+=("$(cputime "$p")"); done
  sleep "$secs"
  local i=0
  for p in "$@"; do
    printf '%s\t%s\t%s\t%s\n' "$name" "$(tr '\0' ' ' </proc/"$p"/cmdline 2>/dev/null | cut -c1-60)" "$secs" \
      "$(python3 -c "print($(cputime "$p") - ${before[$i]})")" >>"$W/cpu.tsv"
    i=$((i + 1))
  done
}

# 1a/1b. Idle: defaults, then counter reads in turn.
say "exporter idle, defaults, 15 s (pynvml and nvidia-smi beside it on GPU 0)"
exporter idle-default 19636 && { peers idle; sleep 2; cpu_over idle-default "$(D 15)" $EXP $PEERS; stop $EXP $PEERS; }
say "exporter idle, --serial-counter-reads, 15 s"
exporter idle-serial 19637 --serial-counter-reads && { sleep 2; cpu_over idle-serial "$(D 15)" $EXP; stop $EXP; }

# 2. The load, with the exporter at defaults beside it.
say "load: exporter at defaults on every GPU, the parts on GPUs 0-$((NGPU - 1))"
exporter load 19638 || exit 1
LOADEXP=$EXP
peers load
mkdir -p "$W/runs"
part() { # part NAME GPU LIMIT_S command…: runs a part in the background with a time limit, logging to $W/NAME.log
  local name=$1 gpu=$2 limit=$3; shift 3
  if [ "$gpu" -ge "$NGPU" ]; then say "part $name skipped: needs GPU $gpu, the host has $NGPU"; return; fi
  ( timeout -s INT "$limit" "$@" >"$W/$name.log" 2>&1; echo "exit $?" >>"$W/$name.log" ) &
  PARTS+=" $!"
}
PARTS=""
lemrun=("$BIN/lem-run" "${src[@]}")
if [ "$DRY" = 1 ]; then
  part campaign 0 60 "${lemrun[@]}" --gpus 0 --baseline 2s --experiment dry --out "$W/runs/dry" -- sh -c 'echo LEM_PHASE a; sleep 3'
else
  part campaign 0 160 "${lemrun[@]}" campaign scripts/gpu/hf-idle.yaml --out "$W/runs/campaign"
  mkdir -p "$W/runs/share"
  part share 1 160 sh -c "$BIN/lem-run record --gpus 1 -o $W/runs/share/share.parquet -- \
      python3 scripts/gpu/share.py run --gpu 1 --seconds 10 --idle 4 --out $W/runs/share/share-run.json &&
    $BIN/lem-analyze processes --json $W/runs/share/share.parquet >$W/runs/share/processes.json"
  part precision 2 160 "${lemrun[@]}" --gpus 2 --baseline 4s --cooldown none --counter-interval 100ms \
    --experiment precision --out "$W/runs/precision" -- python3 scripts/gpu/precision.py --device cuda:0 \
    --periods-ms 6,10,20,40,100,400 --duties 50 --square-seconds 3 --burst-ms 10,50,200 --bursts 8
  part hf 3 160 sh -c "
    ${BIN}/lem-run --gpus 3 --baseline 3s --cooldown none --experiment hf-bs8-both --out $W/runs/hf -- \
      python3 examples/hf/generate.py --batch-size 8 --new-tokens 128 --repeats 8 --markers both || exit
    ${BIN}/lem-run --gpus 3 --baseline 3s --cooldown none --experiment hf-100-calls --out $W/runs/hf -- \
      python3 examples/hf/generate.py --batch-size 1 --new-tokens 8 --repeats 100 --idle 0"
fi
sleep 5
"$BIN/lem-run" record "${src[@]}" --duration "$(D 90)s" -o "$W/all.parquet" \
  >"$W/record-all.txt" 2>"$W/record-all.log" &
REC=$!
sleep 5
# 200 scrapes a second for 30 s, and the exporter's CPU meanwhile (all parts running).
python3 - "http://127.0.0.1:19638/metrics" 200 "$(D 20)" >"$W/scrape.txt" <<'PY' &
import sys, threading, time, urllib.request
url, rps, secs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
lat, errs, lock = [], [0], threading.Lock()
def one():
    t = time.perf_counter()
    try:
        urllib.request.urlopen(url, timeout=5).read()
        with lock: lat.append(time.perf_counter() - t)
    except Exception:
        with lock: errs[0] += 1
end, nxt = time.time() + secs, time.time()
threads = []
while time.time() < end:
    th = threading.Thread(target=one); th.start(); threads.append(th)
    nxt += 1 / rps
    time.sleep(max(0, nxt - time.time()))
for th in threads: th.join()
lat.sort()
q = lambda p: 1000 * lat[min(len(lat) - 1, int(p * len(lat)))]
print(f"scrapes {len(lat)} ok, {errs[0]} failed, {len(lat) / secs:.0f}/s; latency ms p50 {q(.5):.2f} p90 {q(.9):.2f} p99 {q(.99):.2f} max {1000 * lat[-1]:.2f}")
PY
SCR=$!
cpu_over load-all-gpus "$(D 60)" $LOADEXP $PEERS
wait $SCR
stop $PEERS
say "waiting for the parts"
for p in $PARTS; do wait "$p"; done
wait $REC
say "parts done"
sleep 3
stop $LOADEXP

# 3. Summaries.
{
  echo "# GPU session $(date -u +%FT%TZ)"
  [ -f "$W/gpus.csv" ] && { echo; echo '```'; cat "$W/gpus.csv"; echo '```'; }
  echo; echo "## Exporter CPU (seconds over the window; % of a core per GPU)"
  echo; echo "| phase | process | window s | CPU s | % of a core per GPU |"; echo "|---|---|---|---|---|"
  awk -F'\t' -v n="$NGPU" '{printf "| %s | %s | %s | %.3f | %.3f |\n", $1, $2, $3, $4, 100*$4/$3/n}' "$W/cpu.tsv"
  echo; echo "## Capture and counter reads per GPU (from each exporter's recording)"
  for d in idle-default idle-serial load; do
    echo; echo "### $d"; echo '```'
    "$BIN/lem-analyze" phases "$W/$d"/lem-*.parquet 2>&1 | sed -n '/GPU  samples/,/gaps inside/p'
    echo '```'
  done
  echo; echo "## Scrape load"; cat "$W/scrape.txt"
  echo; echo "## lem-run record --gpus all (around the load)"; grep -v '^MARK' "$W/record-all.txt" | tail -20
  if [ -d "$W/runs/campaign" ]; then
    echo; echo "## RESULTS §2 with both idles"
    "$BIN/lem-analyze" report "$W/runs/campaign" >"$W/campaign-report.md" 2>&1
    "$BIN/lem-analyze" report -f csv --table runs "$W/runs/campaign" >"$W/campaign-runs.csv" 2>&1
    "$BIN/lem-analyze" report -f csv --table phases "$W/runs/campaign" >"$W/campaign-phases.csv" 2>&1
    sed -n '/^| experiment | runs/,/^$/p;/Two idles\|deep idle W/,/^$/p' "$W/campaign-report.md"
  fi
  if [ -d "$W/runs/hf" ]; then
    echo; echo "## HF example: markers through the client and stdout on one run; 100 generate() calls"
    python3 scripts/gpu/markers_both.py "$W"/runs/hf/hf-bs8-both-*/
    python3 scripts/gpu/session_hf.py "$W/runs/hf"
  fi
  for d in "$W"/runs/precision/*/; do
    [ -f "$d/manifest.json" ] && { echo; echo "## Precision"; "$BIN/lem-analyze" precision "$d"; }
  done
  [ -f "$W/runs/share/processes.json" ] && {
    echo; echo "## GPU sharing (per-process attribution against solo energies)"
    python3 scripts/gpu/share.py analyze "$W/runs/share/share-run.json" "$W/runs/share/processes.json"; }
  echo; echo "## Parts' last lines"
  for f in "$W"/campaign.log "$W"/hf.log "$W"/precision.log "$W"/share.log; do
    [ -f "$f" ] && { echo "### $(basename "$f")"; echo '```'; tail -5 "$f"; echo '```'; }
  done
} >"$W/summary.md" 2>&1
cp "$W/summary.md" "$OUT/summary.md"
tar -czf "$OUT/session.tar.gz" -C "$W" --exclude='*.tmp' . 2>/dev/null
ls -la "$OUT"
say "done"
cat "$OUT/summary.md"
