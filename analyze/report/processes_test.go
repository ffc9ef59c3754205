package report

import (
	"bytes"
	"encoding/csv"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lem-energy/lem/internal/testutil"
	"github.com/lem-energy/lem/internal/trace"
)

// A recording of two processes sharing a GPU, reported: the Markdown section and the CSV table list each process's
// energy, idle and unattributed, adding up to the GPU's energy.
func TestReportProcesses(t *testing.T) {
	t0 := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	syn := testutil.Synth{Start: t0, Duration: 30 * time.Second, Levels: []testutil.Level{{At: 0, W: 80},
		{At: 10 * time.Second, W: 500}, {At: 20 * time.Second, W: 80}}}
	tr := syn.Trace()
	tr.Env.Devices[0].ProcessUtilization = true
	s := tr.GPUs[0]
	for sec := 11; sec <= 20; sec++ {
		s.ProcessSamples = append(s.ProcessSamples, trace.ProcessSample{Time: at(float64(sec)), PID: 7, SM: 0.75},
			trace.ProcessSample{Time: at(float64(sec)), PID: 8, SM: 0.25})
	}
	for ms := 10000; ms <= 19000; ms += 500 {
		s.Processes = append(s.Processes,
			trace.Process{Time: at(float64(ms) / 1000), PID: 7, GPUInstance: -1, ComputeInstance: -1,
				Identity: trace.ProcessIdentity{Command: "python3", ContainerID: strings.Repeat("ab", 32), ContainerName: "vllm",
					PodNamespace: "llm", PodName: "vllm-0"}},
			trace.Process{Time: at(float64(ms) / 1000), PID: 8, GPUInstance: -1, ComputeInstance: -1,
				Identity: trace.ProcessIdentity{Command: "bench"}})
	}
	m, _ := traceManifest(tr, "shared.parquet", Span{ID: "whole", Start: at(1), End: at(29)}, nil)
	require.NotNil(t, m.Processes)
	runs := []Run{{Dir: "shared.parquet", Manifest: m, Uncertainty: budget(m)}}

	var md bytes.Buffer
	require.NoError(t, Markdown(&md, runs, nil, nil))
	out := md.String()
	assert.Contains(t, out, "## Processes")
	assert.Contains(t, out, "| whole | 0 | 7 | python3 | vllm | llm/vllm-0 | 7.5 |")
	assert.Contains(t, out, "| whole | 0 | 8 | bench |  |  | 2.5 |")
	assert.Contains(t, out, "| whole | 0 | idle (80.0 W, no_process) |")

	var b bytes.Buffer
	require.NoError(t, CSV(&b, TableProcesses, runs, nil))
	rows, err := csv.NewReader(&b).ReadAll()
	require.NoError(t, err)
	require.Len(t, rows, 1+4, "header, two processes, idle, unattributed")
	assert.Equal(t, []string{"whole", "", "0", "0", "7", "process", "python3"}, rows[1][:7])
	assert.Equal(t, "idle", rows[3][5])
	assert.Equal(t, "no_process", rows[3][15])
	var sum, gpu float64
	for _, r := range rows[1:] {
		sum += parse(t, r[12])
		gpu = parse(t, r[13])
	}
	assert.InDelta(t, gpu, sum, 1e-5, "the rows add up to the GPU's energy")
	// 10 s at 500 W, 80 W idle: 4,200 J above idle, split 3:1 (the 20 ms ramps aside).
	assert.InEpsilon(t, 0.75*4200, parse(t, rows[1][12]), 0.01)
	assert.InEpsilon(t, 0.25*4200, parse(t, rows[2][12]), 0.01)
}

func parse(t *testing.T, s string) float64 {
	t.Helper()
	v, err := strconv.ParseFloat(s, 64)
	require.NoError(t, err, s)
	return v
}
