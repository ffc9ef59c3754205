#!/usr/bin/env bash
# Analyzer benchmark: the per-run energy table by `lem-analyze report -f csv` and by its peers, in the same run on
# the same files, alternated:
#   - lem-analyze report -f csv (default settings: a trace whose whole read, ~1.6× its rows' size, would not fit the
#     collector's soft limit, ¾ of --memory-limit 1 GiB, is streamed: read three times a row group at a time,
#     memory bounded by the runs in flight; the 10 M-sample file's 14.5 M rows are read whole);
#   - DuckDB (scripts/bench/duckdb-energy, its own Go module: per run and GPU counter and 50 Hz energies, and per
#     phase, in SQL over the same Parquet);
#   - the pandas/pyarrow script (scripts/bench/energy_table.py), where python3 has pandas and pyarrow, on files of
#     up to PANDAS_MAX_ROWS rows (it holds the table in memory: ~300 bytes a row).
# Inputs, all tiled from the real H200 LLM recording (testdata/traces/h200-llm.parquet):
#   10m      700 runs on 4 GPUs: 10,346,000 power samples, REPEATS times;
#   1x..16x  8 GPUs, SCALE, 4×SCALE and 16×SCALE runs (16×506 = 8,096 runs: one week), once each;
#   16x-seg  the week as a recording never merged: hourly closed segments (48 runs each).
# Prints, per input and tool, wall time, CPU, peak RSS and samples/s (medians), and the largest difference of each
# peer's counter and 50 Hz energies from lem's. Generated files are deleted unless KEEP=1. DuckDB's memory is
# bounded by DUCKDB_MEMORY_LIMIT (default here 8GB; it spills to OUTDIR beyond).
# Usage: scripts/bench-analyze.sh [OUTDIR] [REPEATS] [INPUTS]   (INPUTS: e.g. "10m 1x 4x 16x 16x-seg", the default)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-bin}
OUT=${1:-/tmp/lem-bench-analyze}
REPEATS=${2:-3}
INPUTS=${3:-10m 1x 4x 16x 16x-seg}
SCALE=${SCALE:-506}
PANDAS_MAX_ROWS=${PANDAS_MAX_ROWS:-50000000}
SRC=testdata/traces/h200-llm.parquet
mkdir -p "$OUT"
# The DuckDB peer: built here from its module, or given (DUCKDB=path) where no Go toolchain is.
DUCKDB=${DUCKDB:-}
if [ -z "$DUCKDB" ]; then
  if command -v go >/dev/null; then
    (cd scripts/bench && go build -trimpath -o "$OUT/duckdb-energy" ./duckdb-energy)
    DUCKDB=$OUT/duckdb-energy
  else
    echo "bench-analyze: no Go toolchain and no DUCKDB binary: the DuckDB peer is left out"
  fi
fi
export DUCKDB_MEMORY_LIMIT=${DUCKDB_MEMORY_LIMIT:-8GB} DUCKDB_TEMP_DIR=${DUCKDB_TEMP_DIR:-$OUT/duckdb-tmp}
PANDAS=0
python3 -c 'import pandas, pyarrow' 2>/dev/null && PANDAS=1 || echo "bench-analyze: python3 lacks pandas/pyarrow: the pandas peer is left out"
: >"$OUT/timings.jsonl"
: >"$OUT/inputs.txt"
synth() { # name copies gpus [segment-copies]
  local name=$1 copies=$2 gpus=$3 seg=${4:-0} path
  if [ "$seg" -gt 0 ]; then
    mkdir -p "$OUT/$name"
    path=$OUT/$name/week.parquet
    "$BIN/lem-analyze" synth --from "$SRC" --copies "$copies" --gpus "$gpus" --segment-copies "$seg" -o "$path" >"$OUT/$name.synth"
    echo "$name $OUT/$name $(sed -n 's/.*: \([0-9]*\) power samples.*/\1/p' "$OUT/$name.synth") $(ls "$OUT/$name"/.seg-*.parquet | tr '\n' ' ')" >>"$OUT/inputs.txt"
  else
    path=$OUT/$name.parquet
    "$BIN/lem-analyze" synth --from "$SRC" --copies "$copies" --gpus "$gpus" -o "$path" >"$OUT/$name.synth"
    echo "$name $path $(sed -n 's/.*: \([0-9]*\) power samples.*/\1/p' "$OUT/$name.synth") $path" >>"$OUT/inputs.txt"
  fi
  cat "$OUT/$name.synth"
}
measure() { # input tool repeat cmd...
  local input=$1 tool=$2 rep=$3
  shift 3
  python3 scripts/bench/measure.py "$OUT/$input.$tool.csv" -- "$@" | python3 -c "
import json, sys; r = json.loads(sys.stdin.read()); r.update(input='$input', tool='$tool', repeat=$rep); print(json.dumps(r))" >>"$OUT/timings.jsonl"
}
for input in $INPUTS; do
  case $input in
    10m) synth 10m 700 4; reps=$REPEATS ;;
    1x) synth 1x "$SCALE" 8; reps=1 ;;
    4x) synth 4x $((4 * SCALE)) 8; reps=1 ;;
    16x) synth 16x $((16 * SCALE)) 8; reps=1 ;;
    16x-seg) synth 16x-seg $((16 * SCALE)) 8 48; reps=1 ;;
    *) echo "bench-analyze: unknown input $input" >&2; exit 2 ;;
  esac
  read -r _ path samples files < <(grep "^$input " "$OUT/inputs.txt")
  for rep in $(seq "$reps"); do
    measure "$input" lem "$rep" "$BIN/lem-analyze" report -f csv "$path"
    # LEM_WHOLE=1: lem reading the trace whole as well (a limit it fits in), for the two paths side by side.
    [ "${LEM_WHOLE:-0}" = 1 ] && [ "$input" != 16x-seg ] &&
      measure "$input" lem-whole "$rep" "$BIN/lem-analyze" report -f csv --stream never --memory-limit 65536 "$path"
    # shellcheck disable=SC2086
    [ -n "$DUCKDB" ] && measure "$input" duckdb "$rep" "$DUCKDB" $files
    if [ "$PANDAS" = 1 ] && [ "$input" != 16x-seg ] && [ "$samples" -le $((PANDAS_MAX_ROWS * 5 / 7)) ]; then
      measure "$input" pandas "$rep" python3 scripts/bench/energy_table.py "$path"
    fi
  done
  [ "${KEEP:-0}" = 1 ] || rm -rf "$OUT/$input.parquet" "$OUT/$input"
done
python3 scripts/bench/summarize_analyze.py "$OUT"
