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
  echo; echo "lem demo: one experiment — HF generate at batch 8 with a 15 s idle baseline"
  bin/lem-run --experiment demo-hf-bs8 --gpus 0 --baseline 15s --out "$out/runs" \
    -- python3 examples/hf/generate.py --batch-size 8 --new-tokens 128 | grep -v '^LEM_'
else
  echo "lem demo: no NVIDIA GPU here — replaying a real H200 recording (testdata/traces/h200-shape.parquet) at 2x"
  bin/lem-run record --replay testdata/traces/h200-shape.parquet --speed 2 -o "$out/demo.parquet"
  echo; echo "lem demo: one experiment against a replayed H200 running real LLM inference (batch 1), after a 5 s idle baseline"
  bin/lem-run --replay testdata/traces/h200-llm.parquet --replay-from 26.5s --experiment demo --baseline 5s --out "$out/runs" \
    -- sh -c 'echo LEM_PHASE prefill; sleep 2; echo LEM_PHASE decode; sleep 4; echo LEM_RESULT output_tokens=512'
fi
echo
echo "lem demo: the trace is $out/demo.parquet (analyse it again with: bin/lem-analyze phases $out/demo.parquet);"
echo "the experiment's run directory (manifest.json, trace.parquet, logs) is under $out/runs"
