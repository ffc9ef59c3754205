package campaign_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lem-energy/lem/internal/testutil"
	"github.com/lem-energy/lem/runner/campaign"
)

// What lem-run campaign prints before and after an execution, and for a dry run, on a campaign whose numbers are
// known: 3 configurations, one with an expected duration of 20 s, the others at the assumed minute, 10 s
// baselines before each run.
func TestDryRunStartAndSummaryOutput(t *testing.T) {
	cat := filepath.Join(testutil.Root(), "internal", "catalogue", "committed", "transformers-5.17.json")
	raw, err := os.ReadFile(cat)
	require.NoError(t, err)
	var committed struct {
		Parameters []json.RawMessage `json:"parameters"`
	}
	require.NoError(t, json.Unmarshal(raw, &committed))
	require.NotEmpty(t, committed.Parameters)

	f, err := campaign.Load(write(t, `name: out
baseline: {duration: 10s}
experiments:
  - name: srv
    command: [python3, bench.py]
    backend: vllm
    python: /nonexistent/python3
    backend_params: {max_num_seqs: 8}
  - name: hf-{n}
    command: [python3, generate.py, "{n}"]
    backend: transformers
    catalogue: `+cat+`
    backend_params: {max_new_tokens: "{n}"}
    vary: {n: [8, 16]}
    expected_duration: 20s
`))
	require.NoError(t, err)
	dir := t.TempDir()
	p, err := campaign.PrepareDryRun(context.Background(), f, dir, slog.New(slog.NewTextHandler(&bytes.Buffer{}, nil)))
	require.NoError(t, err)

	var out, warnings bytes.Buffer
	p.WriteDryRun(&out, &warnings)
	w := strings.Split(strings.TrimSuffix(warnings.String(), "\n"), "\n")
	require.Len(t, w, 1, warnings.String())
	assert.True(t, strings.HasPrefix(w[0], "warning: experiment srv: backend vllm is not available here"), w[0])
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	// The header, 3 planned runs, the estimate (70 s + 2 × 30 s) and one catalogue line: srv has none.
	require.Len(t, lines, 6, out.String())
	assert.Equal(t, "campaign out: 3 configurations × 1 cycles = 3 runs (interleaved), 0 warm-up run(s) per configuration", lines[0])
	assert.Equal(t, "estimated duration: 2m10s (assuming 1m0s per run where expected_duration is not given)", lines[4])
	assert.Equal(t, fmt.Sprintf("experiment hf-{n}: backend transformers 5.17.0 (%d parameters; 1 set explicitly)",
		len(committed.Parameters)), lines[5])

	var start bytes.Buffer
	p.WriteStart(&start, "local")
	assert.Equal(t, "campaign out: 3 configurations × 1 cycles = 3 runs (interleaved), about 2m10s; directory "+dir+
		"; executor local\n", start.String())

	cases := []struct {
		status  string
		has     []string
		hasNone string
	}{
		{"done", []string{"\ncampaign out: done — " + dir + "/campaign.json\n\n| experiment | runs |"}, "out-srv-c1"},
		{campaign.StatusSubmitted, []string{"\ncampaign out: submitted — " + dir + "/campaign.json\n\n#", "out-srv-c1"}, "| experiment |"},
	}
	for _, c := range cases {
		t.Run(c.status, func(t *testing.T) {
			var sum bytes.Buffer
			p.WriteSummary(&sum, &campaign.State{Campaign: "out", Status: c.status,
				Runs: []campaign.RunState{{Position: 1, Cycle: 1, Experiment: "srv", RunID: "out-srv-c1", Status: campaign.StatusQueued}}})
			for _, h := range c.has {
				assert.Contains(t, sum.String(), h)
			}
			assert.NotContains(t, sum.String(), c.hasNone)
		})
	}
}
