package trace

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lem-energy/lem/internal/meta"
)

// streamAll reads a stream part by part, releasing through Merge at each part's Complete time, and checks that
// nothing released later lies before anything released earlier.
func streamAll(t *testing.T, kinds Kinds, paths ...string) (*Trace, map[int]Extents, int) {
	t.Helper()
	s, err := OpenStream(paths...)
	require.NoError(t, err)
	defer s.Close()
	out := New(s.Env())
	ext := map[int]Extents{}
	var m Merge
	parts := 0
	var released time.Time
	err = s.Scan(context.Background(), kinds, func(p Part) error {
		parts++
		m.Add(p.Trace)
		out.Events = append(out.Events, p.Trace.Events...)
		for g, e := range p.Extents {
			x := ext[g]
			x.Merge(e)
			ext[g] = x
		}
		for g, r := range m.Release(p.Complete) {
			for _, x := range r.Samples {
				require.False(t, x.Time.Before(StampOf(released)), "sample at %s released after %s", x.Time, released)
			}
			for _, x := range r.ProcessSamples {
				require.False(t, x.Time.Before(released), "process sample at %s released after %s", x.Time, released)
			}
			for _, x := range r.Processes {
				require.False(t, x.Time.Before(released), "process at %s released after %s", x.Time, released)
			}
			out.Series(g).Append(r)
		}
		released = p.Complete
		return nil
	})
	require.NoError(t, err)
	return out, ext, parts
}

// shuffledFile writes rows the way a recorder does: GPUs interleaved, samples delivered in batches up to a second
// after the counter reads and telemetry of the same time, with equal timestamps across kinds and GPUs. Each GPU has
// a process throughout and GPU 0 a second one from 300 s to 700 s: their utilization samples, stamped by the driver
// 700 ms before the poll that delivers them (both processes at the same stamp, written in an order that alternates
// each second), and the poll's list of processes at the time of a counter reading.
func shuffledFile(t *testing.T, dir, name string, t0 time.Time, seconds int) string {
	p := filepath.Join(dir, name)
	w, err := Create(p, meta.Environment{Host: meta.Host{Hostname: "h"}})
	require.NoError(t, err)
	rng := rand.New(rand.NewPCG(1, 2))
	for sec := range seconds {
		for g := range 3 {
			base := t0.Add(time.Duration(sec) * time.Second)
			for k := range 10 {
				ts := base.Add(time.Duration(k) * 100 * time.Millisecond)
				require.NoError(t, w.WriteCounter(g, CounterReading{Time: StampOf(ts), EnergyMJ: uint64(sec*1000 + k*100 + rng.IntN(3))}))
				tm := NewTelemetry(StampOf(ts))
				tm.TemperatureC = float64(40 + g)
				require.NoError(t, w.WriteTelemetry(g, tm))
			}
			var ss []PowerSample
			for k := range 50 {
				ss = append(ss, PowerSample{Time: StampOf(base.Add(time.Duration(k) * 20 * time.Millisecond).Add(-time.Second)),
					PowerW: float64(100 + rng.IntN(400))})
			}
			require.NoError(t, w.WriteSamples(g, ss))
			pids := []uint32{uint32(1000 + g)}
			if g == 0 && base.Sub(t0) >= 300*time.Second && base.Sub(t0) < 700*time.Second {
				pids = append(pids, 2000)
				if sec%2 == 1 {
					pids[0], pids[1] = pids[1], pids[0]
				}
			}
			var ps []ProcessSample
			var procs []Process
			for _, pid := range pids {
				ps = append(ps, ProcessSample{Time: base.Add(-700 * time.Millisecond), PID: pid, SM: float64(rng.IntN(101)) / 100})
				procs = append(procs, Process{Time: base, PID: pid, MemoryBytes: uint64(pid) << 20, GPUInstance: NoInstance,
					ComputeInstance: NoInstance, Identity: ProcessIdentity{Command: fmt.Sprint("p", pid), ContainerID: containerID}})
			}
			require.NoError(t, w.WriteProcessSamples(g, ps))
			require.NoError(t, w.WriteProcesses(g, procs))
		}
		if sec%7 == 0 {
			require.NoError(t, w.WriteEvent(Event{Time: t0.Add(time.Duration(sec) * time.Second), GPU: NoGPU, Type: EventMark,
				Name: "m", RunID: "r"}))
		}
	}
	require.NoError(t, w.Close())
	return p
}

func sameSeries(t *testing.T, want, got *Trace) {
	t.Helper()
	require.Equal(t, want.GPUIndices(), got.GPUIndices())
	for g, w := range want.GPUs {
		s := got.GPUs[g]
		require.Equal(t, len(w.Samples), len(s.Samples), "GPU %d samples", g)
		require.Equal(t, len(w.Counters), len(s.Counters), "GPU %d counters", g)
		require.Equal(t, len(w.Telemetry), len(s.Telemetry), "GPU %d telemetry", g)
		for i := range w.Samples {
			require.True(t, w.Samples[i].Time.Equal(s.Samples[i].Time) && w.Samples[i].PowerW == s.Samples[i].PowerW,
				"GPU %d sample %d: %v vs %v", g, i, w.Samples[i], s.Samples[i])
		}
		for i := range w.Counters {
			require.True(t, w.Counters[i].Time.Equal(s.Counters[i].Time) && w.Counters[i].EnergyMJ == s.Counters[i].EnergyMJ,
				"GPU %d counter %d", g, i)
		}
		for i := range w.Telemetry {
			require.True(t, w.Telemetry[i].Time.Equal(s.Telemetry[i].Time) && same(w.Telemetry[i].TemperatureC, s.Telemetry[i].TemperatureC),
				"GPU %d telemetry %d", g, i)
		}
		// Process rows are compared whole, row for row (rows of equal time in their order in the files).
		require.Equal(t, len(w.ProcessSamples), len(s.ProcessSamples), "GPU %d process samples", g)
		require.Equal(t, len(w.Processes), len(s.Processes), "GPU %d processes", g)
		for i := range w.ProcessSamples {
			require.Equal(t, w.ProcessSamples[i], s.ProcessSamples[i], "GPU %d process sample %d", g, i)
		}
		for i := range w.Processes {
			require.Equal(t, w.Processes[i], s.Processes[i], "GPU %d process %d", g, i)
		}
	}
}

// A stream released through Merge holds exactly what a whole read holds, in the same order (equal timestamps
// included), whether the trace is one file of many row groups, the same rows as segments, or a real recording.
func TestStreamMatchesWholeRead(t *testing.T) {
	dir := t.TempDir()
	t0 := time.Unix(1795735590, 0).UTC()
	one := shuffledFile(t, dir, "one.parquet", t0, 1000) // 1000 s × 3 GPUs: 4 row groups of 64 Ki rows
	segs := []string{shuffledFile(t, dir, "s0.parquet", t0, 150), shuffledFile(t, dir, "s1.parquet", t0.Add(150*time.Second), 150),
		shuffledFile(t, dir, "s2.parquet", t0.Add(300*time.Second), 100)}
	real, _ := filepath.Glob(filepath.Join("..", "..", "testdata", "traces", "*.parquet"))
	require.NotEmpty(t, real)
	cases := map[string][]string{"one file": {one}, "segments": segs}
	for _, p := range real {
		cases[filepath.Base(p)] = []string{p}
	}
	for name, paths := range cases {
		t.Run(name, func(t *testing.T) {
			want := New(meta.Environment{})
			for _, p := range paths {
				w, err := ReadFile(p)
				require.NoError(t, err)
				for g, s := range w.GPUs {
					want.Series(g).Append(s)
				}
				want.Events = append(want.Events, w.Events...)
			}
			for _, s := range want.GPUs {
				s.Sort()
			}
			got, ext, parts := streamAll(t, AllRows, paths...)
			sameSeries(t, want, got)
			require.Equal(t, len(want.Events), len(got.Events))
			for i := range want.Events {
				assert.True(t, want.Events[i].Time.Equal(got.Events[i].Time) && want.Events[i].Type == got.Events[i].Type)
			}
			for g, s := range want.GPUs {
				e := ext[g]
				assert.Equal(t, len(s.Samples), e.Samples.N)
				assert.Equal(t, len(s.Telemetry), e.Telemetry.N)
				if len(s.Samples) > 0 {
					assert.True(t, s.Samples[0].Time.Equal(StampOf(e.Samples.First())) && s.Samples[len(s.Samples)-1].Time.Equal(StampOf(e.Samples.Last())))
				}
				assert.Equal(t, len(s.ProcessSamples), e.ProcessSamples.N)
				assert.Equal(t, len(s.Processes), e.Processes.N)
				if n := len(s.ProcessSamples); n > 0 {
					assert.True(t, s.ProcessSamples[0].Time.Equal(e.ProcessSamples.First()) && s.ProcessSamples[n-1].Time.Equal(e.ProcessSamples.Last()))
				}
				if n := len(s.Processes); n > 0 {
					assert.True(t, s.Processes[0].Time.Equal(e.Processes.First()) && s.Processes[n-1].Time.Equal(e.Processes.Last()))
				}
			}
			if name == "one file" {
				assert.Equal(t, 4, parts)
				// One process a second on each GPU, two on GPU 0 for 400 s.
				for g, n := range []int{1400, 1000, 1000} {
					assert.Len(t, got.GPUs[g].ProcessSamples, n, "GPU %d", g)
					assert.Len(t, got.GPUs[g].Processes, n, "GPU %d", g)
				}
				// At equal stamps the rows keep their order in the file, which alternates between the two PIDs.
				ps := got.GPUs[0].ProcessSamples
				i := slices.IndexFunc(ps, func(p ProcessSample) bool { return p.PID == 2000 })
				require.Positive(t, i)
				assert.Equal(t, []uint32{1000, 2000, 2000, 1000}, []uint32{ps[i-1].PID, ps[i].PID, ps[i+1].PID, ps[i+2].PID})
				assert.True(t, ps[i-1].Time.Equal(ps[i].Time) && ps[i+1].Time.Equal(ps[i+2].Time))
			}
		})
	}
}

// A scan of some kinds decodes only those, and still counts the others' rows.
func TestStreamKinds(t *testing.T) {
	p := shuffledFile(t, t.TempDir(), "k.parquet", time.Unix(1795735590, 0), 50)
	got, ext, _ := streamAll(t, RowCounters|RowEvents, p)
	for g := range 3 {
		require.NotNil(t, got.GPUs[g])
		assert.Empty(t, got.GPUs[g].Samples)
		assert.Empty(t, got.GPUs[g].Telemetry)
		assert.Len(t, got.GPUs[g].Counters, 500)
		assert.Equal(t, 2500, ext[g].Samples.N)
		assert.Equal(t, 500, ext[g].Telemetry.N)
		assert.Empty(t, got.GPUs[g].ProcessSamples)
		assert.Empty(t, got.GPUs[g].Processes)
		assert.Equal(t, 50, ext[g].ProcessSamples.N)
		assert.Equal(t, 50, ext[g].Processes.N)
	}
	assert.Len(t, got.Events, 8)
	// Process rows alone: a GPU with nothing else scanned still hands them over.
	got, _, _ = streamAll(t, RowProcesses, p)
	for g := range 3 {
		require.NotNil(t, got.GPUs[g])
		assert.Empty(t, got.GPUs[g].Counters)
		assert.Len(t, got.GPUs[g].ProcessSamples, 50)
		assert.Len(t, got.GPUs[g].Processes, 50)
		assert.Equal(t, uint32(1000+g), got.GPUs[g].Processes[49].PID)
	}
}

// A row group whose time statistics do not hold its rows is refused: the stream's order rests on them.
func TestStreamRefusesFalseStatistics(t *testing.T) {
	rows := validRows()
	b := rowsFile(t, rows)
	c := parseCraft(t, b)
	// Declare the time column's range one second later than its rows.
	leaf := 2 // kind, gpu, time
	st := &c.md.RowGroups[0].Columns[leaf].MetaData.Statistics
	require.Len(t, st.MinValue, 8)
	for _, v := range []*[]byte{&st.MinValue, &st.MaxValue} {
		ns := int64(0)
		for i := 7; i >= 0; i-- {
			ns = ns<<8 | int64((*v)[i])
		}
		ns += int64(time.Second)
		for i := range 8 {
			(*v)[i] = byte(ns >> (8 * i))
		}
	}
	p := filepath.Join(t.TempDir(), "false.parquet")
	require.NoError(t, os.WriteFile(p, c.bytes(t), 0o644))
	s, err := OpenStream(p)
	require.NoError(t, err)
	defer s.Close()
	err = s.Scan(context.Background(), AllRows, func(Part) error { return nil })
	require.Error(t, err)
	assert.Contains(t, err.Error(), "outside its time statistics")
	assert.Contains(t, err.Error(), "false.parquet")
}

// A stream of one file read whole is the file's whole read: the same series, events, environment and metadata,
// from the footer the stream already read. A stream of several files is not read whole.
func TestStreamReadWhole(t *testing.T) {
	dir := t.TempDir()
	t0 := time.Unix(1795735590, 0).UTC()
	paths := []string{shuffledFile(t, dir, "one.parquet", t0, 300)}
	real, _ := filepath.Glob(filepath.Join("..", "..", "testdata", "traces", "*.parquet"))
	require.NotEmpty(t, real)
	for _, p := range append(paths, real...) {
		t.Run(filepath.Base(p), func(t *testing.T) {
			want, err := ReadFile(p)
			require.NoError(t, err)
			s, err := OpenStream(p)
			require.NoError(t, err)
			defer s.Close()
			got, err := s.ReadWhole()
			require.NoError(t, err)
			require.NotEmpty(t, got.GPUs)
			require.Equal(t, want.GPUIndices(), got.GPUIndices())
			for g, w := range want.GPUs { // as text: telemetry holds NaNs, which no deep comparison equates
				assert.Equal(t, fmt.Sprintf("%+v", *w), fmt.Sprintf("%+v", *got.GPUs[g]), "GPU %d", g)
			}
			assert.Equal(t, want.Events, got.Events)
			assert.Equal(t, want.Env, got.Env)
			assert.Equal(t, want.Extra, got.Extra)
		})
	}
	s, err := OpenStream(paths[0], paths[0])
	require.NoError(t, err)
	defer s.Close()
	_, err = s.ReadWhole()
	assert.ErrorContains(t, err, "a whole read takes one file, the stream has 2")
}
