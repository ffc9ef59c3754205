package trace_test

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/lem-energy/lem/internal/meta"
	"github.com/lem-energy/lem/internal/trace"
)

// hourOfSamples is one GPU-hour at 50 Hz: 180,000 samples.
func hourOfSamples() []trace.PowerSample {
	t0 := time.Unix(1795735590, 0)
	ss := make([]trace.PowerSample, 180_000)
	for i := range ss {
		ss[i] = trace.PowerSample{Time: trace.StampOf(t0.Add(time.Duration(i) * 20 * time.Millisecond)), PowerW: 100 + float64(i%500)}
	}
	return ss
}

func BenchmarkWriteReadHour(b *testing.B) {
	ss := hourOfSamples()
	dir := b.TempDir()
	b.ReportAllocs()
	for b.Loop() {
		p := filepath.Join(dir, "h.parquet")
		w, err := trace.Create(p, meta.Environment{})
		if err != nil {
			b.Fatal(err)
		}
		if err := w.WriteSamples(0, ss); err != nil {
			b.Fatal(err)
		}
		if err := w.Close(); err != nil {
			b.Fatal(err)
		}
		t, err := trace.ReadFile(p)
		if err != nil || len(t.GPUs[0].Samples) != len(ss) {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(ss))*float64(b.N)/b.Elapsed().Seconds(), "samples/s")
}

// BenchmarkRead is ingest alone: 4 GPU-hours at 50 Hz (720,000 samples) with counter reads and telemetry.
func BenchmarkRead(b *testing.B) {
	ss := hourOfSamples()
	p := filepath.Join(b.TempDir(), "r.parquet")
	w, err := trace.Create(p, meta.Environment{})
	if err != nil {
		b.Fatal(err)
	}
	for g := range 4 {
		if err := w.WriteSamples(g, ss); err != nil {
			b.Fatal(err)
		}
		for i := 0; i < len(ss); i += 50 {
			w.WriteCounter(g, trace.CounterReading{Time: ss[i].Time, EnergyMJ: uint64(i)})
			w.WriteTelemetry(g, trace.NewTelemetry(ss[i].Time))
		}
	}
	if err := w.Close(); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		t, err := trace.ReadFile(p)
		if err != nil || len(t.GPUs[3].Samples) != len(ss) {
			b.Fatal(err)
		}
	}
	b.ReportMetric(4*float64(len(ss))*float64(b.N)/b.Elapsed().Seconds(), "samples/s")
}
