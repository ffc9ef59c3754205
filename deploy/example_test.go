package deploy

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	batchv1 "k8s.io/api/batch/v1"
	"sigs.k8s.io/yaml"

	"github.com/lem-energy/lem/internal/testenv"
	"github.com/lem-energy/lem/internal/testutil"
)

func exampleJob(t *testing.T) *batchv1.Job {
	t.Helper()
	b, err := os.ReadFile("helm/examples/workload-job.yaml")
	require.NoError(t, err)
	var job batchv1.Job
	require.NoError(t, yaml.UnmarshalStrict(b, &job))
	return &job
}

// The example's script, run by sh against a real exporter (replaying a recorded GPU), marks a run with its phases
// and results, and ends it "ok", or "failed" when the benchmark fails.
func TestExampleJobScriptMarksARun(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and starts the exporter")
	}
	testenv.Tool(t, "curl", "curl")
	job := exampleJob(t)
	script := job.Spec.Template.Spec.Containers[0].Args[0]

	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "marker-token")
	require.NoError(t, os.WriteFile(tokenFile, []byte("s3cret-token\n"), 0o600))
	// The Job reads the token where the Secret is mounted; here it lies in the test's directory.
	script = strings.ReplaceAll(script, "/etc/lem/marker-token", tokenFile)

	bin := filepath.Join(dir, "lem-exporter")
	build := exec.Command("go", "build", "-o", bin, "./cmd/lem-exporter")
	build.Dir = testutil.Root()
	out, err := build.CombinedOutput()
	require.NoError(t, err, "%s", out)
	addr := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	exp := exec.Command(bin, "--replay", testutil.TracePath("h200-shape"), "--loop", "--web.listen-address", addr,
		"--markers.token-file", tokenFile)
	logs, err := os.Create(filepath.Join(dir, "exporter.log"))
	require.NoError(t, err)
	defer logs.Close()
	exp.Stdout, exp.Stderr = logs, logs
	require.NoError(t, exp.Start())
	t.Cleanup(func() { exp.Process.Kill(); exp.Wait() })
	base := "http://" + addr
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if r, err := http.Get(base + "/healthz"); err == nil {
			r.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(logs.Name())
			t.Fatalf("exporter did not start:\n%s", b)
		}
	}

	// python stands in for the benchmark: bench.py writes the results file, or fails when asked to.
	shims := filepath.Join(dir, "bin")
	require.NoError(t, os.Mkdir(shims, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(shims, "python"), []byte(`#!/bin/sh
case "$1" in
bench.py)
  [ -n "${BENCH_FAILS:-}" ] && exit 3
  while [ $# -gt 0 ]; do [ "$1" = --out ] && echo '{"output_tokens": 12800, "requests": 32}' > "$2"; shift; done ;;
esac
`), 0o755))

	type run struct {
		ID         string            `json:"run_id"`
		Experiment string            `json:"experiment"`
		Labels     map[string]string `json:"labels"`
		Status     string            `json:"status"`
		End        string            `json:"end"`
		Phases     []struct {
			Name string `json:"name"`
		} `json:"phases"`
		Results map[string]string `json:"results"`
	}
	for _, tc := range []struct {
		id, status string
		fail       bool
	}{{"llm-bench-x7k2p", "ok", false}, {"llm-bench-q9z4m", "failed", true}} {
		t.Run(tc.status, func(t *testing.T) {
			sh := exec.Command("sh", "-c", script)
			sh.Dir = dir
			sh.Env = append(os.Environ(), "PATH="+shims+string(os.PathListSeparator)+os.Getenv("PATH"),
				"LEM_EXPORTER_URL="+base, "RUN_ID="+tc.id)
			if tc.fail {
				sh.Env = append(sh.Env, "BENCH_FAILS=1")
			}
			out, err := sh.CombinedOutput()
			if tc.fail {
				require.Error(t, err, "the Job fails with its benchmark:\n%s", out)
			} else {
				require.NoError(t, err, "%s", out)
			}
			assert.NotContains(t, string(out), "not posted", "every marker was accepted")

			resp, err := http.Get(base + "/api/v1/runs/" + tc.id)
			require.NoError(t, err)
			defer resp.Body.Close()
			require.Equal(t, http.StatusOK, resp.StatusCode)
			var r run
			require.NoError(t, json.NewDecoder(resp.Body).Decode(&r))
			assert.Equal(t, "llama-8b-bs32", r.Experiment)
			assert.Equal(t, map[string]string{"k8s_pod": tc.id}, r.Labels)
			assert.Equal(t, tc.status, r.Status)
			assert.NotEmpty(t, r.End, "ended")
			var phases []string
			for _, p := range r.Phases {
				phases = append(phases, p.Name)
			}
			assert.Equal(t, []string{"load", "decode"}, phases)
			if tc.fail {
				assert.Empty(t, r.Results)
			} else {
				assert.Equal(t, map[string]string{"output_tokens": "12800", "requests": "32"}, r.Results)
			}
		})
	}
}
