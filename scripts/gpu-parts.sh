#!/usr/bin/env bash
# Real-GPU measurements lem's docs quote that need only one GPU, one part after another on GPU 0 (scripts/
# gpu-session.sh runs the multi-GPU ones, a part per GPU at once). Binaries built elsewhere in bin/ (make build,
# and scripts/bench's duckdb-energy for the bench part); the host needs the NVIDIA driver and python3 with torch,
# transformers, nvidia-ml-py, pyarrow and pandas. Each part writes into OUT/PART/ and prints its summary.
#
#   bench      docs/BENCHMARKS.md: lem-analyze against DuckDB and the pandas/pyarrow script on the 10 M-sample
#              file (scripts/bench-analyze.sh; CPU only, run before the GPU parts so nothing else loads the host)
#   scaling    lem-analyze report -f csv on the 10 M-sample file at GOMAXPROCS 2, 4, 8 and 16, streamed (the default)
#              and read whole, 3 runs each, alternated with an earlier build when OLD_BIN names one (wall, user,
#              sys, peak RSS; the host's transparent huge page setting first)
#   markers    examples/hf/generate.py --markers both (batch 8, 8 rounds): the Python client's HTTP phases against
#              stdout windows at the same edges, on one run (scripts/gpu/markers_both.py)
#   precision  scripts/gpu/precision.py at its defaults (square waves 4–400 ms × duty 25/50/75 %, bursts
#              10–200 ms), counter read every 100 ms; lem-analyze precision with its plot
#   mps        scripts/gpu/share.py --mps under lem-run record: per-process attribution with MPS (an MPS daemon of
#              this user's in a temporary folder; the GPU's compute mode is not changed)
#   campaign   docs/RESULTS.md §2 with both idles (scripts/gpu/hf-idle.yaml: batch 1/8/32, 3 cycles)
#   exporter   lem-exporter's CPU on this host's GPUs, 20 s each: idle at defaults, idle with --process-interval 0,
#              then under a matmul load at defaults and with --serial-counter-reads (% of a core per GPU)
#
# Usage: scripts/gpu-parts.sh OUT PART...    (GPU_PARTS_DRY=1: replay a recorded trace, no GPU)
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-bin}
OUT=${1:?usage: scripts/gpu-parts.sh OUT PART...}
shift
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
src=()
[ "${GPU_PARTS_DRY:-0}" = 1 ] && src=(--replay testdata/traces/h200-llm.parquet --loop)
t0=$(date +%s)
say() { printf '[%4ds] %s\n' $(($(date +%s) - t0)) "$*"; }
lemrun=("$BIN/lem-run" "${src[@]}")
[ -z "${src[*]}" ] && nvidia-smi --query-gpu=index,name,uuid,driver_version,power.limit,pstate,temperature.gpu,clocks.sm \
  --format=csv | tee "$OUT/gpus.csv"

part_bench() {
  BIN=$BIN DUCKDB=${DUCKDB:-$BIN/duckdb-energy} scripts/bench-analyze.sh "$1" 3 10m
}
part_scaling() {
  local f=$1/10m.parquet builds=("$BIN/lem-analyze") b p mode rep
  [ -n "${OLD_BIN:-}" ] && builds+=("$OLD_BIN")
  cat /sys/kernel/mm/transparent_hugepage/enabled /sys/kernel/mm/transparent_hugepage/defrag 2>/dev/null
  "$BIN/lem-analyze" synth --from testdata/traces/h200-llm.parquet --copies 700 --gpus 4 -o "$f"
  echo "build P mode wall_s user_s sys_s maxrss_kb" >"$1/scaling.txt"
  for p in 2 4 8 16; do
    for mode in default whole; do
      for rep in 1 2 3; do
        for b in "${builds[@]}"; do
          flags=()
          [ "$mode" = whole ] && flags=(--stream never --memory-limit 65536)
          GOMAXPROCS=$p /usr/bin/time -f "$b $p $mode %e %U %S %M" -a -o "$1/scaling.txt" \
            "$b" report -f csv "${flags[@]}" "$f" >"$1/out-$(basename "$b")-$mode.csv"
        done
      done
    done
  done
  rm -f "$f"
  for b in "${builds[@]}"; do cmp "$1/out-$(basename "$BIN/lem-analyze")-default.csv" "$1/out-$(basename "$b")-default.csv"; done
  python3 - "$1/scaling.txt" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1]).read().splitlines()[1:] if l.strip()]
groups = {}
for b, p, mode, wall, user, sys_, rss in rows:
    groups.setdefault((b.rsplit("/", 1)[-1], int(p), mode), []).append((float(wall), float(user) + float(sys_), float(sys_), int(rss)))
print("| build | GOMAXPROCS | mode | wall s (median, range) | CPU s (sys) | peak RSS MB |")
print("|---|---|---|---|---|---|")
for (b, p, mode), v in sorted(groups.items()):
    w = sorted(x[0] for x in v)
    print(f"| {b} | {p} | {mode} | {statistics.median(w):.2f} ({w[0]:.2f}-{w[-1]:.2f}) | "
          f"{statistics.median(x[1] for x in v):.2f} ({statistics.median(x[2] for x in v):.2f}) | "
          f"{statistics.median(x[3] for x in v) / 1024:.0f} |")
PY
}
part_markers() {
  "${lemrun[@]}" --gpus 0 --baseline 5s --cooldown none --experiment hf-bs8-both --out "$1" -- \
    python3 examples/hf/generate.py --batch-size 8 --new-tokens 128 --repeats 8 --idle 3 --markers both \
    >"$1/lem-run.txt" 2>"$1/lem-run.log"
  tail -3 "$1/lem-run.log"
  python3 scripts/gpu/markers_both.py "$1"/hf-bs8-both-*/
}
part_precision() {
  "${lemrun[@]}" --gpus 0 --baseline 20s --cooldown none --counter-interval 100ms --experiment precision \
    --out "$1" -- python3 scripts/gpu/precision.py --device cuda:0 >"$1/lem-run.txt" 2>"$1/lem-run.log"
  tail -3 "$1/lem-run.log"
  "$BIN/lem-analyze" precision -f json "$1"/precision-*/ >"$1/precision.json"
  "$BIN/lem-analyze" precision --plot "$1/precision.svg" "$1"/precision-*/
}
part_mps() {
  "$BIN/lem-run" record "${src[@]}" --gpus 0 -o "$1/share.parquet" -- \
    python3 scripts/gpu/share.py run --gpu 0 --seconds 10 --idle 4 --mps --out "$1/share-run.json" \
    >"$1/record.txt" 2>"$1/record.log"
  tail -3 "$1/record.log"
  "$BIN/lem-analyze" processes --json "$1/share.parquet" >"$1/processes.json"
  "$BIN/lem-analyze" processes "$1/share.parquet" | head -60
  python3 scripts/gpu/share.py analyze "$1/share-run.json" "$1/processes.json"
}
part_campaign() {
  "${lemrun[@]}" campaign scripts/gpu/hf-idle.yaml --out "$1/campaign" >"$1/campaign.txt" 2>"$1/campaign.log"
  tail -3 "$1/campaign.log"
  "$BIN/lem-analyze" report "$1/campaign" >"$1/report.md" 2>&1
  "$BIN/lem-analyze" report -f json "$1/campaign" >"$1/report.json" 2>/dev/null
  for t in runs phases experiments windows; do
    "$BIN/lem-analyze" report -f csv --table "$t" "$1/campaign" >"$1/$t.csv" 2>/dev/null
  done
  sed -n '/^| experiment | runs/,/^$/p;/deep idle W/,/^$/p' "$1/report.md"
}
part_exporter() {
  local ngpu port=19640 load=""
  ngpu=$(nvidia-smi -L 2>/dev/null | wc -l)
  [ "$ngpu" -gt 0 ] || ngpu=1
  one() { # NAME FLAGS…: lem-exporter for 20 s after it is ready; prints its CPU per GPU
    local name=$1 pid before after
    shift
    "$BIN/lem-exporter" "${src[@]}" --web.listen-address "127.0.0.1:$port" "$@" >"$d/$name.log" 2>&1 &
    pid=$!
    for _ in $(seq 50); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.2; done
    sleep 2
    before=$(awk '{print $14+$15}' "/proc/$pid/stat")
    sleep 20
    after=$(awk '{print $14+$15}' "/proc/$pid/stat")
    kill -TERM "$pid"; wait "$pid" 2>/dev/null
    port=$((port + 1))
    printf '| %s | %s | %.3f |\n' "$name" "$*" "$(python3 -c "print(100 * ($after - $before) / $(getconf CLK_TCK) / 20 / $ngpu)")"
  }
  local d=$1
  echo "| exporter | flags | % of a core per GPU ($ngpu GPUs) |"
  echo "|---|---|---|"
  one idle-defaults
  one idle-no-processes --process-interval 0
  if [ -z "${src[*]}" ]; then
    python3 -c "
import time, torch
x = [torch.randn(8192, 8192, device=f'cuda:{i}', dtype=torch.bfloat16) for i in range(torch.cuda.device_count())]
end = time.time() + 60
while time.time() < end:
    for a in x: a @ a
    torch.cuda.synchronize()" &
    load=$!
    sleep 5
  fi
  one load-defaults
  one load-serial --serial-counter-reads
  [ -n "$load" ] && kill "$load" 2>/dev/null
  wait 2>/dev/null
}

for p in "$@"; do
  d=$OUT/$p
  mkdir -p "$d"
  say "part $p"
  { "part_$p" "$d"; echo "part $p: exit $?"; } 2>&1 | tee "$OUT/$p.summary"
done
say "done"
