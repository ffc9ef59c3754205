package report

import (
	"path/filepath"
	"testing"

	"github.com/lem-energy/lem/internal/testutil"
	"github.com/lem-energy/lem/internal/trace"
)

// BenchmarkReportTiled is `lem-analyze report` on the LLM recording tiled into 40 runs on 4 GPUs (591,200 power
// samples, the 10 M benchmark file's make at a twentieth of its length), read whole and streamed: the per-sample
// cost of both paths, allocations included, in seconds rather than the minutes of scripts/bench-analyze.sh.
func BenchmarkReportTiled(b *testing.B) {
	src, err := trace.ReadFile(testutil.TracePath("h200-llm"))
	if err != nil {
		b.Fatal(err)
	}
	p := filepath.Join(b.TempDir(), "tiled.parquet")
	w, err := trace.Create(p, src.Env)
	if err != nil {
		b.Fatal(err)
	}
	samples, err := trace.WriteTiled(w, src, 40, 4)
	if err != nil {
		b.Fatal(err)
	}
	if err := w.Close(); err != nil {
		b.Fatal(err)
	}
	for _, mode := range []string{StreamNever, StreamAlways} {
		b.Run(mode, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				runs, probs := LoadWith([]string{p}, LoadOptions{Stream: mode, NoPlots: true})
				if len(runs) != 40 || len(probs) != 0 {
					b.Fatalf("%d runs, problems %v", len(runs), probs)
				}
			}
			b.ReportMetric(float64(samples)*float64(b.N)/b.Elapsed().Seconds(), "samples/s")
		})
	}
}
