package dashboards_test

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lem-energy/lem/dashboards"
)

func TestCommittedJSONIsGenerated(t *testing.T) {
	for name, d := range dashboards.All() {
		want, err := dashboards.Render(d)
		require.NoError(t, err)
		got, err := os.ReadFile(name)
		require.NoError(t, err, "run: go run ./dashboards/gen")
		assert.Equal(t, string(want), string(got), "%s is stale: run go run ./dashboards/gen", name)
	}
}

func TestStructure(t *testing.T) {
	for name, d := range dashboards.All() {
		ids := map[int]bool{}
		for _, p := range d.Panels {
			assert.False(t, ids[p.ID], "%s: duplicate panel id %d", name, p.ID)
			ids[p.ID] = true
			assert.Equal(t, "${datasource}", p.Datasource.UID, "%s/%s: panel datasource", name, p.Title)
			assert.NotEmpty(t, p.FieldConfig.Defaults.Unit, "%s/%s: unit", name, p.Title)
			assert.NotEmpty(t, p.Targets, "%s/%s: no query", name, p.Title)
			for _, tg := range p.Targets {
				assert.Equal(t, "${datasource}", tg.Datasource.UID, "%s/%s: target datasource", name, p.Title)
			}
			assert.LessOrEqual(t, p.GridPos.X+p.GridPos.W, 24, "%s/%s: off the grid", name, p.Title)
		}
		for _, a := range d.Annotations.List {
			assert.Equal(t, "${datasource}", a.Datasource.UID)
		}
		assert.Equal(t, "datasource", d.Templating.List[0].Type, "%s: datasource variable first", name)
		job := variable(t, d, "job")
		assert.False(t, job.Multi || job.IncludeAll, "%s: one job at a time, or scraped and streamed series add up", name)
	}
}

var (
	lemSelector = regexp.MustCompile(`\blem_[a-z_]+(\{[^}]*\})?`)
	fixedWindow = regexp.MustCompile(`\b(rate|increase|delta)\([^()]*\[\d+[smhd]\]`)
)

// Every series a dashboard reads is matched to the chosen job (scraped and streamed series share their instance),
// and no rate is taken over a fixed window (at 60 s scrapes a window under two scrapes holds no rate at all;
// irate and idelta read the last two readings, however far back within their window).
func TestEveryQueryMatchesOneJob(t *testing.T) {
	for name, d := range dashboards.All() {
		for _, q := range queries(d) {
			for _, m := range lemSelector.FindAllStringSubmatch(q, -1) {
				if strings.HasPrefix(q, "label_values(lem_gpu_info,") {
					continue // the job variable's own query
				}
				assert.Contains(t, m[1], `job="$job"`, "%s: %s in %s", name, m[0], q)
			}
			assert.NotRegexp(t, fixedWindow, q, "%s: a rate over a fixed window", name)
		}
	}
}

func variable(t *testing.T, d dashboards.Dashboard, name string) dashboards.Variable {
	t.Helper()
	for _, v := range d.Templating.List {
		if v.Name == name {
			return v
		}
	}
	require.FailNow(t, "no variable", "%s in %s", name, d.UID)
	return dashboards.Variable{}
}

// queries lists every query of a dashboard: panels, annotations, variables.
func queries(d dashboards.Dashboard) []string {
	var out []string
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			out = append(out, tg.Expr)
		}
	}
	for _, a := range d.Annotations.List {
		out = append(out, a.Expr)
	}
	for _, v := range d.Templating.List {
		if q, ok := v.Query.(map[string]any); ok {
			out = append(out, q["query"].(string))
		}
	}
	return out
}
