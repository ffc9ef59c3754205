package campaign_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lem-energy/lem/internal/manifest"
	"github.com/lem-energy/lem/internal/testutil"
	"github.com/lem-energy/lem/runner"
	"github.com/lem-energy/lem/runner/campaign"
)

// grid is a campaign with one experiment varying n variables over k values each.
func grid(n, k int) string {
	var b strings.Builder
	b.WriteString("name: huge\nexperiments:\n  - name: x\n    command: [ls]\n    vary:\n")
	for i := range n {
		fmt.Fprintf(&b, "      v%d: [", i)
		for j := range k {
			if j > 0 {
				b.WriteString(", ")
			}
			fmt.Fprint(&b, j)
		}
		b.WriteString("]\n")
	}
	return b.String()
}

// TestHugeGridRefusedBeforeExpanding: the plan's size is counted from the grid, so a dry run of 10^12
// configurations is refused at once (it used to expand them and die out of memory).
func TestHugeGridRefusedBeforeExpanding(t *testing.T) {
	cases := []struct {
		vars, values int
		want         string
	}{
		{12, 10, ":1: max_runs: the plan has 1000000000000 runs (1000000000000 configurations × 1 cycles), more than max_runs 500"},
		{40, 10, ":1: max_runs: the plan has 10000000000000000000000000000000000000000 runs (10000000000000000000000000000000000000000 configurations × 1 cycles), more than max_runs 500"},
		{9, 2, ":1: max_runs: the plan has 512 runs (512 configurations × 1 cycles), more than max_runs 500"},
	}
	for _, c := range cases {
		p := write(t, grid(c.vars, c.values))
		f, err := campaign.Load(p)
		require.NoError(t, err)
		var m0, m1 runtime.MemStats
		runtime.ReadMemStats(&m0)
		_, _, err = f.Plan()
		runtime.ReadMemStats(&m1)
		require.Error(t, err)
		assert.Equal(t, p+c.want, err.Error())
		assert.Less(t, m1.TotalAlloc-m0.TotalAlloc, uint64(1<<20), "refused without expanding")
	}
	f, err := campaign.Load(write(t, grid(8, 2)))
	require.NoError(t, err)
	plan, _, err := f.Plan()
	require.NoError(t, err)
	assert.Len(t, plan, 256)
}

func TestCountsAreChecked(t *testing.T) {
	cases := []struct{ body, want string }{
		{"name: a\ncycles: 0\nexperiments:\n  - name: x\n    command: [ls]\n", ":2: cycles: 0: must be at least 1"},
		{"name: a\ncycles: -3\nexperiments:\n  - name: x\n    command: [ls]\n", ":2: cycles: -3: must be at least 1"},
		{"name: a\nmax_runs: 0\nexperiments:\n  - name: x\n    command: [ls]\n", ":2: max_runs: 0: must be 1 to 100000"},
		{"name: a\nmax_runs: 1000000\nexperiments:\n  - name: x\n    command: [ls]\n", ":2: max_runs: 1000000: must be 1 to 100000"},
		{"name: a\nexperiments:\n  - name: x\n    command: [ls]\n    vary: {p: [1, [2, 3]]}\n",
			":5: experiments.0.vary.p.1: a list or mapping; grid values are strings, numbers or booleans"},
	}
	for _, c := range cases {
		p := write(t, c.body)
		_, err := campaign.Load(p)
		require.Error(t, err, c.body)
		assert.Equal(t, p+c.want, err.Error())
	}
	f, err := campaign.Load(write(t, "name: a\nexperiments:\n  - name: x\n    command: [ls]\n"))
	require.NoError(t, err)
	assert.Equal(t, 1, f.Cycles, "no cycles key: one cycle")
}

func TestUndefinedPlaceholdersRefused(t *testing.T) {
	p := write(t, `name: ph
experiments:
  - name: x-{bs}
    command: [run, "--bs={bs}", "--len={len}", "${HOME}/out"]
    env: {A: "{bs}", B: "{model}"}
    backend: python
    catalogue: none.json
    backend_params: {n: "{bs}", m: "{dtype}", k: "{}"}
    vary: {bs: [1, 2]}
  - name: y-{oops}
    command: [run]
`)
	_, err := campaign.Load(p)
	require.Error(t, err)
	want := []string{
		p + `:4: experiments.0.command.2: placeholder {len} is not a vary variable (vary has bs)`,
		p + `:5: experiments.0.env.B: placeholder {model} is not a vary variable (vary has bs)`,
		p + `:8: experiments.0.backend_params.m: placeholder {dtype} is not a vary variable (vary has bs)`,
		p + `:10: experiments.1.name: placeholder {oops} is not a vary variable (it has no vary)`,
	}
	assert.Equal(t, strings.Join(want, "\n"), err.Error())
}

// TestRunIDsOnePerConfiguration: values that sanitise alike get distinct, stable ids (they used to share
// coll-a_b-c1, each run moving the previous one aside); the experiment's name appears once.
func TestRunIDsOnePerConfiguration(t *testing.T) {
	ids := func(body string) []string {
		f, err := campaign.Load(write(t, body))
		require.NoError(t, err)
		plan, _, err := f.Plan()
		require.NoError(t, err)
		var out []string
		for _, p := range plan {
			out = append(out, p.RunID)
		}
		return out
	}
	body := "name: coll\nexperiments:\n  - name: '{p}'\n    command: [ls]\n    vary: {p: [a/b, a_b, a b, 'a:b', c]}\n"
	got := ids(body)
	require.Len(t, got, 5)
	seen := map[string]bool{}
	for i, id := range got[:4] {
		assert.Regexp(t, `^coll-a_b-[0-9a-f]{8}-c1$`, id, i)
		assert.False(t, seen[id], "id %s given twice", id)
		seen[id] = true
	}
	// sha256("a/b\x00p=a/b") computed apart: python3 -c 'import hashlib; print(hashlib.sha256(b"a/b\x00p=a/b").hexdigest()[:8])'
	assert.Equal(t, "coll-a_b-de350192-c1", got[0])
	assert.Equal(t, "coll-c-c1", got[4], "a configuration whose id meets no other's has no hash")
	assert.Equal(t, got, ids(body), "ids are stable")
	assert.Equal(t, []string{"toy-bs2-c1", "toy-bs4-c1", "toy-c1"},
		ids("name: toy\nexperiments:\n  - name: toy-bs{bs}\n    command: [ls]\n    vary: {bs: [2, 4]}\n  - name: toy\n    command: [ls]\n"))
	// A configuration that would meet a backend container's start-up runs gets the hash instead.
	got = ids("name: s\nbackends:\n  srv: {image: x, health: {http: 'http://{host}/'}}\nexperiments:\n  - name: startup-srv\n    command: [ls]\n")
	assert.Regexp(t, `^s-startup-srv-[0-9a-f]{8}-c1$`, got[0])
}

func runWith(t *testing.T, path, out string, force bool) (*campaign.State, error, string) {
	t.Helper()
	f, err := campaign.Load(path)
	require.NoError(t, err)
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	p, err := campaign.Prepare(context.Background(), f, out, log)
	require.NoError(t, err)
	src, devs := replay(t)
	st, err := campaign.Run(context.Background(), p, campaign.Options{Source: src, Devices: devs,
		Cooldown: runner.CooldownNone, IdleHistory: runner.IdleHistoryOff,
		Progress: campaign.NewProgress(&bytes.Buffer{}, false), Log: log, Force: force})
	return st, err, logs.String()
}

// TestCollidingConfigurationsKeepTheirRuns: two configurations whose names sanitise alike both keep their
// results in campaign.json, nothing moved aside.
func TestCollidingConfigurationsKeepTheirRuns(t *testing.T) {
	wl := testutil.Workload(t, false)
	out := filepath.Join(t.TempDir(), "out")
	path := write(t, `name: coll
baseline: {duration: 300ms}
experiments:
  - name: "{p}"
    command: [`+wl+`, -phases, "decode:300ms", -tokens, "7"]
    vary: {p: [a/b, a_b]}
`)
	st, err, _ := runWith(t, path, out, false)
	require.NoError(t, err)
	require.Len(t, st.Runs, 2)
	assert.NotEqual(t, st.Runs[0].RunID, st.Runs[1].RunID)
	for _, r := range st.Runs {
		assert.Equal(t, manifest.StatusOK, r.Status)
		assert.Equal(t, 1, r.Attempts)
		m, err := manifest.Read(filepath.Join(out, r.RunID))
		require.NoError(t, err)
		assert.Equal(t, r.Experiment, m.Experiment)
	}
	assert.NoDirExists(t, filepath.Join(out, ".attempts"))
	saved, err := campaign.ReadState(out)
	require.NoError(t, err)
	assert.Len(t, saved.Experiments, 2, "both configurations summarised")
}

// TestResumeWithChangedFile: a changed campaign file is refused on resume, naming what changed, unless forced;
// comments and layout are no change.
func TestResumeWithChangedFile(t *testing.T) {
	wl := testutil.Workload(t, false)
	out := filepath.Join(t.TempDir(), "out")
	body := `name: chg
baseline: {duration: 300ms}
experiments:
  - name: w
    command: [` + wl + `, -phases, "decode:300ms"]
  - name: v
    command: [` + wl + `, -phases, "decode:300ms"]
`
	path := write(t, body)
	st, err, _ := runWith(t, path, out, false)
	require.NoError(t, err)
	require.Len(t, st.Runs, 2)

	// Only comments and layout: resumes, nothing to do.
	require.NoError(t, os.WriteFile(path, []byte("# the same campaign\n"+strings.ReplaceAll(body, "300ms}", "300ms}  # short")), 0o644))
	st, err, _ = runWith(t, path, out, false)
	require.NoError(t, err)
	assert.Equal(t, []int{1, 1}, []int{st.Runs[0].Attempts, st.Runs[1].Attempts})

	changed := strings.Replace(body, "name: chg\n", "name: chg\ncycles: 2\n", 1)
	changed = strings.Replace(changed, `-phases, "decode:300ms"]
  - name: v`, `-phases, "decode:400ms"]
  - name: v`, 1)
	changed = strings.Replace(changed, "  - name: v\n", "  - name: u\n", 1)
	require.NoError(t, os.WriteFile(path, []byte(changed), 0o644))
	_, err, _ = runWith(t, path, out, false)
	require.Error(t, err)
	assert.Equal(t, "campaign file "+path+" changed since "+filepath.Join(out, campaign.StateFile)+
		" was written (cycles; experiment w: command; experiment u added; experiment v removed): resume with --force to keep the runs already ok under the new file, or use another --out",
		err.Error())
	saved, err := campaign.ReadState(out)
	require.NoError(t, err)
	assert.Equal(t, "done", saved.Status, "the refused resume left the state alone")

	st, err, logs := runWith(t, path, out, true)
	require.NoError(t, err)
	assert.Contains(t, logs, "resuming (--force)")
	require.Len(t, st.Runs, 4)
	assert.Equal(t, "chg-w-c1", st.Runs[0].RunID)
	assert.Equal(t, 1, st.Runs[0].Attempts, "the run already ok is kept")
	for _, r := range st.Runs {
		assert.Equal(t, manifest.StatusOK, r.Status, r.RunID)
	}
	saved, err = campaign.ReadState(out)
	require.NoError(t, err)
	var def map[string]any
	require.NoError(t, json.Unmarshal(saved.Definition, &def))
	assert.Equal(t, 2.0, def["cycles"])
	assert.Len(t, saved.DefinitionSHA256, 64)
}
