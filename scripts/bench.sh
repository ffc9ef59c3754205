#!/usr/bin/env bash
# Go benchmarks of lem's hot paths; results go into docs/BENCHMARKS.md by hand with date, machine and peer.
set -euo pipefail
cd "$(dirname "$0")/.."
export CGO_CFLAGS=${CGO_CFLAGS:--Wno-deprecated-declarations}
go test -run '^$' -bench . -benchmem -count 3 ./... | tee "${BENCH_OUT:-/tmp/lem-bench.txt}"
# The analyzer against its pandas/pyarrow peer, where those are installed (a GPU host has them).
if python3 -c 'import pandas, pyarrow' 2>/dev/null && [ -x bin/lem-analyze ]; then
  scripts/bench-analyze.sh "${BENCH_ANALYZE_OUT:-/tmp/lem-bench-analyze}"
else
  echo "bench: pandas/pyarrow or bin/lem-analyze missing here; skipping scripts/bench-analyze.sh"
fi
