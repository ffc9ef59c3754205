package manifest

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func valid() *Manifest {
	t0 := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	return &Manifest{SchemaVersion: SchemaVersion, RunID: "bs8-20261126T120000Z-a1b2", Experiment: "bs8", Status: StatusOK,
		Backend: "process", Command: []string{"python3", "bench.py"},
		Times: Times{BaselineStart: t0, BaselineEnd: t0.Add(30 * time.Second), Start: t0.Add(31 * time.Second),
			End: t0.Add(91 * time.Second), DurationS: 60},
		GPUs: []GPU{{Index: 0, Role: RoleWorkload, Energy: Energy{HybridJ: 30000}}, {Index: 3, Role: RoleObserved}},
		Phases: []Phase{{Name: "decode", Start: t0.Add(40 * time.Second), End: t0.Add(90 * time.Second), DurationS: 50,
			GPUs: []PhaseGPU{{Index: 0, HybridJ: 25000}}}},
		Results: map[string]string{"output_tokens": "1024"}}
}

func TestReadWriteRoundTrip(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, Write(dir, valid()))
	m, err := Read(dir)
	require.NoError(t, err)
	assert.Equal(t, "bs8-20261126T120000Z-a1b2", m.RunID)
	assert.Equal(t, 3, m.GPUs[1].Index)
	assert.Equal(t, Num(25000), m.Phases[0].GPUs[0].HybridJ)
	assert.True(t, m.Times.End.Equal(valid().Times.End))
}

func TestParseRefusesWhatReadersCannotUse(t *testing.T) {
	cases := []struct {
		name string
		edit func(*Manifest)
		want string
	}{
		{"no run id", func(m *Manifest) { m.RunID = "" }, "run_id: missing"},
		{"run id with a path", func(m *Manifest) { m.RunID = "../../etc" }, `run_id: "../../etc" is not usable as a directory name`},
		{"run id dot-dot", func(m *Manifest) { m.RunID = ".." }, `run_id: ".." is not usable`},
		{"run id with a newline", func(m *Manifest) { m.RunID = "a\nb" }, `run_id: "a\nb" is not usable`},
		{"unknown status", func(m *Manifest) { m.Status = "great" }, `status: "great", want one of ok, failed, interrupted, timeout, error`},
		{"negative cycle", func(m *Manifest) { m.Cycle = -1 }, "cycle -1, position 0: negative"},
		{"reversed times", func(m *Manifest) { m.Times.End = m.Times.Start.Add(-time.Second) },
			"times: ends (2026-11-26T12:00:30Z) before it starts (2026-11-26T12:00:31Z)"},
		{"reversed baseline", func(m *Manifest) { m.Times.BaselineStart = m.Times.BaselineEnd.Add(time.Second) }, "times.baseline: ends"},
		{"negative duration", func(m *Manifest) { m.Times.DurationS = -3 }, "times.duration_s: -3 is negative"},
		{"gpu index", func(m *Manifest) { m.GPUs[1].Index = 2147483647 }, "gpus[1].index: 2147483647 outside 0..1023"},
		{"negative gpu", func(m *Manifest) { m.GPUs[0].Index = -1 }, "gpus[0].index: -1 outside 0..1023"},
		{"gpu twice", func(m *Manifest) { m.GPUs[1].Index = 0 }, "gpus[1].index: GPU 0 listed twice"},
		{"role", func(m *Manifest) { m.GPUs[0].Role = "spare" }, `gpus[0].role: "spare", want workload or observed`},
		{"reversed phase", func(m *Manifest) { m.Phases[0].End = m.Phases[0].Start.Add(-time.Nanosecond) }, "phases[0]: ends"},
		{"phase gpu", func(m *Manifest) { m.Phases[0].GPUs[0].Index = 4096 }, "phases[0].gpus[0].index: 4096 outside 0..1023"},
		{"version", func(m *Manifest) { m.SchemaVersion = "9" }, `schema version "9", this lem reads "2" and "1"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := valid()
			c.edit(m)
			b, err := json.Marshal(m)
			require.NoError(t, err)
			_, err = Parse("runs/x/manifest.json", b)
			require.Error(t, err)
			assert.Equal(t, 1, strings.Count(err.Error(), "\n")+1, "one line")
			assert.Contains(t, err.Error(), "manifest runs/x/manifest.json: "+c.want)
		})
	}
	_, err := Parse("m.json", []byte(`{"schema_version":"1","run_id":"x","status":"ok","times":{"duration_s":1e400}}`))
	assert.ErrorContains(t, err, "manifest m.json: json: cannot unmarshal number 1e400")
}

func TestReadRefusesHugeFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), FileName)
	f, err := os.Create(p)
	require.NoError(t, err)
	require.NoError(t, f.Truncate(MaxSize+1)) // sparse: nothing written
	require.NoError(t, f.Close())
	_, err = Read(p)
	assert.EqualError(t, err, "manifest "+p+": larger than 67108864 bytes")
}

// FuzzManifestParse feeds manifest.json bytes (lem-analyze report, campaign resume) to the reader; what it accepts
// encodes and reads back to the same manifest.
func FuzzManifestParse(f *testing.F) {
	b, err := json.Marshal(valid())
	require.NoError(f, err)
	f.Add(b)
	f.Add([]byte(`{"schema_version":"1","run_id":"r","status":"ok","gpus":[{"index":1023}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Parse("fuzz.json", b)
		if err != nil {
			return
		}
		once, err := json.Marshal(m)
		require.NoError(t, err)
		m2, err := Parse("again.json", once)
		require.NoError(t, err, "what was accepted reads back")
		twice, err := json.Marshal(m2)
		require.NoError(t, err)
		require.True(t, bytes.Equal(once, twice), "encoding is stable")
	})
}

// A version-1 manifest (each phase occurrence listed) is read as version 2: one entry per phase name, summed.
func TestReadsVersion1(t *testing.T) {
	b := []byte(`{"schema_version":"1","run_id":"r","status":"ok","times":{"start":"2026-01-01T00:00:00Z","end":"2026-01-01T00:00:10Z","duration_s":10},
"energy":{"counter_j":100,"hybrid_j":101,"sampled_j":99,"adjusted_j":20},
"phases":[{"name":"prefill","start":"2026-01-01T00:00:00Z","end":"2026-01-01T00:00:01Z","duration_s":1,"gpus":[{"index":0,"hybrid_j":10,"adjusted_j":2}],"energy":{"hybrid_j":10,"adjusted_j":2}},
{"name":"decode","start":"2026-01-01T00:00:01Z","end":"2026-01-01T00:00:05Z","duration_s":4,"gpus":[{"index":0,"hybrid_j":40,"adjusted_j":8}],"energy":{"hybrid_j":40,"adjusted_j":8}},
{"name":"prefill","start":"2026-01-01T00:00:05Z","end":"2026-01-01T00:00:06Z","duration_s":1,"gpus":[{"index":0,"hybrid_j":11,"adjusted_j":3}],"energy":{"hybrid_j":11,"adjusted_j":3}}]}`)
	m, err := Parse("v1.json", b)
	require.NoError(t, err)
	assert.Equal(t, SchemaVersion, m.SchemaVersion)
	require.Len(t, m.Phases, 2)
	assert.Equal(t, "prefill", m.Phases[0].Name)
	assert.Equal(t, 2, m.Phases[0].Count)
	assert.Equal(t, 2.0, m.Phases[0].DurationS)
	assert.Equal(t, Num(21), m.Phases[0].Energy.HybridJ)
	assert.Equal(t, Num(5), m.Phases[0].GPUs[0].AdjustedJ)
	assert.True(t, m.Phases[0].End.Equal(time.Date(2026, 1, 1, 0, 0, 6, 0, time.UTC)), "the last occurrence's end")
}

// A manifest written before a schema-2 field existed reads that field as null, never as 0.
func TestFieldsAddedLaterReadAsNull(t *testing.T) {
	var m Manifest
	require.NoError(t, json.Unmarshal([]byte(`{"schema_version": "2", "gpus": [{"index": 0, "energy": {"hybrid_j": 10,
		"adjusted_j": 4}, "counter_lag": {"ms": 85, "resolved": true, "contrast": 36, "intervals": 390}}],
		"energy": {"hybrid_j": 10}, "phases": [{"name": "p", "gpus": [{"index": 0, "hybrid_j": 3}]}]}`), &m))
	g := m.GPUs[0]
	require.NotNil(t, g.Lag)
	assert.Equal(t, 85.0, g.Lag.MS)
	assert.False(t, g.Lag.UMS.Valid(), "counter_lag.u_ms")
	assert.Empty(t, g.Lag.Source, "counter_lag.source: not said")
	assert.Nil(t, g.Aliasing)
	assert.False(t, m.Phases[0].Short)
	assert.False(t, g.IdleW.Valid(), "idle_w")
	assert.False(t, g.Energy.AdjustedActiveJ.Valid(), "adjusted_active_j")
	assert.Equal(t, Num(4), g.Energy.AdjustedJ)
	assert.False(t, m.Energy.AdjustedJ.Valid())
	pg := m.Phases[0].GPUs[0]
	assert.Equal(t, Num(3), pg.HybridJ)
	for name, v := range map[string]Num{"adjusted_active_j": pg.AdjustedActiveJ, "sm_clock_hz": pg.SMClockHz, "pstate": pg.PState} {
		assert.False(t, v.Valid(), name)
	}
}
