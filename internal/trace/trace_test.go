package trace_test

import (
	"errors"
	"maps"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lem-energy/lem/internal/meta"
	"github.com/lem-energy/lem/internal/testutil"
	"github.com/lem-energy/lem/internal/trace"
)

func sampleTrace() *trace.Trace {
	t0 := time.Unix(1795735590, 123456789).UTC()
	on := true
	tr := trace.New(meta.Environment{Source: meta.Source{Kind: "nvml"}, Driver: meta.Driver{DriverVersion: "580.159.04"},
		Devices: []meta.Device{{Index: 0, UUID: "GPU-a", Name: "NVIDIA H200", MIGMode: &on}, {Index: 1, UUID: "GPU-b"}}})
	s := tr.Series(0)
	for i := 0; i < 5; i++ {
		s.Samples = append(s.Samples, trace.PowerSample{Time: trace.StampOf(t0.Add(time.Duration(i) * 20 * time.Millisecond)), PowerW: 100.5 + float64(i)})
	}
	s.Counters = []trace.CounterReading{{Time: trace.StampOf(t0), EnergyMJ: 1 << 40, ReadDuration: 3 * time.Millisecond}}
	tm := trace.NewTelemetry(trace.StampOf(t0))
	tm.TemperatureC, tm.ClockReasons, tm.ClockReasonsValid = 33, 1, true
	s.Telemetry = []trace.Telemetry{tm}
	tr.Series(1).Samples = []trace.PowerSample{{Time: trace.StampOf(t0), PowerW: 70}}
	tr.Events = []trace.Event{
		{Time: t0, GPU: trace.NoGPU, Type: trace.EventPhase, RunID: "r1", Name: "prefill"},
		{Time: t0.Add(time.Second), GPU: trace.NoGPU, Type: trace.EventResult, RunID: "r1", Attrs: map[string]string{"output_tokens": "128"}},
	}
	tr.Extra["lem.run_id"] = "r1"
	return tr
}

func TestRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "t.parquet")
	want := sampleTrace()
	require.NoError(t, trace.WriteFile(path, want))
	got, err := trace.ReadFile(path)
	require.NoError(t, err)

	assert.Equal(t, want.Env, got.Env)
	assert.Equal(t, []int{0, 1}, got.GPUIndices())
	ws, gs := want.GPUs[0], got.GPUs[0]
	require.Len(t, gs.Samples, 5)
	for i := range ws.Samples {
		assert.True(t, ws.Samples[i].Time.Equal(gs.Samples[i].Time), "sample %d time", i)
		assert.Equal(t, ws.Samples[i].PowerW, gs.Samples[i].PowerW)
	}
	assert.Equal(t, uint64(1<<40), gs.Counters[0].EnergyMJ)
	assert.Equal(t, 3*time.Millisecond, gs.Counters[0].ReadDuration)
	tm := gs.Telemetry[0]
	assert.Equal(t, 33.0, tm.TemperatureC)
	assert.True(t, math.IsNaN(tm.SMClockHz), "unsupported field stays NaN")
	assert.True(t, tm.ClockReasonsValid)
	require.Len(t, got.Events, 2)
	assert.Equal(t, "prefill", got.Events[0].Name)
	assert.Equal(t, "128", got.Events[1].Attrs["output_tokens"])
	assert.Equal(t, "r1", got.Extra["lem.run_id"])
	st, err := os.Stat(path)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o644), st.Mode().Perm())
}

func TestWriterIsAtomic(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "t.parquet")
	w, err := trace.Create(path, meta.Environment{})
	require.NoError(t, err)
	require.NoError(t, w.WriteSamples(0, []trace.PowerSample{{Time: trace.StampOf(time.Now()), PowerW: 1}}))
	require.NoError(t, w.Flush())
	_, err = os.Stat(path)
	assert.True(t, errors.Is(err, os.ErrNotExist), "no file under the final name before Close")
	w.Abort()
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.Empty(t, ents, "Abort leaves nothing behind")
}

func TestReadRejectsBadFiles(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.parquet")
	require.NoError(t, trace.WriteFile(good, sampleTrace()))
	b, err := os.ReadFile(good)
	require.NoError(t, err)

	cases := map[string]struct {
		data []byte
		want string
	}{
		"truncated": {b[:len(b)/2], "footer missing"},
		"foreign":   {[]byte("time,power\n1,2\n3,4\n"), "no Parquet header"},
		"empty":     {nil, "too short"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			p := filepath.Join(dir, name+".parquet")
			require.NoError(t, os.WriteFile(p, tc.data, 0o644))
			_, err := trace.ReadFile(p)
			require.Error(t, err)
			assert.ErrorIs(t, err, trace.ErrNotTrace)
			assert.Contains(t, err.Error(), tc.want)
			assert.Contains(t, err.Error(), p, "the error names the file")
		})
	}
}

func TestPhases(t *testing.T) {
	t0 := time.Unix(100, 0)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	evs := []trace.Event{
		{Time: at(0), Type: trace.EventPhase, RunID: "a", Name: "load"},
		{Time: at(1), Type: trace.EventPhase, RunID: "b", Name: "other"},
		{Time: at(2), Type: trace.EventPhase, RunID: "a", Name: "prefill"},
		{Time: at(3), Type: trace.EventResult, RunID: "a"},
		{Time: at(4), Type: trace.EventRunEnd, RunID: "a"},
	}
	got := trace.Phases(evs, at(10))
	want := []trace.Phase{
		{RunID: "a", Name: "load", Start: at(0), End: at(2)},
		{RunID: "b", Name: "other", Start: at(1), End: at(10)},
		{RunID: "a", Name: "prefill", Start: at(2), End: at(4)},
	}
	assert.Equal(t, want, got)
}

func TestParseProbeMarks(t *testing.T) {
	evs, err := trace.ParseProbeMarks("MARK idle 1000\nMARK bs8-start 2000\nMARK bs8-end 3000 tokens=1024 prompt_tokens=2048\nMARK end 4000 \n")
	require.NoError(t, err)
	var got []string
	for _, e := range evs {
		got = append(got, e.Type+":"+e.Name)
	}
	assert.Equal(t, []string{"phase:idle", "phase:bs8", "phase_end:bs8", "result:bs8", "phase_end:"}, got)
	assert.Equal(t, "1024", evs[3].Attrs["tokens"])

	for _, bad := range []string{"MARK x", "MARK x notanumber", "MARK x 1 novalue", "HELLO x 1"} {
		_, err := trace.ParseProbeMarks(bad)
		assert.Error(t, err, bad)
	}
}

func TestImportedRecordingsMatchCSV(t *testing.T) {
	// The committed testdata are conversions of the real H200 CSV recordings: row counts must match them.
	for name, want := range map[string][3]int{"h200-shape": {2067, 399, 6}, "h200-llm": {3814, 749, 12}} {
		t.Run(name, func(t *testing.T) {
			committed, err := trace.ReadFile(testutil.TracePath(name))
			require.NoError(t, err)
			s := committed.GPUs[0]
			assert.Equal(t, want, [3]int{len(s.Samples), len(s.Counters), len(committed.Events)})
			assert.Equal(t, "NVIDIA H200", committed.Env.Devices[0].Name)
			assert.True(t, strings.HasPrefix(committed.Env.Source.Kind, "probe"))

			t.Run("reconverted", func(t *testing.T) {
				src := sourceRecording(name)
				if src == "" {
					// Source data, not a service: make test does not install it, so this stays a skip.
					t.Skipf("SKIPPED: the source recording %s is in no shared/traces beside this checkout or above it", name)
				}
				tr, err := trace.ImportProbeDir(src, 0, meta.Environment{})
				require.NoError(t, err)
				g := tr.GPUs[0]
				assert.Equal(t, -1, firstDiff(s.Samples, g.Samples, func(a, b trace.PowerSample) bool {
					return a.Time.Equal(b.Time) && a.PowerW == b.PowerW
				}), "first sample that differs")
				assert.Equal(t, -1, firstDiff(s.Counters, g.Counters, func(a, b trace.CounterReading) bool {
					return a.Time.Equal(b.Time) && a.EnergyMJ == b.EnergyMJ && a.ReadDuration == b.ReadDuration
				}), "first counter reading that differs")
				assert.Equal(t, -1, firstDiff(committed.Events, tr.Events, func(a, b trace.Event) bool {
					return a.Time.Equal(b.Time) && a.Type == b.Type && a.Name == b.Name && maps.Equal(a.Attrs, b.Attrs)
				}), "first event that differs")
			})
		})
	}
}

// firstDiff is the index of the first element where a and b differ (or where the shorter ends), -1 if none.
func firstDiff[T any](a, b []T, eq func(x, y T) bool) int {
	for i := range min(len(a), len(b)) {
		if !eq(a[i], b[i]) {
			return i
		}
	}
	if len(a) != len(b) {
		return min(len(a), len(b))
	}
	return -1
}

// sourceRecording finds the CSV recording a committed trace was converted from: shared/traces/NAME beside the
// checkout or beside a directory above it (worktrees sit a level deeper). "" if there is none.
func sourceRecording(name string) string {
	for dir := filepath.Dir(testutil.Root()); ; dir = filepath.Dir(dir) {
		p := filepath.Join(dir, "shared", "traces", name)
		if st, err := os.Stat(p); err == nil && st.IsDir() {
			return p
		}
		if dir == filepath.Dir(dir) {
			return ""
		}
	}
}
