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
		m := TraceManifest(t, path, sp, meters)
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
	out.GPUs[0].Counters = (&trace.Series{Counters: s.Counters}).Window(s.Counters[0].Time, endS.Add(-time.Second)).Counters
	phase := map[string]trace.Phase{}
	for _, p := range trace.Phases(src.Events, s.Samples[len(s.Samples)-1].Time) {
		phase[p.Name] = p
	}
	half := &trace.Series{Telemetry: s.Telemetry}
	for _, x := range s.Samples {
		half.Samples = append(half.Samples, trace.PowerSample{Time: x.Time, PowerW: x.PowerW / 2})
	}
	for _, c := range s.Counters {
		if c.Time.Before(phase["bs32"].Start.Add(5 * time.Second)) {
			half.Counters = append(half.Counters, trace.CounterReading{Time: c.Time, EnergyMJ: c.EnergyMJ / 2})
		}
	}
	*out.Series(1) = *half
	ev := func(at time.Time, typ, run, name string, attrs map[string]string) {
		out.Events = append(out.Events, trace.Event{Time: at, GPU: trace.NoGPU, Type: typ, RunID: run, Name: name, Attrs: attrs})
	}
	bs1, bs8, bs32 := phase["bs1"], phase["bs8"], phase["bs32"]
	ev(s.Samples[0].Time.Add(10*time.Millisecond), trace.EventRunStart, "first", "exp", nil)
	ev(s.Samples[0].Time.Add(7*time.Second), trace.EventRunEnd, "first", "exp", nil)
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
