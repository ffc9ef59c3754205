package trace

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"

	"github.com/lem-energy/lem/internal/meta"
)

// checkInvariants holds for every trace the reader or importer returns: what the format promises downstream.
func checkInvariants(t *testing.T, tr *Trace) {
	t.Helper()
	for g, s := range tr.GPUs {
		if err := checkGPU(g, false); err != nil {
			t.Fatalf("series of GPU %d: %v", g, err)
		}
		for i, x := range s.Samples {
			if err := checkTime(x.Time); err != nil {
				t.Fatalf("GPU %d sample %d: %v", g, i, err)
			}
			if i > 0 && x.Time.Before(s.Samples[i-1].Time) {
				t.Fatalf("GPU %d samples out of order at %d", g, i)
			}
		}
		for i, c := range s.Counters {
			if err := checkTime(c.Time); err != nil {
				t.Fatalf("GPU %d counter %d: %v", g, i, err)
			}
		}
		for i, p := range s.ProcessSamples {
			if err := checkTime(p.Time); err != nil {
				t.Fatalf("GPU %d process sample %d: %v", g, i, err)
			}
			if err := checkRatios(p); err != nil {
				t.Fatalf("GPU %d process sample %d: %v", g, i, err)
			}
		}
	}
	for i, e := range tr.Events {
		if err := checkRow(e.GPU, true, e.Time); err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
	}
	// Whatever was read can be written again.
	w, err := NewStreamWriter(io.Discard, tr.Env)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.WriteTrace(tr); err != nil {
		t.Fatalf("writing back what was read: %v", err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

// FuzzReadTrace feeds bytes to the trace reader as a file (lem-analyze report, --replay). Seeds: small valid
// traces and crafted ones in testdata/fuzz/FuzzReadTrace.
func FuzzReadTrace(f *testing.F) {
	f.Add(rowsFile(f, validRows()), false)
	f.Add(rowsFile(f, processRows()), true)
	f.Fuzz(func(t *testing.T, b []byte, skipTelemetry bool) {
		tr, err := read(bytes.NewReader(b), int64(len(b)), ReadOptions{SkipTelemetry: skipTelemetry})
		if errors.Is(err, errLibraryPanic) {
			t.Fatalf("input reached a panic of the Parquet library: %v", err)
		}
		if err != nil {
			return
		}
		checkInvariants(t, tr)
	})
}

// FuzzStream feeds bytes to the streaming reader as a trace of two files (lem-analyze report on a recording too
// large for memory, or on a recording's segments): what it hands over, merged in time order, keeps the format's
// promises, and never reaches a panic of the Parquet library. Seeds: small valid traces and crafted ones in
// testdata/fuzz/FuzzStream.
func FuzzStream(f *testing.F) {
	f.Add(rowsFile(f, validRows()), 0, uint8(AllRows))
	f.Fuzz(func(t *testing.T, b []byte, split int, kinds uint8) {
		// The bytes as one file, or, split at a point, as two segments.
		files := [][]byte{b}
		if split > 0 && split < len(b) {
			files = [][]byte{b[:split], b[split:]}
		}
		s, err := openStream(len(files), func(i int) (*streamFile, *Trace, error) {
			return newStreamFile("f", bytes.NewReader(files[i]), int64(len(files[i])))
		})
		if errors.Is(err, errLibraryPanic) {
			t.Fatalf("input reached a panic of the Parquet library: %v", err)
		}
		if err != nil {
			return
		}
		out := New(s.Env())
		var m Merge
		take := func(rel map[int]*Series) {
			for g, r := range rel {
				d := out.Series(g)
				d.Samples = append(d.Samples, r.Samples...)
				d.Counters = append(d.Counters, r.Counters...)
				d.Telemetry = append(d.Telemetry, r.Telemetry...)
			}
		}
		err = s.Scan(context.Background(), Kinds(kinds)&AllRows, func(p Part) error {
			m.Add(p.Trace)
			out.Events = append(out.Events, p.Trace.Events...)
			take(m.Release(p.Complete))
			return nil
		})
		if errors.Is(err, errLibraryPanic) {
			t.Fatalf("input reached a panic of the Parquet library: %v", err)
		}
		if err != nil {
			return
		}
		take(m.Release(maxTime))
		checkInvariants(t, out)
	})
}

// FuzzImportProbe feeds the probe importer its three files (lem-analyze import).
func FuzzImportProbe(f *testing.F) {
	f.Add([]byte("t_ns,energy_mj,energy_read_us,power_mw,temp_c,sm_mhz,clk_reasons\n1795735590000000000,1000,3500,70000,40,1980,0\n"),
		[]byte("ts_us,power_mw\n1795735590000000,70000\n1795735590020000,71000\n"),
		[]byte("MARK decode-start 1795735590010000000\nMARK decode-end 1795735590050000000 tokens=5\nMARK end 1795735590060000000\n"))
	f.Fuzz(func(t *testing.T, counters, samples, marks []byte) {
		tr, err := importProbe(0, meta.Environment{}, namedBytes{bytes.NewReader(counters), "counters.csv"},
			namedBytes{bytes.NewReader(samples), "power_samples.csv"}, marks, "marks.txt")
		if err != nil {
			return
		}
		checkInvariants(t, tr)
	})
}
