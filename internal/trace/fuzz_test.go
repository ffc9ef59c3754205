package trace

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

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
			if err := checkTime(x.Time.Time()); err != nil {
				t.Fatalf("GPU %d sample %d: %v", g, i, err)
			}
			if i > 0 && x.Time.Before(s.Samples[i-1].Time) {
				t.Fatalf("GPU %d samples out of order at %d", g, i)
			}
		}
		for i, c := range s.Counters {
			if err := checkTime(c.Time.Time()); err != nil {
				t.Fatalf("GPU %d counter %d: %v", g, i, err)
			}
			if i > 0 && c.Time.Before(s.Counters[i-1].Time) {
				t.Fatalf("GPU %d counters out of order at %d", g, i)
			}
		}
		for i := 1; i < len(s.Telemetry); i++ {
			if s.Telemetry[i].Time.Before(s.Telemetry[i-1].Time) {
				t.Fatalf("GPU %d telemetry out of order at %d", g, i)
			}
		}
		for i := 1; i < len(s.Processes); i++ {
			if s.Processes[i].Time.Before(s.Processes[i-1].Time) {
				t.Fatalf("GPU %d processes out of order at %d", g, i)
			}
		}
		for i, p := range s.ProcessSamples {
			if err := checkTime(p.Time); err != nil {
				t.Fatalf("GPU %d process sample %d: %v", g, i, err)
			}
			if err := checkRatios(p); err != nil {
				t.Fatalf("GPU %d process sample %d: %v", g, i, err)
			}
			if i > 0 && p.Time.Before(s.ProcessSamples[i-1].Time) {
				t.Fatalf("GPU %d process samples out of order at %d", g, i)
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
// promises, every kind in time order, and never reaches a panic of the Parquet library; read with every kind, it
// holds what whole reads of the files hold, row for row. Seeds: small valid traces (with process rows, and as two
// segments) and crafted ones in testdata/fuzz/FuzzStream.
func FuzzStream(f *testing.F) {
	f.Add(rowsFile(f, validRows()), 0, uint8(AllRows))
	f.Add(rowsFile(f, processRows()), 0, uint8(AllRows))
	a, b := splitRows(processRows())
	f.Add(append(rowsFile(f, a), rowsFile(f, b)...), len(rowsFile(f, a)), uint8(AllRows))
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
				out.Series(g).Append(r)
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
		for g, sr := range out.GPUs {
			if err := inOrder(sr); err != nil {
				t.Fatalf("GPU %d: %v", g, err)
			}
		}
		if Kinds(kinds)&AllRows != AllRows {
			return
		}
		// The files read whole, each GPU's rows put together and sorted, as a recording's segments are.
		whole := New(s.Env())
		for _, fb := range files {
			w, err := read(bytes.NewReader(fb), int64(len(fb)), ReadOptions{})
			if err != nil {
				return // the stream refuses more (time statistics), the whole read other things first
			}
			for g, sr := range w.GPUs {
				whole.Series(g).Append(sr)
			}
			whole.Events = append(whole.Events, w.Events...)
		}
		for _, sr := range whole.GPUs {
			sr.Sort()
		}
		if got, want := fmt.Sprint(out.GPUIndices()), fmt.Sprint(whole.GPUIndices()); got != want {
			t.Fatalf("streamed GPUs %s, whole read's %s", got, want)
		}
		for _, g := range whole.GPUIndices() {
			// Printed, floats are exact and NaN equals NaN.
			if got, want := fmt.Sprint(*out.GPUs[g]), fmt.Sprint(*whole.GPUs[g]); got != want {
				t.Fatalf("GPU %d streamed differs from the whole read:\n%s\n%s", g, got, want)
			}
		}
		if got, want := fmt.Sprint(out.Events), fmt.Sprint(whole.Events); got != want {
			t.Fatalf("streamed events differ from the whole read's:\n%s\n%s", got, want)
		}
	})
}

// splitRows splits a trace's rows in two by time, as a recorder's two segments.
func splitRows(rows []row) (a, b []row) {
	mid := rows[len(rows)/2].Time
	for _, r := range rows {
		if r.Time.Before(mid) {
			a = append(a, r)
		} else {
			b = append(b, r)
		}
	}
	return a, b
}

// inOrder says where a series' rows of some kind are out of time order.
func inOrder(s *Series) error {
	check := func(kind string, n int, at func(int) time.Time) error {
		for i := 1; i < n; i++ {
			if at(i).Before(at(i - 1)) {
				return fmt.Errorf("%s %d at %s before %s", kind, i, at(i), at(i-1))
			}
		}
		return nil
	}
	return errors.Join(
		check("sample", len(s.Samples), func(i int) time.Time { return s.Samples[i].Time.Time() }),
		check("counter", len(s.Counters), func(i int) time.Time { return s.Counters[i].Time.Time() }),
		check("telemetry", len(s.Telemetry), func(i int) time.Time { return s.Telemetry[i].Time.Time() }),
		check("process sample", len(s.ProcessSamples), func(i int) time.Time { return s.ProcessSamples[i].Time }),
		check("process", len(s.Processes), func(i int) time.Time { return s.Processes[i].Time }))
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
