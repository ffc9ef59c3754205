#!/usr/bin/env bash
# lem-run in process mode around the HF generate example at batch 1 and 32 on GPU 0; prints each run's summary
# and a J/token table. Usage: scripts/gpu-run-example.sh [OUTDIR] [BASELINE]
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-bin}
OUT=${1:-/tmp/lem-example-runs}
BASELINE=${2:-15s}
export PYTHONUNBUFFERED=1
for bs in 1 32; do
  "$BIN/lem-run" --experiment "hf-llama1b-bs$bs" --gpus 0 --baseline "$BASELINE" --out "$OUT" \
    -- python3 examples/hf/generate.py --batch-size "$bs" --new-tokens 256 --repeats 3 | grep -v '^LEM_'
done
python3 - "$OUT" <<'PY'
import glob, json, sys
print("\n| experiment | run s | run J raw / adjusted | J/token (whole run) raw / adj | prefill s | prefill J raw / adj | decode s | decode J raw / adj | tokens | decode J/token raw / adj |")
print("|---|---|---|---|---|---|---|---|---|---|")
for f in sorted(glob.glob(f"{sys.argv[1]}/*/manifest.json")):
    m = json.load(open(f))
    ph = {}
    for p in m.get("phases", []):
        e = ph.setdefault(p["name"], [0.0, 0.0, 0.0])
        e[0] += p["duration_s"]; e[1] += p["energy"]["hybrid_j"]; e[2] += p["energy"]["adjusted_j"]
    d = m.get("derived", {})
    tok = d.get("output_tokens", 0) or 1
    pre, dec = ph.get("prefill", [0, 0, 0]), ph.get("decode", [0, 0, 0])
    print(f"| {m['experiment']} | {m['times']['duration_s']:.1f} | {m['energy']['hybrid_j']:.1f} / {m['energy']['adjusted_j']:.1f} | "
          f"{d.get('j_per_output_token', 0):.4f} / {d.get('j_per_output_token_adjusted', 0):.4f} | "
          f"{pre[0]:.3f} | {pre[1]:.1f} / {pre[2]:.1f} | {dec[0]:.2f} | {dec[1]:.1f} / {dec[2]:.1f} | {tok:.0f} | "
          f"{dec[1]/tok:.4f} / {dec[2]/tok:.4f} |")
PY
