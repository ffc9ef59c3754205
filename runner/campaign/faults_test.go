package campaign_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/moby/moby/client"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lem-energy/lem/analyze/report"
	"github.com/lem-energy/lem/internal/manifest"
	"github.com/lem-energy/lem/internal/testutil"
	"github.com/lem-energy/lem/runner"
	"github.com/lem-energy/lem/runner/backend"
	"github.com/lem-energy/lem/runner/campaign"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testutil.RemoveCommands()
	os.Exit(code)
}

// lemRunBinary is the built lem-run, for what a user sees (its one-line errors) and for kill -9.
func lemRunBinary(t *testing.T) string { return testutil.Command(t, "lem-run") }

// uniqueName is a campaign name no concurrent test uses (it names the backend containers).
func uniqueName(prefix string) string {
	var b [3]byte
	rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// startCampaign starts the built lem-run on a campaign file.
func startCampaign(t *testing.T, path, out string) (cmd *exec.Cmd, stdout, stderr *testutil.Watcher) {
	t.Helper()
	cmd = exec.Command(lemRunBinary(t), "campaign", "--replay", testutil.TracePath("h200-llm"), "--loop", "--out", out,
		"--cooldown", "none", "--idle-history", "off", path)
	stdout, stderr = testutil.NewWatcher(), testutil.NewWatcher()
	cmd.Stdout, cmd.Stderr = stdout, stderr
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd, stdout, stderr
}

// exitCode waits for lem-run and returns its exit status.
func exitCode(t *testing.T, cmd *exec.Cmd) int {
	t.Helper()
	err := cmd.Wait()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("lem-run: %v", err)
	}
	return cmd.ProcessState.ExitCode()
}

// lastLine is the last line of an output; errorLines are lem-run's own error lines ("lem-run: …").
func lastLine(s string) string {
	s = strings.TrimRight(s, "\n")
	return s[strings.LastIndexByte(s, '\n')+1:]
}

func errorLines(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, "lem-run: ") {
			out = append(out, l)
		}
	}
	return out
}

func campaignContainers(t *testing.T, name string) []string {
	t.Helper()
	cli, err := client.New(client.FromEnv)
	require.NoError(t, err)
	defer cli.Close()
	res, err := cli.ContainerList(context.Background(), client.ContainerListOptions{All: true,
		Filters: make(client.Filters).Add("label", backend.LabelCampaign+"="+name)})
	require.NoError(t, err)
	var ids []string
	for _, c := range res.Items {
		ids = append(ids, c.ID)
	}
	return ids
}

// kill -9 of lem-run running a campaign with a backend container, then resume: the container the dead lem-run
// left (its fixed name lem-<campaign>-<backend>) is reaped, every run after the resume succeeds, and
// campaign.json, lem-analyze report and validate agree: four runs, each listed once (its current attempt), the
// killed one with 2 attempts and its first kept under .attempts/ as crashed, and two start-ups measured.
func TestCampaignKill9ResumeWithBackendContainer(t *testing.T) {
	testutil.Workload(t, true)
	name := uniqueName("k9c")
	out := filepath.Join(t.TempDir(), "out")
	t.Cleanup(func() { exec.Command("docker", "rm", "-f", "lem-"+name+"-server").Run() })
	path := write(t, `name: `+name+`
cycles: 2
baseline: {policy: ttl, ttl: 10m, duration: 500ms}
backends:
  server:
    image: `+testutil.WorkloadImage+`
    command: [-serve, ":8080", -load, 500ms]
    health: {http: "http://{host}:8080/health", timeout: 30s}
experiments:
  - name: e-{tokens}
    backend_container: server
    command: [/workload, -phases, "decode:3s", -tokens, "{tokens}"]
    vary: {tokens: [10, 20]}
`)
	killed := name + "-e-20-c1"
	cmd, _, stderr := startCampaign(t, path, out)
	stderr.WaitFor(t, "run 2/4 e-20 (cycle 1, "+killed+") started", 2*time.Minute)
	require.Eventually(t, func() bool {
		b, _ := os.ReadFile(filepath.Join(out, killed, manifest.StdoutFile))
		return bytes.Contains(b, []byte("LEM_PHASE decode\n"))
	}, time.Minute, 50*time.Millisecond, "the second run's workload is in its decode phase")
	require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
	cmd.Wait()

	// The killed run's own watchdog stops the backend container and marks the run crashed.
	require.Eventually(t, func() bool {
		m, err := manifest.Read(filepath.Join(out, killed))
		return err == nil && m.Status == manifest.StatusCrashed
	}, 30*time.Second, 100*time.Millisecond)
	left := campaignContainers(t, name)
	require.Len(t, left, 1, "the backend container, stopped, carries its campaign's label")

	cmd, stdout, stderr := startCampaign(t, path, out)
	require.Equal(t, 0, exitCode(t, cmd), "resumed campaign:\n%s", stderr.String())
	assert.NotContains(t, stderr.String(), "Conflict")
	assert.Contains(t, stderr.String(), "resuming, 1 of 4 runs already ok")
	assert.Contains(t, stdout.String(), "campaign "+name+": done")
	assert.Empty(t, campaignContainers(t, name), "no container left")

	st, err := campaign.ReadState(out)
	require.NoError(t, err)
	assert.Equal(t, "done", st.Status)
	require.Len(t, st.Runs, 4)
	attempts := map[string]int{}
	for _, r := range st.Runs {
		assert.Equal(t, manifest.StatusOK, r.Status, r.RunID)
		attempts[r.RunID] = r.Attempts
	}
	assert.Equal(t, map[string]int{name + "-e-10-c1": 1, killed: 2, name + "-e-10-c2": 1, name + "-e-20-c2": 1}, attempts)
	require.Len(t, st.Startups, 2, "the first execution's start-up and the resumed one's, each measured once")
	assert.Equal(t, []string{name + "-startup-server-c1", name + "-startup-server-c2"}, []string{st.Startups[0].RunID, st.Startups[1].RunID})
	for _, s := range st.Startups {
		assert.Equal(t, manifest.StatusOK, s.Status, s.RunID)
		attempts[s.RunID] = s.Attempts
		assert.Equal(t, 1, s.Attempts, s.RunID)
	}
	earlier, err := manifest.Read(report.EarlierAttemptDir(out, killed, 1))
	require.NoError(t, err)
	assert.Equal(t, manifest.StatusCrashed, earlier.Status)

	// lem-analyze reads the campaign directory by the same rule.
	runs, probs := report.Load([]string{out})
	require.Empty(t, probs)
	require.Len(t, runs, 6, "four runs and two start-ups, each once")
	for _, r := range runs {
		id := r.Manifest.RunID
		assert.Equal(t, manifest.StatusOK, r.Manifest.Status, id)
		assert.Equal(t, filepath.Join(out, id), r.Dir, "the current attempt")
		assert.Equal(t, attempts[id], r.Attempts, "attempts of %s as campaign.json says", id)
		delete(attempts, id)
	}
	assert.Empty(t, attempts, "every run campaign.json lists is reported")
}

// Two executions of one campaign directory at once: the second is refused, naming the first's PID and host; the
// lock goes with the first.
func TestCampaignDirectoryLocked(t *testing.T) {
	wl := testutil.Workload(t, false)
	out := filepath.Join(t.TempDir(), "out")
	path := write(t, `name: locked
baseline: {duration: 200ms}
experiments:
  - name: w
    command: [`+wl+`, -phases, "decode:60s"]
`)
	f, err := campaign.Load(path)
	require.NoError(t, err)
	log := slog.New(slog.NewTextHandler(&bytes.Buffer{}, nil))
	execute := func(ctx context.Context, progress *testutil.Watcher) (*campaign.State, error) {
		p, err := campaign.Prepare(ctx, f, out, log)
		require.NoError(t, err)
		src, devs := replay(t)
		return campaign.Run(ctx, p, campaign.Options{Source: src, Devices: devs, Progress: campaign.NewProgress(progress, false), Log: log,
			Cooldown: runner.CooldownNone, IdleHistory: runner.IdleHistoryOff})
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	progress := testutil.NewWatcher()
	first := make(chan error, 1)
	go func() { _, err := execute(ctx, progress); first <- err }()
	progress.WaitFor(t, "run 1/1 w (cycle 1, locked-w-c1) started", time.Minute)

	_, err = execute(context.Background(), testutil.NewWatcher())
	require.ErrorIs(t, err, campaign.ErrLocked)
	host, _ := os.Hostname()
	assert.Regexp(t, fmt.Sprintf(`^campaign directory in use: %s is being executed by lem-run pid %d on host %s since \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ: wait for it to end, or use another --out$`,
		out, os.Getpid(), host), err.Error())

	cancel()
	require.ErrorIs(t, <-first, context.Canceled)
	lf, err := os.OpenFile(filepath.Join(out, campaign.LockFile), os.O_RDWR, 0)
	require.NoError(t, err)
	defer lf.Close()
	assert.NoError(t, syscall.Flock(int(lf.Fd()), syscall.LOCK_EX|syscall.LOCK_NB), "released when the execution ends")
}

// The campaign's own errors name what failed and where, on one line after the summary: a run that did not end
// ok (its id, status and directory, and campaign.json), and an interrupt (the run it stopped, its directory).
func TestCampaignErrorsNameWhatFailed(t *testing.T) {
	wl := testutil.Workload(t, false)
	t.Run("runs that did not end ok", func(t *testing.T) {
		name := uniqueName("bad")
		out := filepath.Join(t.TempDir(), "out")
		path := write(t, `name: `+name+`
baseline: {duration: 200ms}
experiments:
  - name: good
    command: [`+wl+`, -phases, "a:200ms"]
  - name: bad
    command: [`+wl+`, -phases, "a:200ms", -exit, "3"]
`)
		cmd, stdout, stderr := startCampaign(t, path, out)
		assert.Equal(t, 1, exitCode(t, cmd))
		assert.Equal(t, []string{lastLine(stderr.String())}, errorLines(stderr.String()), "one error line, the last")
		assert.Equal(t, fmt.Sprintf("lem-run: campaign %s: 1 of 2 runs did not end ok: %s-bad-c1 failed in %s; see %s; run the campaign again to redo them",
			name, name, filepath.Join(out, name+"-bad-c1"), filepath.Join(out, campaign.StateFile)), lastLine(stderr.String()))
		assert.Contains(t, stdout.String(), "campaign "+name+": incomplete", "the summary")
	})
	t.Run("interrupted", func(t *testing.T) {
		name := uniqueName("intr")
		out := filepath.Join(t.TempDir(), "out")
		path := write(t, `name: `+name+`
baseline: {duration: 200ms}
experiments:
  - name: long
    command: [`+wl+`, -phases, "a:60s"]
`)
		cmd, stdout, stderr := startCampaign(t, path, out)
		stderr.WaitFor(t, "run 1/1 long (cycle 1, "+name+"-long-c1) started", time.Minute)
		require.NoError(t, cmd.Process.Signal(os.Interrupt))
		assert.Equal(t, 130, exitCode(t, cmd))
		assert.Equal(t, []string{lastLine(stderr.String())}, errorLines(stderr.String()), "one error line, the last")
		assert.Equal(t, fmt.Sprintf("lem-run: campaign %s interrupted during run %s-long-c1 (%s); state in %s; run it again to resume: context canceled",
			name, name, filepath.Join(out, name+"-long-c1"), filepath.Join(out, campaign.StateFile)), lastLine(stderr.String()))
		assert.Contains(t, stdout.String(), "campaign "+name+": interrupted", "the summary")
	})
}

// A backend container whose health command keeps failing: its start-up fails naming the command, its exit code
// and the end of its output, every failing check is kept in the start-up's health.log, and the container is
// removed.
func TestHealthCommandOutputKept(t *testing.T) {
	testutil.Workload(t, true)
	name := uniqueName("sick")
	out := filepath.Join(t.TempDir(), "out")
	t.Cleanup(func() { exec.Command("docker", "rm", "-f", "lem-"+name+"-server").Run() })
	path := write(t, `name: `+name+`
baseline: {duration: 200ms}
backends:
  server:
    image: `+testutil.WorkloadImage+`
    command: [-serve, ":8080", -load, 200ms]
    health: {command: [/workload, -phases, "check:1ms", -exit, "3"], timeout: 2s}
experiments:
  - name: a
    backend_container: server
    command: [/workload, -phases, "decode:200ms"]
`)
	st, err, _ := run(t, context.Background(), path, out)
	require.ErrorIs(t, err, campaign.ErrIncomplete)
	startup := filepath.Join(out, name+"-startup-server-c1")
	require.Len(t, st.Startups, 1)
	s := st.Startups[0]
	assert.Equal(t, manifest.StatusError, s.Status)
	assert.Equal(t, 1, s.Attempts)
	health := `health command ["/workload" "-phases" "check:1ms" "-exit" "3"] exited 3: `
	assert.Regexp(t, `^backend container lem-`+name+`-server \([0-9a-f]{12}\) not healthy after 2s: last health check: `+
		regexp.QuoteMeta(health)+`workload starting; .* \| LEM_RESULT output_tokens=128 \| a line on stderr \(every failing check in `+
		regexp.QuoteMeta(filepath.Join(startup, backend.HealthLog))+`\)$`, s.Error)
	assert.Equal(t, fmt.Sprintf("backend container server did not start (start-up run %s): %s", startup, s.Error), st.Runs[0].Error)
	log, err := os.ReadFile(filepath.Join(startup, backend.HealthLog))
	require.NoError(t, err)
	assert.Regexp(t, `^\S+Z `+regexp.QuoteMeta(strings.TrimSuffix(health, " "))+`
    workload starting; gpus:  run: `+name+`-startup-server-c1
    LEM_PHASE bad name with spaces
    LEM_PHASE check
    LEM_RESULT output_tokens=128
    a line on stderr
\S+Z \(the same \d+ more times\)
$`, string(log), "a failing check once (its output, stdout then stderr), then how often it repeated")
	m, err := manifest.Read(startup)
	require.NoError(t, err)
	assert.Equal(t, s.Error, m.Error)
	require.NotNil(t, m.Container)
	assert.False(t, m.Container.Kept, "removed after its start-up failed")
	assert.Nil(t, m.Container.ExitCode, "it still ran")
	assert.Empty(t, campaignContainers(t, name))
}
