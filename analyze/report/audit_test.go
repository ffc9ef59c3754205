package report_test

import (
	"bytes"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lem-energy/lem/analyze/report"
	"github.com/lem-energy/lem/internal/catalogue"
	"github.com/lem-energy/lem/internal/manifest"
	"github.com/lem-energy/lem/internal/testutil"
)

// TestAuditOnTransformersCatalogue audits runs whose effective parameters come from the transformers 5.17
// catalogue captured on an H200 host.
func TestAuditOnTransformersCatalogue(t *testing.T) {
	cat, err := catalogue.Load(filepath.Join(testutil.Root(), "internal", "catalogue", "committed", "transformers-5.17.json"))
	require.NoError(t, err)
	var runs []report.Run
	for i, tokens := range []int{128, 256} {
		inf, err := cat.Effective(map[string]any{"max_new_tokens": tokens, "do_sample": false, "use_cache": true})
		require.NoError(t, err)
		runs = append(runs, report.Run{Dir: "run" + string(rune('a'+i)), Manifest: &manifest.Manifest{RunID: "r" + string(rune('a'+i)),
			Experiment: "hf", Inference: inf}})
	}
	runs = append(runs, report.Run{Dir: "plain", Manifest: &manifest.Manifest{RunID: "p", Experiment: "plain"}})
	exps, probs := report.Audit(runs)
	require.Len(t, exps, 1)
	require.Len(t, probs, 1)
	assert.Contains(t, probs[0].Err, "no backend parameters recorded")
	a := exps[0]
	assert.Equal(t, "5.17.0", a.Version)
	assert.Equal(t, 2, a.Runs)
	assert.Equal(t, len(cat.Parameters), len(a.Params))
	assert.Equal(t, 3, a.Explicit)
	assert.Equal(t, len(cat.Parameters)-3, a.Defaulted)
	assert.ElementsMatch(t, []string{"max_new_tokens", "do_sample", "use_cache"}, a.EnergyExplicit)
	assert.Contains(t, a.EnergyDefaulted, "num_beams")
	assert.Contains(t, a.EnergyDefaulted, "cache_implementation")
	for _, p := range a.Params {
		if p.Name == "max_new_tokens" {
			assert.Equal(t, []string{"128", "256"}, p.Values, "distinct values across the runs")
		}
		if p.Name == "num_beams" {
			assert.Equal(t, []string{"1"}, p.Values)
		}
	}
	var md bytes.Buffer
	report.AuditMarkdown(&md, exps, probs, false)
	assert.Contains(t, md.String(), "| max_new_tokens | generation_config | `128`, `256` | **explicit** | ★ |")
	assert.Contains(t, md.String(), "| num_beams | generation_config | `1` | default | ★ |")
	assert.NotContains(t, md.String(), "| output_scores |", "defaulted parameters that are not energy-relevant are left out")
}
