#!/usr/bin/env bash
# make demo: on a GPU host, record the GPUs around a known-shape load; elsewhere, replay the recorded real H200
# trace through the same sampler and recorder. Either way, print capture quality and per-phase energy.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${DEMO_OUT:-/tmp/lem-demo}
mkdir -p "$out"
wl=""
for d in ../shared/workloads gpu-inputs/workloads; do [ -f "$d/gpuload.py" ] && wl=$d && break; done
if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1 && [ -n "$wl" ]; then
  echo "lem demo: NVIDIA GPU found — recording a known-shape load (idle/heavy/idle/medium/idle)"
  bin/lem-run record -o "$out/demo.parquet" -- python3 "$wl/gpuload.py" 4
else
  echo "lem demo: no NVIDIA GPU here — replaying a real H200 recording (testdata/traces/h200-shape.parquet) at 2x"
  bin/lem-run record --replay testdata/traces/h200-shape.parquet --speed 2 -o "$out/demo.parquet"
fi
echo
echo "lem demo: the trace is $out/demo.parquet; analyse it again any time with:"
echo "  bin/lem-analyze phases $out/demo.parquet"
