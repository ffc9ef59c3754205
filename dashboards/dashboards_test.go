package dashboards_test

import (
	"fmt"
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lem-energy/lem/dashboards"
	"github.com/lem-energy/lem/exporter"
	"github.com/lem-energy/lem/internal/gpu"
	"github.com/lem-energy/lem/internal/testutil"
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
	}
}

var labelValues = regexp.MustCompile(`^label_values\((.*),\s*(\w+)\)$`)

func substitute(q string) string {
	for k, v := range map[string]string{"$__rate_interval": "4s", "$__range": "40s", "$instance": ".*", "$gpu": ".*",
		"$run_id": "r1"} {
		q = strings.ReplaceAll(q, k, v)
	}
	return q
}

// Every panel, annotation and variable query, with its variables substituted, returns data from a real Prometheus
// that scraped a replaying lem-exporter with a run posted.
func TestQueriesReturnData(t *testing.T) {
	src, err := gpu.OpenReplay(testutil.TracePath("h100-gpuload"), gpu.ReplayOptions{}) // recorded over NVML: full metadata
	require.NoError(t, err)
	srv := testutil.StartExporter(t, src, exporter.Options{})
	prom := testutil.StartPrometheus(t, fmt.Sprintf("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: lem\n    static_configs:\n      - targets: [%q]\n",
		srv.Addr))

	post := func(path, body string) {
		resp, err := http.Post(srv.URL+path, "application/json", strings.NewReader(body))
		require.NoError(t, err)
		resp.Body.Close()
		require.Less(t, resp.StatusCode, 300, path)
	}
	time.Sleep(2 * time.Second)
	post("/api/v1/runs", `{"run_id":"r1","experiment":"llama"}`)
	post("/api/v1/runs/r1/result", `{"idle_w_gpu0":78.2}`)
	post("/api/v1/runs/r1/phase", `{"name":"prefill"}`)
	time.Sleep(4 * time.Second)
	post("/api/v1/runs/r1/phase", `{"name":"decode"}`)
	post("/api/v1/runs/r1/result", `{"output_tokens":512}`)
	time.Sleep(6 * time.Second)

	for name, d := range dashboards.All() {
		for _, p := range d.Panels {
			for _, tg := range p.Targets {
				q := substitute(tg.Expr)
				assert.NotEmpty(t, prom.Query(q), "%s / %s: %s", name, p.Title, q)
			}
		}
		for _, a := range d.Annotations.List {
			q := substitute(a.Expr)
			assert.NotEmpty(t, prom.Query(q), "%s annotation %s: %s", name, a.Name, q)
		}
		for _, v := range d.Templating.List {
			if v.Type != "query" {
				continue
			}
			m := labelValues.FindStringSubmatch(v.Query.(map[string]any)["query"].(string))
			require.NotNil(t, m, "%s variable %s", name, v.Name)
			res := prom.Query(substitute(m[1]))
			require.NotEmpty(t, res, "%s variable %s", name, v.Name)
			assert.NotEmpty(t, res[0].Metric[m[2]], "%s variable %s: label %s", name, v.Name, m[2])
		}
	}
}
