#!/usr/bin/env bash
# Go benchmarks of lem's hot paths; results go into docs/BENCHMARKS.md by hand with date, machine and peer.
set -euo pipefail
cd "$(dirname "$0")/.."
export CGO_CFLAGS=${CGO_CFLAGS:--Wno-deprecated-declarations}
go test -run '^$' -bench . -benchmem -count 3 ./... | tee "${BENCH_OUT:-/tmp/lem-bench.txt}"
