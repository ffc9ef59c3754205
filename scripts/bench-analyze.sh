#!/usr/bin/env bash
# Analyzer benchmark: the per-run energy table of one ≥10 M-sample trace by `lem-analyze report -f csv` and by the
# equivalent pandas/pyarrow script (scripts/bench/energy_table.py), alternated, same machine, same file.
# Prints wall time, CPU, peak memory and ingest rate of each, the ratio, and the largest difference between their
# energies. Needs python3 with pandas and pyarrow. Usage: scripts/bench-analyze.sh [OUTDIR] [COPIES] [REPEATS]
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-bin}
OUT=${1:-/tmp/lem-bench-analyze}
COPIES=${2:-700}
REPEATS=${3:-3}
mkdir -p "$OUT"
# A real recording (H200, LLM inference with phases) tiled into COPIES runs on 4 GPUs.
"$BIN/lem-analyze" synth --from testdata/traces/h200-llm.parquet --copies "$COPIES" --gpus 4 -o "$OUT/big.parquet"
: >"$OUT/timings.jsonl"
for i in $(seq "$REPEATS"); do
  python3 scripts/bench/measure.py "$OUT/lem.csv" -- "$BIN/lem-analyze" report -f csv "$OUT/big.parquet" >>"$OUT/timings.jsonl"
  python3 scripts/bench/measure.py "$OUT/pandas.csv" -- python3 scripts/bench/energy_table.py "$OUT/big.parquet" >>"$OUT/timings.jsonl"
done
python3 - "$OUT" <<'PY'
import json, os, statistics, sys
import pandas as pd, pyarrow.parquet as pq
out = sys.argv[1]
md = pq.read_metadata(f"{out}/big.parquet")
samples = pq.read_table(f"{out}/big.parquet", columns=["kind"]).to_pandas()["kind"].eq("sample").sum()
runs = [json.loads(l) for l in open(f"{out}/timings.jsonl")]
lem = [r for r in runs if "lem-analyze" in r["cmd"]]
pdr = [r for r in runs if "energy_table" in r["cmd"]]
assert all(r["rc"] == 0 for r in runs), runs
def med(rs, k): return statistics.median(r[k] for r in rs)
a = pd.read_csv(f"{out}/lem.csv"); b = pd.read_csv(f"{out}/pandas.csv")
j = a.merge(b, on=["run_id", "gpu"], suffixes=("_lem", "_pd"))
dc = (j["counter_j_lem"] - j["counter_j_pd"]).abs().max()
ds = ((j["sampled_j_lem"] - j["sampled_j_pd"]).abs() / j["sampled_j_pd"]).max()
print(f"file: {os.path.getsize(out + '/big.parquet') / 1e6:.1f} MB, {md.num_rows} rows, {samples} power samples, "
      f"{a['run_id'].nunique()} runs × {a['gpu'].nunique()} GPUs; {len(lem)} alternated repeats, medians")
print("| tool | wall s | CPU s | peak RSS MB | samples/s end to end |")
print("|---|---|---|---|---|")
for name, rs in (("lem-analyze report -f csv (counter, 50 Hz, hybrid with lag fit, per phase)", lem),
                 ("pandas/pyarrow script (counter, 50 Hz, per phase)", pdr)):
    print(f"| {name} | {med(rs, 'wall_s'):.2f} | {med(rs, 'cpu_s'):.2f} | {med(rs, 'max_rss_mb'):.0f} | {samples / med(rs, 'wall_s') / 1e6:.1f} M |")
print(f"\nlem faster by {med(pdr, 'wall_s') / med(lem, 'wall_s'):.1f}× end to end; rows compared {len(j)}; "
      f"largest difference: counter {dc:.4f} J, 50 Hz {100 * ds:.4f} %")
PY
