package backend_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/client"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lem-energy/lem/analyze/report"
	"github.com/lem-energy/lem/internal/gpu"
	"github.com/lem-energy/lem/internal/manifest"
	"github.com/lem-energy/lem/internal/testutil"
	"github.com/lem-energy/lem/runner"
	"github.com/lem-energy/lem/runner/backend"
)

const image = testutil.WorkloadImage

func replay(t *testing.T) *gpu.ReplaySource {
	t.Helper()
	r, err := gpu.OpenReplay(testutil.TracePath("h200-llm"), gpu.ReplayOptions{Loop: true})
	require.NoError(t, err)
	t.Cleanup(func() { r.Close() })
	return r
}

// uniqueID is a run id no other test (of this or another package, on the same Engine) uses.
func uniqueID(prefix string) string {
	var b [4]byte
	rand.Read(b[:])
	return prefix + "-" + hex.EncodeToString(b[:])
}

func runOptions(t *testing.T, out io.Writer, cmd ...string) runner.Options {
	return runner.Options{Experiment: "e", RunID: uniqueID("r"), OutDir: t.TempDir(), Command: cmd, Baseline: time.Second,
		BaselineCache: filepath.Join(t.TempDir(), "baselines.json"), Tail: 500 * time.Millisecond, Stdout: out,
		Stderr: io.Discard, Progress: io.Discard, StopGrace: 2 * time.Second}
}

func newDocker(t *testing.T, o backend.DockerOptions) *backend.Docker {
	t.Helper()
	d, err := backend.NewDocker(o)
	require.NoError(t, err)
	t.Cleanup(func() { d.Close() })
	return d
}

// engineClient talks to the Engine of DOCKER_HOST (the default one unless a test set another).
func engineClient(t *testing.T) *client.Client {
	t.Helper()
	cli, err := client.New(client.FromEnv)
	require.NoError(t, err)
	t.Cleanup(func() { cli.Close() })
	return cli
}

// containerOf is the one container (any state) labelled with the run id.
func containerOf(t *testing.T, cli *client.Client, runID string) (id, name string, pid int, running bool) {
	t.Helper()
	res, err := cli.ContainerList(context.Background(), client.ContainerListOptions{All: true,
		Filters: make(client.Filters).Add("label", backend.LabelRunID+"="+runID)})
	require.NoError(t, err)
	require.Len(t, res.Items, 1, "containers of run %s", runID)
	ins, err := cli.ContainerInspect(context.Background(), res.Items[0].ID, client.ContainerInspectOptions{})
	require.NoError(t, err)
	return ins.Container.ID, strings.TrimPrefix(ins.Container.Name, "/"), ins.Container.State.Pid, ins.Container.State.Running
}

// removeContainers removes what a test's runs left on the default Engine.
func removeContainers(t *testing.T, label string) {
	t.Cleanup(func() {
		cli, err := client.New(client.WithHost("unix:///var/run/docker.sock"))
		if err != nil {
			return
		}
		defer cli.Close()
		res, _ := cli.ContainerList(context.Background(), client.ContainerListOptions{All: true,
			Filters: make(client.Filters).Add("label", label)})
		for _, c := range res.Items {
			cli.ContainerRemove(context.Background(), c.ID, client.ContainerRemoveOptions{Force: true})
		}
	})
}

// A line of more than 1 MiB on a container's stdout — which the Engine splits into 16 KB log messages, each
// with its own timestamp — reaches the terminal and stdout.log whole, with no timestamp spliced into it, and
// the markers after it are still parsed.
func TestContainerLongLinePassedWhole(t *testing.T) {
	testutil.Workload(t, true)
	const n = 1<<20 + 300_000
	var out bytes.Buffer
	o := runOptions(t, &out, "-stdout-line", strconv.Itoa(n), "-phases", "after:300ms,last:300ms")
	res, err := runner.Run(context.Background(), o, replay(t), nil, newDocker(t, backend.DockerOptions{Image: image}), slog.Default())
	require.NoError(t, err)
	m := res.Manifest
	require.Equal(t, manifest.StatusOK, m.Status, m.Error)

	want := strings.Repeat("0123456789abcdef", n/16+1)[:n]
	logged, err := os.ReadFile(filepath.Join(res.Dir, manifest.StdoutFile))
	require.NoError(t, err)
	first, rest, _ := strings.Cut(string(logged), "\n")
	require.Len(t, first, n, "the line's length in stdout.log")
	if first != want {
		i := 0
		for i < n && first[i] == want[i] {
			i++
		}
		t.Fatalf("stdout.log's long line differs from what the workload wrote at byte %d: %q", i, first[i:min(i+40, n)])
	}
	assert.True(t, strings.HasPrefix(rest, "workload starting;"), "the next line follows the long one")
	assert.Equal(t, string(logged), out.String(), "the terminal got what stdout.log holds")
	var names []string
	for _, p := range m.Phases {
		names = append(names, p.Name)
	}
	assert.Equal(t, []string{"after", "last"}, names, "markers after the long line are parsed")
	assert.Equal(t, "128", m.Results["output_tokens"])
	assert.Equal(t, 1, m.Markers.Malformed, "the workload's one malformed marker, not a piece of the long line")
}

// Containers get PYTHONUNBUFFERED=1 unless the run sets it; with TTY the workload's stdout is a terminal, its
// lines arrive without the terminal's \r and stderr merged into stdout, and the markers are parsed as usual.
func TestContainerUnbufferedAndTTY(t *testing.T) {
	testutil.Workload(t, true)
	for _, c := range []struct {
		name string
		opts backend.DockerOptions
		want string
	}{
		{"default", backend.DockerOptions{Image: image}, `PYTHONUNBUFFERED="1" tty=false`},
		{"the run's own value", backend.DockerOptions{Image: image, Env: []string{"PYTHONUNBUFFERED=0"}}, `PYTHONUNBUFFERED="0" tty=false`},
		{"tty", backend.DockerOptions{Image: image, TTY: true}, `PYTHONUNBUFFERED="1" tty=true`},
	} {
		t.Run(c.name, func(t *testing.T) {
			var out bytes.Buffer
			o := runOptions(t, &out, "-describe", "-phases", "a:200ms,b:200ms")
			res, err := runner.Run(context.Background(), o, replay(t), nil, newDocker(t, c.opts), slog.Default())
			require.NoError(t, err)
			m := res.Manifest
			require.Equal(t, manifest.StatusOK, m.Status, m.Error)
			logged, err := os.ReadFile(filepath.Join(res.Dir, manifest.StdoutFile))
			require.NoError(t, err)
			first, _, _ := strings.Cut(string(logged), "\n")
			assert.Equal(t, c.want, first)
			assert.NotContains(t, string(logged), "\r")
			assert.Equal(t, []string{"a", "b"}, []string{m.Phases[0].Name, m.Phases[1].Name})
			assert.Equal(t, "128", m.Results["output_tokens"])
			errs, _ := os.ReadFile(filepath.Join(res.Dir, manifest.StderrFile))
			if c.opts.TTY {
				assert.Contains(t, string(logged), "a line on stderr", "a terminal has one stream")
				assert.Empty(t, errs)
			} else {
				assert.Contains(t, string(errs), "a line on stderr")
			}
		})
	}
}

// noEntrypointImage is the test workload's image without its entrypoint.
func noEntrypointImage(t *testing.T) string {
	t.Helper()
	testutil.Workload(t, true)
	const tag = "lem-test-workload-noentry:latest"
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte("FROM "+image+"\nENTRYPOINT []\n"), 0o644))
	if out, err := exec.Command("docker", "build", "-q", "-t", tag, dir).CombinedOutput(); err != nil {
		t.Fatalf("docker build: %v\n%s", err, out)
	}
	return tag
}

// lemRunCmd runs the built lem-run to its end and returns its exit status and output.
func lemRunCmd(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	cmd := exec.Command(lemRunBinary(t), append([]string{"--replay", testutil.TracePath("h200-llm"), "--baseline", "1s"}, args...)...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("lem-run: %v", err)
	}
	return cmd.ProcessState.ExitCode(), o.String(), e.String()
}

// A container that cannot be created or started is reported on one line naming what failed (and the run
// directory, once there is one); the manifest records the image and the container, and the run's end.
func TestContainerStartFailuresEndToEnd(t *testing.T) {
	noEntry := noEntrypointImage(t)
	out := t.TempDir()

	t.Run("image without entrypoint, no command", func(t *testing.T) {
		code, _, stderr := lemRunCmd(t, "--experiment", "e", "--out", out, "--run-id", "noentry", "--image", noEntry)
		assert.Equal(t, runner.ExitUsage, code, stderr)
		lines := errorLines(stderr)
		require.Len(t, lines, 1, stderr)
		assert.Equal(t, "lem-run: image "+noEntry+" has no entrypoint or command: give the command to run after --", lines[0])
		assert.NoDirExists(t, filepath.Join(out, "noentry"), "refused before anything was measured")
	})

	t.Run("command not in the image", func(t *testing.T) {
		id := uniqueID("nocmd")
		code, stdout, stderr := lemRunCmd(t, "--experiment", "e", "--out", out, "--run-id", id, "--image", noEntry, "--", "/no/such/cmd")
		assert.Equal(t, 1, code, stderr)
		dir := filepath.Join(out, id)
		lines := errorLines(stderr)
		require.Len(t, lines, 1, stderr)
		assert.True(t, strings.HasSuffix(strings.TrimRight(stderr, "\n"), lines[0]), "the error is the last line:\n%s", stderr)
		assert.Regexp(t, `^lem-run: run `+id+` error: starting container \S+ \([0-9a-f]{12}\) from `+noEntry+`: .*/no/such/cmd.* \(run directory `+dir+`\)$`, lines[0])
		assert.Contains(t, stdout, "lem-run "+id+" — e, error", "the summary")
		m, err := manifest.Read(dir)
		require.NoError(t, err)
		assert.Equal(t, manifest.StatusError, m.Status)
		require.NotNil(t, m.Image)
		assert.Equal(t, noEntry, m.Image.Name)
		assert.True(t, strings.HasPrefix(m.Image.ID, "sha256:"), m.Image.ID)
		require.NotNil(t, m.Container)
		assert.Len(t, m.Container.ID, 64)
		assert.NotEmpty(t, m.Container.Name)
		assert.Nil(t, m.Container.ExitCode, "it never ran: no exit code")
		assert.Nil(t, m.ExitCode)
		assert.False(t, m.Times.End.IsZero())
		assert.False(t, m.Times.End.Before(m.Times.Start))
		cli := engineClient(t)
		_, err = cli.ContainerInspect(context.Background(), m.Container.ID, client.ContainerInspectOptions{})
		assert.True(t, cerrdefs.IsNotFound(err), "the container that did not start is removed: %v", err)
	})

	t.Run("container name taken by a kept container", func(t *testing.T) {
		name := uniqueID("lem-test-kept")
		first := uniqueID("kept")
		t.Cleanup(func() { exec.Command("docker", "rm", "-f", name).Run() })
		code, _, stderr := lemRunCmd(t, "--experiment", "e", "--out", out, "--run-id", first, "--image", image, "--name", name,
			"--keep", "--", "-phases", "a:100ms")
		require.Equal(t, 0, code, stderr)
		m, err := manifest.Read(filepath.Join(out, first))
		require.NoError(t, err)
		require.NotNil(t, m.Container)
		assert.True(t, m.Container.Kept)

		second := uniqueID("kept")
		code, _, stderr = lemRunCmd(t, "--experiment", "e", "--out", out, "--run-id", second, "--image", image, "--name", name,
			"--keep", "--", "-phases", "a:100ms")
		assert.Equal(t, runner.ExitUsage, code, stderr)
		lines := errorLines(stderr)
		require.Len(t, lines, 1, stderr)
		assert.Equal(t, fmt.Sprintf("lem-run: container name %s is taken by container %.12s (exited, of lem run %s in %s): "+
			"remove it (docker rm -f %s) or choose another name", name, m.Container.ID, first, filepath.Join(out, first), name), lines[0])
		assert.NoDirExists(t, filepath.Join(out, second), "refused before anything was measured")
		ins, err := engineClient(t).ContainerInspect(context.Background(), name, client.ContainerInspectOptions{})
		require.NoError(t, err, "the kept container is still there: a later lem-run's reaper leaves it")
		assert.Equal(t, m.Container.ID, ins.Container.ID)
	})
}

// A name taken between the pre-flight and the start (by another program) fails the start; the manifest still
// records the image and the container name that was asked for.
func TestNameTakenAfterPreflight(t *testing.T) {
	testutil.Workload(t, true)
	name := uniqueID("lem-test-race")
	d := newDocker(t, backend.DockerOptions{Image: image, Name: name})
	require.NoError(t, d.Preflight(context.Background()))
	t.Cleanup(func() { exec.Command("docker", "rm", "-f", name).Run() })
	if out, err := exec.Command("docker", "create", "--name", name, image).CombinedOutput(); err != nil {
		t.Fatalf("docker create: %v\n%s", err, out)
	}
	wl, err := d.Start(context.Background(), backend.Spec{RunID: "race", ResultsDir: t.TempDir()})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "creating container "+name+" from "+image+": ")
	assert.Contains(t, err.Error(), "is already in use")
	require.NotNil(t, wl, "what was created, to record")
	var m manifest.Manifest
	require.NoError(t, wl.Cleanup(&m))
	require.NotNil(t, m.Image)
	assert.Equal(t, d.ImageID(), m.Image.ID)
	require.NotNil(t, m.Container)
	assert.Equal(t, name, m.Container.Name)
	assert.Empty(t, m.Container.ID, "never created")
	assert.Nil(t, m.Container.ExitCode)
}

// watchdogOf finds the watchdog lem-run started for a run directory.
func watchdogOf(t *testing.T, runDir string) int {
	t.Helper()
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		if len(args) > 3 && args[1] == "watchdog" && args[2] == "--run-dir" && args[3] == runDir {
			var pid int
			fmt.Sscanf(p, "/proc/%d/cmdline", &pid)
			return pid
		}
	}
	t.Fatalf("no watchdog for %s", runDir)
	return 0
}

// kill -9 of lem-run in container mode: the container is stopped — by the run's watchdog, or, when the watchdog
// was killed too, by the next lem-run's pre-flight — the manifest says crashed with the container and image, and
// lem-analyze lists the run as crashed with its energy so far.
func TestContainerKill9(t *testing.T) {
	for _, watchdogToo := range []bool{false, true} {
		name := "watchdog stops the container"
		if watchdogToo {
			name = "next lem-run reaps the container"
		}
		t.Run(name, func(t *testing.T) {
			bin := lemRunBinary(t)
			testutil.Workload(t, true)
			out := t.TempDir()
			id := uniqueID("k9")
			removeContainers(t, backend.LabelRunID+"="+id)
			cmd := exec.Command(bin, "--replay", testutil.TracePath("h200-llm"), "--experiment", "k9", "--baseline", "1s",
				"--out", out, "--run-id", id, "--stop-grace", "2s", "--image", image, "--", "-phases", "a:1s,b:120s")
			stdout, stderr := testutil.NewWatcher(), testutil.NewWatcher()
			cmd.Stdout, cmd.Stderr = stdout, stderr
			require.NoError(t, cmd.Start())
			t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
			stdout.WaitFor(t, "LEM_PHASE b\n", time.Minute)
			dir := filepath.Join(out, id)
			// Kill it once a trace segment holds part of the run: what it measured must be reported.
			require.Eventually(t, func() bool {
				segs, _ := filepath.Glob(filepath.Join(dir, ".seg-trace-*.parquet"))
				return len(segs) > 0
			}, 30*time.Second, 100*time.Millisecond)
			cli := engineClient(t)
			cid, cname, _, running := containerOf(t, cli, id)
			require.True(t, running)
			if watchdogToo {
				require.NoError(t, syscall.Kill(watchdogOf(t, dir), syscall.SIGKILL))
			}
			require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
			cmd.Wait()

			why := "stopped by its watchdog"
			if watchdogToo {
				_, _, _, running := containerOf(t, cli, id)
				assert.True(t, running, "nothing stopped it yet")
				m, err := manifest.Read(dir)
				require.NoError(t, err)
				assert.Equal(t, manifest.StatusRunning, m.Status, "nothing marked it yet")
				// The next lem-run's pre-flight.
				require.NoError(t, newDocker(t, backend.DockerOptions{Image: image}).Preflight(context.Background()))
				_, err = cli.ContainerInspect(context.Background(), cid, client.ContainerInspectOptions{})
				assert.True(t, cerrdefs.IsNotFound(err), "the orphaned container is stopped and removed: %v", err)
				why = "a later lem-run stopped its container"
			} else {
				require.Eventually(t, func() bool { // stopped (or already removed by another lem-run's pre-flight)
					ins, err := cli.ContainerInspect(context.Background(), cid, client.ContainerInspectOptions{})
					return cerrdefs.IsNotFound(err) || err == nil && !ins.Container.State.Running
				}, 30*time.Second, 100*time.Millisecond, "the watchdog stops the container")
			}
			require.Eventually(t, func() bool {
				m, err := manifest.Read(dir)
				return err == nil && m.Status == manifest.StatusCrashed
			}, 30*time.Second, 100*time.Millisecond, "the run is marked crashed")
			m, err := manifest.Read(dir)
			require.NoError(t, err)
			assert.Contains(t, m.Error, why)
			require.NotNil(t, m.Container)
			assert.Equal(t, cid, m.Container.ID)
			assert.Equal(t, cname, m.Container.Name)
			assert.Nil(t, m.Container.ExitCode, "stopped, not an exit of its own")
			require.NotNil(t, m.Image)
			assert.Equal(t, image, m.Image.Name)
			assert.False(t, m.Times.End.IsZero(), "times.end is when the death was noticed")

			runs, probs := report.Load([]string{out})
			require.Empty(t, probs)
			require.Len(t, runs, 1, "the crashed run is listed, not skipped")
			rm := runs[0].Manifest
			assert.Equal(t, manifest.StatusCrashed, rm.Status)
			require.True(t, rm.Energy.HybridJ.Valid(), "energy so far, from the trace segments")
			assert.Greater(t, float64(rm.Energy.HybridJ), 0.0)
			require.NotEmpty(t, report.Violations(rm))
			assert.Equal(t, "status ok: run ended crashed", report.Violations(rm)[0])
		})
	}
}

func TestEngineStoppedMidRun(t *testing.T) { engineGone(t, syscall.SIGTERM) }
func TestEngineLostMidRun(t *testing.T)    { engineGone(t, syscall.SIGKILL) }

// engineGone stops (SIGTERM) or kills (SIGKILL) the Engine of a running container workload: the run ends with
// status error naming the Engine, no exit code, the container as the Engine last described it, and the workload
// does not outlive the run (a killed Engine's orphaned runtime would let it run on).
func engineGone(t *testing.T, sig syscall.Signal) {
	e := newEngine(t)
	t.Setenv("DOCKER_HOST", e.host)
	out := testutil.NewWatcher()
	o := runOptions(t, out, "-phases", "a:300ms,long:120s")
	d := newDocker(t, backend.DockerOptions{Image: image})
	type result struct {
		res *runner.Result
		err error
	}
	done := make(chan result, 1)
	go func() {
		res, err := runner.Run(context.Background(), o, replay(t), nil, d, slog.Default())
		done <- result{res, err}
	}()
	out.WaitFor(t, "LEM_PHASE long\n", time.Minute)
	cid, cname, pid, running := containerOf(t, engineClient(t), o.RunID)
	require.True(t, running)
	require.True(t, runningProcess(pid))
	e.stop(sig)
	var r result
	select {
	case r = <-done:
	case <-time.After(time.Minute):
		t.Fatal("the run did not end after the Engine went")
	}
	require.NoError(t, r.err)
	m := r.res.Manifest
	assert.Equal(t, manifest.StatusError, m.Status)
	assert.Equal(t, 1, r.res.ExitCode)
	assert.Nil(t, m.ExitCode, "no exit code of the workload's own")
	want := map[syscall.Signal]string{syscall.SIGTERM: "Docker Engine stopped during the run: the Docker daemon at " + e.host,
		syscall.SIGKILL: "Docker Engine lost during the run: waiting for container " + cname}[sig]
	assert.True(t, strings.HasPrefix(m.Error, want), "error %q, want it to start %q", m.Error, want)
	require.NotNil(t, m.Container)
	assert.Equal(t, cid, m.Container.ID)
	assert.Equal(t, cname, m.Container.Name)
	assert.Nil(t, m.Container.ExitCode, "the Engine never reported the workload's exit")
	assert.False(t, m.Container.StartedAt.IsZero())
	assert.False(t, runningProcess(pid), "the workload does not outlive the run")
	if sig == syscall.SIGKILL {
		assert.Contains(t, m.Error, fmt.Sprintf("lem-run stopped the workload (process %d)", pid))
	}
	var names []string
	for _, p := range m.Phases {
		names = append(names, p.Name)
	}
	assert.Equal(t, []string{"a", "long"}, names)
	back, err := manifest.Read(r.res.Dir)
	require.NoError(t, err)
	assert.Equal(t, m.Error, back.Error)
	assert.Greater(t, back.Times.DurationS, 0.3)
}
