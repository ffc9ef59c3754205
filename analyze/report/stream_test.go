package report

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lem-energy/lem/analyze/account"
	"github.com/lem-energy/lem/internal/recorder"
	"github.com/lem-energy/lem/internal/testutil"
	"github.com/lem-energy/lem/internal/trace"
)

// wholeRuns is the report of a trace as it was before windows: every run accounted and detailed on the whole
// trace in memory. The windowed and streamed reports must give its numbers.
func wholeRuns(t *trace.Trace, path string) []Run {
	spans := Spans(t, strings.TrimSuffix(filepath.Base(path), filepath.Ext(path)))
	meters, lms := account.Meters(t), lagMeters(t)
	var out []Run
	for _, sp := range spans {
		m, _ := traceManifest(t, path, sp, meters)
		r := Run{Dir: path, Manifest: m, Uncertainty: budget(m)}
		detail(&r, t, sp.Start, lms)
		out = append(out, r)
	}
	return out
}

// differ compares two values field by field: floats to 1e-9 relative (NaN equal to NaN), times exactly, and
// counts the energies (fields ending in J) compared. Values under 1 are held to 1e-9 absolute: the budget's lag
// term is a difference of two whole-run energies (E at lag+u minus E at lag−u, millijoules out of kilojoules), whose
// own rounding (1e-15 of the energies) is far below 1e-9 of them but not of it.
type differ struct {
	diffs    []string
	energies int
	// processEnergies counts the per-process and per-container energies among them.
	processEnergies int
}

func (d *differ) cmp(path string, a, b reflect.Value) {
	if len(d.diffs) > 20 {
		return
	}
	if a.Type() == reflect.TypeOf(time.Time{}) {
		if !a.Interface().(time.Time).Equal(b.Interface().(time.Time)) {
			d.diffs = append(d.diffs, fmt.Sprintf("%s: %v vs %v", path, a.Interface(), b.Interface()))
		}
		return
	}
	switch a.Kind() {
	case reflect.Float64, reflect.Float32:
		x, y := a.Float(), b.Float()
		if math.IsNaN(x) && math.IsNaN(y) {
			return
		}
		if strings.HasSuffix(path, "J") && !math.IsNaN(x) && x != 0 {
			d.energies++
			if strings.Contains(path, ".Processes.") {
				d.processEnergies++
			}
		}
		if !(math.Abs(x-y) <= 1e-9*max(math.Abs(x), math.Abs(y), 1)) {
			d.diffs = append(d.diffs, fmt.Sprintf("%s: %.12g vs %.12g", path, x, y))
		}
	case reflect.Pointer, reflect.Interface:
		if a.IsNil() || b.IsNil() {
			if a.IsNil() != b.IsNil() {
				d.diffs = append(d.diffs, fmt.Sprintf("%s: nil vs not", path))
			}
			return
		}
		d.cmp(path, a.Elem(), b.Elem())
	case reflect.Struct:
		for i := range a.NumField() {
			if a.Type().Field(i).IsExported() {
				d.cmp(path+"."+a.Type().Field(i).Name, a.Field(i), b.Field(i))
			}
		}
	case reflect.Slice, reflect.Array:
		if a.Len() != b.Len() {
			d.diffs = append(d.diffs, fmt.Sprintf("%s: %d vs %d elements", path, a.Len(), b.Len()))
			return
		}
		for i := range a.Len() {
			d.cmp(fmt.Sprintf("%s[%d]", path, i), a.Index(i), b.Index(i))
		}
	case reflect.Map:
		if a.Len() != b.Len() {
			d.diffs = append(d.diffs, fmt.Sprintf("%s: %d vs %d keys", path, a.Len(), b.Len()))
			return
		}
		for _, k := range a.MapKeys() {
			v := b.MapIndex(k)
			if !v.IsValid() {
				d.diffs = append(d.diffs, fmt.Sprintf("%s[%v]: missing", path, k))
				continue
			}
			d.cmp(fmt.Sprintf("%s[%v]", path, k), a.MapIndex(k), v)
		}
	default:
		if !reflect.DeepEqual(a.Interface(), b.Interface()) {
			d.diffs = append(d.diffs, fmt.Sprintf("%s: %v vs %v", path, a.Interface(), b.Interface()))
		}
	}
}

// markedLLM is the real H200 LLM recording as a two-GPU recording with runs marked inside it: one around a phase,
// one whose second GPU is only observed, one never ended (interrupted: it ends with the recording), one that starts
// with the recording, 2.4 s before the first counter reading (the hybrid extrapolates by its gain there). The
// second GPU draws half the power and its counter stops 14 s before the samples do: the interrupted run's end is
// extrapolated from the last readings too (the first GPU's counter ends a second before its samples).
func markedLLM(t *testing.T, dir string) string {
	src, err := trace.ReadFile(testutil.TracePath("h200-llm"))
	require.NoError(t, err)
	s := src.GPUs[0]
	out := trace.New(src.Env)
	*out.Series(0) = *s
	// The counter ends a second before the samples (the recording's end is then the last sample).
	endS := s.Samples[len(s.Samples)-1].Time
	out.GPUs[0].Counters = (&trace.Series{Counters: s.Counters}).Window(s.Counters[0].Time.Time(), endS.Add(-time.Second).Time()).Counters
	phase := map[string]trace.Phase{}
	for _, p := range trace.Phases(src.Events, s.Samples[len(s.Samples)-1].Time.Time()) {
		phase[p.Name] = p
	}
	half := &trace.Series{Telemetry: s.Telemetry}
	for _, x := range s.Samples {
		half.Samples = append(half.Samples, trace.PowerSample{Time: x.Time, PowerW: x.PowerW / 2})
	}
	for _, c := range s.Counters {
		if c.Time.Before(trace.StampOf(phase["bs32"].Start.Add(5 * time.Second))) {
			half.Counters = append(half.Counters, trace.CounterReading{Time: c.Time, EnergyMJ: c.EnergyMJ / 2})
		}
	}
	*out.Series(1) = *half
	ev := func(at time.Time, typ, run, name string, attrs map[string]string) {
		out.Events = append(out.Events, trace.Event{Time: at, GPU: trace.NoGPU, Type: typ, RunID: run, Name: name, Attrs: attrs})
	}
	bs1, bs8, bs32 := phase["bs1"], phase["bs8"], phase["bs32"]
	ev(s.Samples[0].Time.Add(10*time.Millisecond).Time(), trace.EventRunStart, "first", "exp", nil)
	ev(s.Samples[0].Time.Add(7*time.Second).Time(), trace.EventRunEnd, "first", "exp", nil)
	ev(bs1.Start.Add(-500*time.Millisecond), trace.EventRunStart, "a", "exp", nil)
	ev(bs1.Start, trace.EventPhase, "a", "bs1", nil)
	ev(bs1.End, trace.EventResult, "a", "", map[string]string{"output_tokens": "500"})
	ev(bs1.End.Add(300*time.Millisecond), trace.EventRunEnd, "a", "exp", nil)
	ev(bs8.Start, trace.EventRunStart, "b", "exp", map[string]string{trace.AttrWorkloadGPUs: "0"})
	ev(bs8.Start.Add(time.Second), trace.EventPhase, "b", "warm", nil)
	ev(bs8.Start.Add(3*time.Second), trace.EventPhase, "b", "steady", nil)
	ev(bs8.End, trace.EventRunEnd, "b", "exp", nil)
	ev(bs32.Start, trace.EventRunStart, "c", "exp", nil)
	ev(bs32.Start.Add(2*time.Second), trace.EventPhase, "c", "decode", nil)
	p := filepath.Join(dir, "marked.parquet")
	require.NoError(t, trace.WriteFile(p, out))
	return p
}

// tiledRecording is the LLM recording tiled into runs on three GPUs (several row groups), the last run never
// ended, as one file and as the closed segments of another.
func tiledRecording(t *testing.T, dir string) (file, segmented string) {
	src, err := trace.ReadFile(testutil.TracePath("h200-llm"))
	require.NoError(t, err)
	tmp := filepath.Join(dir, "tiled-src.parquet")
	w, err := trace.Create(tmp, src.Env)
	require.NoError(t, err)
	_, err = trace.WriteTiled(w, src, 16, 3)
	require.NoError(t, err)
	require.NoError(t, w.Close())
	all, err := trace.ReadFile(tmp)
	require.NoError(t, err)
	last := all.Events[len(all.Events)-1]
	require.Equal(t, trace.EventRunEnd, last.Type)
	all.Events = all.Events[:len(all.Events)-1]
	file = filepath.Join(dir, "tiled.parquet")
	require.NoError(t, trace.WriteFile(file, all))
	// Segments: thirds of the recording by time, as a recorder's closed segments.
	first, end := all.Span()
	step := end.Sub(first) / 3
	for k := range 3 {
		a, b := first.Add(time.Duration(k)*step), first.Add(time.Duration(k+1)*step)
		if k == 2 {
			b = end.Add(time.Hour)
		}
		part := trace.New(all.Env)
		for g, s := range all.GPUs {
			win := s.Window(a, b.Add(-1))
			*part.Series(g) = *win
		}
		for _, e := range all.Events {
			if !e.Time.Before(a) && e.Time.Before(b) {
				part.Events = append(part.Events, e)
			}
		}
		require.NoError(t, os.MkdirAll(filepath.Join(dir, "rec"), 0o755))
		require.NoError(t, trace.WriteFile(filepath.Join(dir, "rec", fmt.Sprintf("%srec-%06d.parquet", recorder.SegmentPrefix, k)), part))
	}
	return file, filepath.Join(dir, "rec", "rec.parquet")
}

// The report of a recording accounts each run on its window: read whole or streamed in windows, every number —
// energies per GPU, phase and window, per-token figures, lags, warnings, uncertainty budgets, steady state, plot
// data — equals the whole trace's (1e-9 relative), on the real recordings as they are, the LLM recording with runs
// marked inside it (interrupted, observed GPU, a run at the recording's start), and a tiled recording of 16 runs on
// 3 GPUs as a file and as segments.
func TestStreamedReportEqualsWholeTrace(t *testing.T) {
	dir := t.TempDir()
	tiled, segmented := tiledRecording(t, dir)
	inputs := []string{testutil.TracePath("h200-llm"), testutil.TracePath("h200-shape"), testutil.TracePath("h100-gpuload"),
		markedLLM(t, dir), tiled, segmented}
	wantRuns := []int{1, 1, 1, 4, 16, 16}
	for k, path := range inputs {
		t.Run(filepath.Base(path), func(t *testing.T) {
			var whole *trace.Trace
			var err error
			if path == segmented {
				whole, err = recorder.ReadSegments(filepath.Dir(segmented), "rec")
			} else {
				whole, err = trace.ReadFile(path)
			}
			require.NoError(t, err)
			want := wholeRuns(whole, path)
			require.Len(t, want, wantRuns[k])
			mem, err := fromTraceFile(path, true, LoadOptions{Stream: StreamNever})
			require.NoError(t, err)
			streamed, err := fromTraceFile(path, true, LoadOptions{Stream: StreamAlways})
			require.NoError(t, err)
			for name, got := range map[string][]Run{"in memory": mem, "streamed": streamed} {
				var d differ
				d.cmp("runs", reflect.ValueOf(want), reflect.ValueOf(got))
				assert.Empty(t, d.diffs, "%s vs the whole trace", name)
				// Several energies per GPU, phase and budget term: a comparison of nothing cannot pass.
				assert.Greater(t, d.energies, 15*len(want), name)
			}
			for _, r := range streamed {
				for _, g := range r.Manifest.GPUs {
					assert.Equal(t, account.MethodHybrid, g.Method, "%s GPU %d", r.Manifest.RunID, g.Index)
				}
			}
		})
	}
}

// A recording directory whose segments were never merged is one input: its runs, streamed or read whole.
func TestRecordingDirectoryOfSegments(t *testing.T) {
	_, segmented := tiledRecording(t, t.TempDir())
	for _, mode := range []string{StreamAlways, StreamNever} {
		runs, probs := LoadWith([]string{filepath.Dir(segmented)}, LoadOptions{Stream: mode})
		require.Empty(t, probs, mode)
		require.Len(t, runs, 16, mode)
		assert.Equal(t, "run-0", runs[0].Manifest.RunID)
		assert.Equal(t, "interrupted", runs[15].Manifest.Status)
		assert.Equal(t, "rec.parquet", runs[3].Manifest.Files.Trace)
	}
}

// Identities of the processes in processRecording.
var (
	serverID = strings.Repeat("5e", 32) // the inference server's container, a process on each GPU
	sideID   = strings.Repeat("a7", 32) // a side container whose only listing comes 400 ms before run c starts
)

// processRecording is markedLLM with the processes of a GPU shared by several: on GPU 0 the inference server's
// process (a container) from a second into the recording to its end, a benchmark on the host that appears in the
// middle of run b and leaves a second after it, a side container's process listed once 400 ms before run c starts
// (and never again) that keeps the GPU busy for 4 s in it, and a process listed once at start-up with no
// utilization at all; on GPU 1 the server's second process (the same container) from a second into run a on. The
// driver's samples come every second, the polls every 500 ms; each process is busy in proportion to the GPU's
// power. Written as a recorder writes, in time order with a row group every 2 s: every run spans several.
func processRecording(t *testing.T, dir string) string {
	tr, err := trace.ReadFile(markedLLM(t, dir))
	require.NoError(t, err)
	first, last := tr.Span()
	run := map[string]*[2]time.Time{} // start, end
	for _, e := range tr.Events {
		if run[e.RunID] == nil {
			run[e.RunID] = &[2]time.Time{}
		}
		switch e.Type {
		case trace.EventRunStart:
			run[e.RunID][0] = e.Time
		case trace.EventRunEnd:
			run[e.RunID][1] = e.Time
		}
	}
	require.Len(t, run, 4)
	b, runC := run["b"], run["c"][0]
	require.False(t, b[0].IsZero() || b[1].IsZero() || runC.IsZero())
	busyAt := func(g int, at time.Time) float64 { // the GPU's power above 100 W, as a share of 500 W
		s := tr.GPUs[g].Window(at.Add(-time.Second), at)
		if len(s.Samples) == 0 {
			return 0
		}
		return min(1, max(0, (s.Samples[len(s.Samples)-1].PowerW-100)/500))
	}
	type proc struct {
		gpu      int
		pid      uint32
		id       trace.ProcessIdentity
		from, to time.Time // listed every 500 ms in [from, to]; from == to: once
		busy     [2]time.Time
		share    float64 // of the GPU's busy share
	}
	server := trace.ProcessIdentity{Command: "python3", Runtime: "docker", ContainerID: serverID, ContainerName: "vllm-server"}
	procs := []proc{
		{0, 4100, server, first.Add(time.Second), last, [2]time.Time{first.Add(time.Second), last}, 0.8},
		{0, 4200, trace.ProcessIdentity{Command: "bench"}, b[0].Add(2 * time.Second), b[1].Add(time.Second),
			[2]time.Time{b[0].Add(2 * time.Second), b[1]}, 0.2},
		{0, 4300, trace.ProcessIdentity{Command: "loader", Runtime: "docker", ContainerID: sideID, ContainerName: "side"},
			runC.Add(-400 * time.Millisecond), runC.Add(-400 * time.Millisecond), [2]time.Time{runC, runC.Add(4 * time.Second)}, 0.5},
		{0, 4400, trace.ProcessIdentity{Command: "probe"}, first.Add(500 * time.Millisecond), first.Add(500 * time.Millisecond), [2]time.Time{}, 0},
		{1, 4500, server, run["a"][0].Add(time.Second), last, [2]time.Time{run["a"][0].Add(time.Second), last}, 1},
	}
	for _, p := range procs {
		s := tr.GPUs[p.gpu]
		for at := p.from.Truncate(500 * time.Millisecond).Add(120 * time.Millisecond); !at.After(p.to); at = at.Add(500 * time.Millisecond) {
			if at.Before(p.from) {
				continue
			}
			s.Processes = append(s.Processes, trace.Process{Time: at, PID: p.pid, MemoryBytes: uint64(p.pid) << 20,
				GPUInstance: trace.NoInstance, ComputeInstance: trace.NoInstance, Identity: p.id})
		}
		if p.from.Equal(p.to) {
			s.Processes = append(s.Processes, trace.Process{Time: p.from, PID: p.pid, GPUInstance: trace.NoInstance,
				ComputeInstance: trace.NoInstance, Identity: p.id})
		}
		// Driver stamps at µs resolution, 370 ms into each second.
		for at := p.busy[0].Truncate(time.Second).Add(370 * time.Millisecond); !p.busy[0].IsZero() && !at.After(p.busy[1]); at = at.Add(time.Second) {
			if at.Before(p.busy[0]) {
				continue
			}
			if b := p.share * busyAt(p.gpu, at); b > 0 {
				s.ProcessSamples = append(s.ProcessSamples, trace.ProcessSample{Time: at, PID: p.pid, SM: b, Mem: b / 4})
			}
		}
	}
	for _, s := range tr.GPUs {
		s.Sort()
	}
	path := filepath.Join(dir, "processes.parquet")
	w, err := trace.Create(path, tr.Env)
	require.NoError(t, err)
	for a := first.Truncate(2 * time.Second); !a.After(last); a = a.Add(2 * time.Second) {
		part := trace.New(tr.Env)
		for g, s := range tr.GPUs {
			*part.Series(g) = *s.Window(a, a.Add(2*time.Second-1))
		}
		for _, e := range tr.Events {
			if !e.Time.Before(a) && e.Time.Before(a.Add(2*time.Second)) {
				part.Events = append(part.Events, e)
			}
		}
		require.NoError(t, w.WriteTrace(part))
		require.NoError(t, w.Flush())
	}
	require.NoError(t, w.Close())
	return path
}

// A recording of processes sharing GPUs, reported whole, on windows in memory and streamed: every number equal,
// the per-process and per-container energies included — processes that were there before a run started, ones
// that appear in it, one whose only listing comes before the run (its name and container still the run's), a
// container with a process on each GPU.
func TestStreamedReportProcesses(t *testing.T) {
	dir := t.TempDir()
	path := processRecording(t, dir)
	s, err := trace.OpenStream(path)
	require.NoError(t, err)
	groups := 0
	require.NoError(t, s.Scan(t.Context(), trace.RowEvents, func(trace.Part) error { groups++; return nil }))
	s.Close()
	require.Greater(t, groups, 30, "row groups of 2 s")
	whole, err := trace.ReadFile(path)
	require.NoError(t, err)
	want := wholeRuns(whole, path)
	require.Len(t, want, 4)

	// What the recording was built to hold, per run: the PIDs on each GPU and the containers.
	type split struct {
		pids       map[int][]uint32
		containers []string
	}
	expect := map[string]split{
		"first": {map[int][]uint32{0: {4100, 4400}}, []string{"vllm-server"}},
		"a":     {map[int][]uint32{0: {4100}, 1: {4500}}, []string{"vllm-server"}},
		"b":     {map[int][]uint32{0: {4100, 4200}, 1: {4500}}, []string{"vllm-server"}},
		"c":     {map[int][]uint32{0: {4100, 4300}, 1: {4500}}, []string{"vllm-server", "side"}},
	}
	for _, r := range want {
		m := r.Manifest
		e := expect[m.RunID]
		require.NotNil(t, m.Processes, m.RunID)
		got := map[int][]uint32{}
		for _, g := range m.Processes.GPUs {
			sum := float64(g.IdleJ + g.UnattributedJ)
			for _, p := range g.Processes {
				got[g.Index] = append(got[g.Index], p.PID)
				sum += float64(p.EnergyJ)
				if p.PID == 4300 {
					assert.Equal(t, "side", p.ContainerName, "named by its one listing before the run")
					assert.Positive(t, float64(p.EnergyJ))
				}
			}
			assert.InDelta(t, float64(g.EnergyJ), sum, 1e-5, "%s GPU %d: the shares add up", m.RunID, g.Index)
		}
		assert.Equal(t, e.pids, got, m.RunID)
		var names []string
		for _, c := range m.Processes.Containers {
			names = append(names, c.ContainerName)
		}
		assert.Equal(t, e.containers, names, m.RunID)
	}

	mem, err := fromTraceFile(path, true, LoadOptions{Stream: StreamNever})
	require.NoError(t, err)
	streamed, err := fromTraceFile(path, true, LoadOptions{Stream: StreamAlways})
	require.NoError(t, err)
	for name, got := range map[string][]Run{"in memory": mem, "streamed": streamed} {
		var d differ
		d.cmp("runs", reflect.ValueOf(want), reflect.ValueOf(got))
		assert.Empty(t, d.diffs, "%s vs the whole trace", name)
		assert.Greater(t, d.processEnergies, 20, name)
	}
}

// A streamed report keeps only the process rows the runs in flight read: before a run's window is complete the
// buffer holds at most the rows from its start, less the margin, to the row group (2 s) that completes it, a second
// past its end — never the recording's. Without the drops it would hold them all by the last run.
func TestStreamedReportDropsProcessRows(t *testing.T) {
	path := processRecording(t, t.TempDir())
	whole, err := trace.ReadFile(path)
	require.NoError(t, err)
	total, bound := 0, 0
	for _, s := range whole.GPUs {
		total += len(s.ProcessSamples) + len(s.Processes)
	}
	for _, sp := range Spans(whole, "processes") {
		n := 0
		from, to := sp.Start.Add(-time.Second), sp.End.Add(3*time.Second)
		for _, s := range whole.GPUs {
			for _, p := range s.ProcessSamples {
				if !p.Time.Before(from) && !p.Time.After(to) {
					n++
				}
			}
			for _, p := range s.Processes {
				if !p.Time.Before(from) && !p.Time.After(to) {
					n++
				}
			}
		}
		bound = max(bound, n)
	}
	a, err := streamAccounted(t.Context(), []string{path}, path, false, false)
	require.NoError(t, err)
	t.Logf("process rows: %d in the recording, at most %d buffered (bound %d); %d rows of every kind", total,
		a.peakProcessRows, bound, a.peakRows)
	require.Len(t, a.runs, 4)
	assert.NotNil(t, a.runs[3].Manifest.Processes)
	assert.Positive(t, a.peakProcessRows)
	assert.LessOrEqual(t, a.peakProcessRows, bound)
	assert.Less(t, bound, total*2/3, "the bound tells dropping from keeping")
	for g, b := range a.buf {
		assert.Empty(t, b.ProcessSamples, "GPU %d", g)
		assert.Empty(t, b.Processes, "GPU %d", g)
	}
}

// The automatic choice reads whole what fits the collector's soft limit (¾ of the memory limit) at 1.6 times the
// rows' own in-memory size, measured, and streams the rest; the size is the rows' by kind, from the row groups'
// null counts, and equals what a whole read holds.
func TestAutoStreamChoice(t *testing.T) {
	const gib = 1 << 30
	event := int64(unsafe.Sizeof(trace.Event{})) + 256
	process := int64(unsafe.Sizeof(trace.Process{})) + 64
	// The 10 M-sample benchmark file: samples 16 bytes, counter reads 24, telemetry 104, 5,600 events.
	llm := int64(10_346_000*16+2_069_200*24+2_069_200*104) + 5_600*event
	for _, c := range []struct {
		bytes, limit int64
		stream       bool
	}{
		{llm, 0, false}, // 432 MB × 1.6 = 691 MB within 805 MB
		{llm, gib, false},
		{llm * 115 / 100, gib, false},
		{llm * 117 / 100, gib, true},
		{llm, 768 << 20, true},
		{500 << 20, gib, true},  // 800 MiB live over the 768 MiB soft limit
		{480 << 20, gib, false}, // 768 MiB: exactly the soft limit
		{481 << 20, gib, true},
	} {
		assert.Equal(t, c.stream, streamBytes(c.bytes, c.limit), "%d bytes of rows within %d", c.bytes, c.limit)
	}
	for _, name := range []string{"h200-llm", "h200-share", "h100-gpuload", "h200-precision-full"} {
		path := testutil.TracePath(name)
		whole, err := trace.ReadFile(path)
		require.NoError(t, err)
		want := int64(len(whole.Events)) * event
		for _, g := range whole.GPUs {
			want += int64(len(g.Samples))*16 + int64(len(g.Counters))*24 + int64(len(g.Telemetry))*104 +
				int64(len(g.ProcessSamples)+len(g.Processes))*process
		}
		s, err := trace.OpenStream(path)
		require.NoError(t, err)
		assert.Equal(t, want, s.Footprint(), "%s: the rows' size by kind", name)
		require.NoError(t, s.Close())
	}
	path := testutil.TracePath("h200-llm")
	s, err := trace.OpenStream(path)
	require.NoError(t, err)
	fp := s.Footprint()
	require.NoError(t, s.Close())
	streamed := func(o LoadOptions) bool {
		s, streamed := o.open([]string{path})
		require.NotNil(t, s)
		require.NoError(t, s.Close())
		return streamed
	}
	fits := fp / 5 * 8 / 3 * 4 // the smallest limit (to rounding) that reads it whole
	for fp/5*8 > fits/4*3 {
		fits += 4
	}
	assert.False(t, streamed(LoadOptions{Stream: StreamAuto, MemoryLimit: fits}))
	assert.True(t, streamed(LoadOptions{Stream: StreamAuto, MemoryLimit: fits - 4}))
	assert.False(t, streamed(LoadOptions{Stream: StreamAuto}), "the default reads it whole")
	assert.True(t, streamed(LoadOptions{Stream: StreamAlways}))
	assert.False(t, streamed(LoadOptions{Stream: StreamNever, MemoryLimit: 1}))
}
