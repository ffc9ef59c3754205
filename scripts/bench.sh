#!/usr/bin/env bash
# Go benchmarks of lem's hot paths; results go into docs/BENCHMARKS.md by hand with date, machine and peer.
set -euo pipefail
cd "$(dirname "$0")/.."
export CGO_CFLAGS=${CGO_CFLAGS:--Wno-deprecated-declarations}
go test -run '^$' -bench . -benchmem -count 3 ./... | tee "${BENCH_OUT:-/tmp/lem-bench.txt}"
# The analyzer against DuckDB and (where installed) the pandas/pyarrow script, on the 10 M-sample file and a
# recording scaled up to a week of 8 GPUs, as a file and as segments (BENCH_ANALYZE_INPUTS picks).
if command -v go >/dev/null; then go build -trimpath -o bin/ ./cmd/lem-analyze; fi
scripts/bench-analyze.sh "${BENCH_ANALYZE_OUT:-/tmp/lem-bench-analyze}" "${BENCH_ANALYZE_REPEATS:-3}" \
  "${BENCH_ANALYZE_INPUTS:-10m 1x 4x 16x 16x-seg}"
# lem-analyze pull of a fleet's day (16 GPUs × 24 h at 50 Hz) from a real Prometheus backfilled with promtool,
# Prometheus measured beside it; BENCH_PULL=0 leaves it out.
if [ "${BENCH_PULL:-1}" = 1 ] && command -v promtool >/dev/null && command -v prometheus >/dev/null; then
  scripts/bench-pull.sh "${BENCH_PULL_OUT:-/tmp/lem-bench-pull}" "${BENCH_PULL_GPUS:-16}" "${BENCH_PULL_HOURS:-24}"
fi
