package backend

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/lem-energy/lem/internal/manifest"
)

// Output runs cmd in a one-off container of the image (no GPUs) and returns what it printed and its exit code;
// the container is removed. Introspection uses it to run Python inside the backend's image.
func (d *Docker) Output(ctx context.Context, cmd []string) (stdout, stderr []byte, code int, err error) {
	created, err := d.cli.ContainerCreate(ctx, client.ContainerCreateOptions{
		Config: &container.Config{Image: d.opts.Image, Entrypoint: cmd[:1], Cmd: cmd[1:], Env: d.opts.Env}})
	if err != nil {
		return nil, nil, 0, fmt.Errorf("creating container from %s: %w", d.opts.Image, err)
	}
	defer d.cli.ContainerRemove(context.Background(), created.ID, client.ContainerRemoveOptions{Force: true})
	if _, err := d.cli.ContainerStart(ctx, created.ID, client.ContainerStartOptions{}); err != nil {
		return nil, nil, 0, fmt.Errorf("starting container from %s: %w", d.opts.Image, err)
	}
	res := d.cli.ContainerWait(ctx, created.ID, client.ContainerWaitOptions{Condition: container.WaitConditionNotRunning})
	select {
	case r := <-res.Result:
		code = int(r.StatusCode)
	case err := <-res.Error:
		return nil, nil, 0, fmt.Errorf("waiting for container from %s: %w", d.opts.Image, err)
	}
	logs, err := d.cli.ContainerLogs(ctx, created.ID, client.ContainerLogsOptions{ShowStdout: true, ShowStderr: true})
	if err != nil {
		return nil, nil, code, fmt.Errorf("reading container output: %w", err)
	}
	defer logs.Close()
	var out, errb strings.Builder
	if _, err := stdcopy.StdCopy(&out, &errb, logs); err != nil {
		return nil, nil, code, fmt.Errorf("reading container output: %w", err)
	}
	return []byte(out.String()), []byte(errb.String()), code, nil
}

// Source names the image for a catalogue's provenance: name and ID (after Preflight).
func (d *Docker) Source() string {
	if d.image.ID == "" {
		return d.opts.Image
	}
	return d.opts.Image + "@" + d.image.ID
}

// ImageID is the image's ID (after Preflight).
func (d *Docker) ImageID() string { return d.image.ID }

// PersistentOptions describe a long-running backend container (an inference server, say) that each run is
// executed in, instead of a container per run.
type PersistentOptions struct {
	Command []string // the server's command (default: the image's)
	// HealthURL is polled until it answers 2xx; "{host}" is replaced by the container's address.
	HealthURL string
	// HealthCommand is executed in the container until it exits 0 (when there is no HealthURL).
	HealthCommand []string
	HealthTimeout time.Duration
	ResultsHost   string // host directory mounted at ContainerResultsDir; each run gets a subdirectory
}

// Persistent is a backend container started once for many runs. Its start-up (model load) is measured as a run
// of its own through StartupBackend; the runs go through ExecBackend.
type Persistent struct {
	d     *Docker
	opts  PersistentOptions
	mu    sync.Mutex
	id    string
	name  string
	host  string
	guard *guard // stops the container if lem-run dies while it runs
}

// NewPersistent prepares a persistent container of d's image; nothing starts until a run of StartupBackend.
func (d *Docker) NewPersistent(opts PersistentOptions) *Persistent {
	if opts.HealthTimeout <= 0 {
		opts.HealthTimeout = 10 * time.Minute
	}
	return &Persistent{d: d, opts: opts}
}

// Host is the running container's address on its network (for clients and health checks).
func (p *Persistent) Host() string { p.mu.Lock(); defer p.mu.Unlock(); return p.host }

// ID is the running container's ID ("" before start-up).
func (p *Persistent) ID() string { p.mu.Lock(); defer p.mu.Unlock(); return p.id }

// Remove stops and removes the container, if one runs.
func (p *Persistent) Remove(grace time.Duration) error {
	p.mu.Lock()
	id, g := p.id, p.guard
	p.id, p.guard = "", nil
	p.mu.Unlock()
	g.release()
	if id == "" {
		return nil
	}
	secs := int(grace.Seconds())
	p.d.cli.ContainerStop(context.Background(), id, client.ContainerStopOptions{Timeout: &secs})
	if _, err := p.d.cli.ContainerRemove(context.Background(), id, client.ContainerRemoveOptions{Force: true}); err != nil &&
		!cerrdefs.IsNotFound(err) {
		return fmt.Errorf("removing backend container %.12s: %w", id, err)
	}
	return nil
}

// healthy checks the server once; detail says what the check got when it is not healthy.
func (p *Persistent) healthy(ctx context.Context) (ok bool, detail string) {
	if p.opts.HealthURL != "" {
		url := strings.ReplaceAll(p.opts.HealthURL, "{host}", p.Host())
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return false, err.Error()
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false, err.Error()
		}
		defer resp.Body.Close()
		if resp.StatusCode/100 == 2 {
			return true, ""
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, healthOutput))
		return false, fmt.Sprintf("GET %s: %s: %s", url, resp.Status, body)
	}
	if len(p.opts.HealthCommand) > 0 {
		code, out, err := p.exec(ctx, p.opts.HealthCommand)
		switch {
		case err != nil:
			return false, fmt.Sprintf("health command %q: %v", p.opts.HealthCommand, err)
		case code != 0:
			return false, fmt.Sprintf("health command %q exited %d:\n%s", p.opts.HealthCommand, code, out)
		}
		return true, ""
	}
	return true, ""
}

// healthOutput is how much of a failing health check's output is kept (its end).
const healthOutput = 4 << 10

// exec runs cmd in the container to completion and returns its exit code and the end of its output: stdout's,
// then stderr's (the order the two interleaved in varies from one execution to the next).
func (p *Persistent) exec(ctx context.Context, cmd []string) (int, []byte, error) {
	ex, err := p.d.cli.ExecCreate(ctx, p.ID(), client.ExecCreateOptions{Cmd: cmd, AttachStdout: true, AttachStderr: true})
	if err != nil {
		return 0, nil, err
	}
	att, err := p.d.cli.ExecAttach(ctx, ex.ID, client.ExecAttachOptions{})
	if err != nil {
		return 0, nil, err
	}
	stdout, stderr := &tail{max: healthOutput}, &tail{max: healthOutput}
	_, err = stdcopy.StdCopy(stdout, stderr, att.Reader)
	att.Close()
	out := append(stdout.b, stderr.b...)
	if err != nil {
		return 0, out, fmt.Errorf("reading its output: %w", err)
	}
	ins, err := p.d.cli.ExecInspect(ctx, ex.ID, client.ExecInspectOptions{})
	return ins.ExitCode, out, err
}

// tail keeps the last max bytes written to it.
type tail struct {
	b   []byte
	max int
}

func (t *tail) Write(b []byte) (int, error) {
	t.b = append(t.b, b...)
	if len(t.b) > t.max {
		t.b = append(t.b[:0], t.b[len(t.b)-t.max:]...)
	}
	return len(b), nil
}

// healthLog writes the failing checks of a start-up to a file (HealthLog in its run directory): each different
// outcome once (its output indented under it), then how often it repeated, so a server that never became healthy
// can be diagnosed.
type healthLog struct {
	f      *os.File
	last   string
	repeat int
}

// HealthLog is the file in a start-up's run directory that keeps its failing health checks.
const HealthLog = "health.log"

func openHealthLog(runDir string) *healthLog {
	if runDir == "" {
		return &healthLog{}
	}
	f, err := os.Create(filepath.Join(runDir, HealthLog))
	if err != nil {
		return &healthLog{}
	}
	return &healthLog{f: f}
}

func (h *healthLog) add(detail string) {
	if h.f == nil {
		return
	}
	if detail == h.last {
		h.repeat++
		return
	}
	h.flush()
	h.last = detail
	// One entry: its time and first line, the output after it indented.
	fmt.Fprintf(h.f, "%s %s\n", time.Now().UTC().Format(time.RFC3339Nano),
		strings.ReplaceAll(strings.TrimRight(detail, "\n"), "\n", "\n    "))
}

func (h *healthLog) flush() {
	if h.repeat > 0 {
		fmt.Fprintf(h.f, "%s (the same %d more times)\n", time.Now().UTC().Format(time.RFC3339Nano), h.repeat)
		h.repeat = 0
	}
}

func (h *healthLog) close() {
	if h.f == nil {
		return
	}
	h.flush()
	h.f.Close()
	h.f = nil
}

// path is the log's file name ("" when it could not be written).
func (h *healthLog) path() string {
	if h.f == nil {
		return ""
	}
	return h.f.Name()
}

// oneLine puts a health check's outcome on one line for an error message: its first line, then the end of the
// output after it, lines joined by " | ".
func oneLine(detail string) string {
	head, out, _ := strings.Cut(strings.TrimSpace(detail), "\n")
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	rest := strings.Join(lines, " | ")
	const max = 300
	if len(rest) > max {
		rest = "…" + strings.ToValidUTF8(rest[len(rest)-max:], "")
	}
	if rest == "" {
		return head
	}
	return head + " " + rest
}

// StartupBackend starts the container as a workload that "exits" 0 once the server is healthy: bracketing it
// like any run measures the model load once, apart from the runs.
func (p *Persistent) StartupBackend() Backend { return &startupBackend{p: p} }

type startupBackend struct{ p *Persistent }

func (b *startupBackend) Name() string                        { return "docker-persistent" }
func (b *startupBackend) Preflight(ctx context.Context) error { return b.p.d.Preflight(ctx) }

func (b *startupBackend) Start(ctx context.Context, spec Spec) (Workload, error) {
	p := b.p
	if p.ID() != "" {
		return nil, errors.New("backend container already running")
	}
	d := p.d
	cfg := &container.Config{Image: d.opts.Image, Env: d.workloadEnv(append(append([]string{}, d.opts.Env...), spec.Env...)),
		Labels: d.labels(spec)}
	if len(p.opts.Command) > 0 {
		cfg.Cmd = p.opts.Command
	}
	if len(d.opts.Entrypoint) > 0 {
		cfg.Entrypoint = d.opts.Entrypoint
	}
	host := &container.HostConfig{Binds: append([]string{}, d.opts.Volumes...)}
	if p.opts.ResultsHost != "" {
		if err := os.MkdirAll(p.opts.ResultsHost, 0o755); err != nil {
			return nil, fmt.Errorf("results directory for the backend container: %w", err)
		}
		host.Binds = append(host.Binds, p.opts.ResultsHost+":"+ContainerResultsDir)
	}
	if d.opts.RequestGPUs {
		host.Resources.DeviceRequests = []container.DeviceRequest{{Driver: "nvidia", DeviceIDs: spec.GPUs,
			Capabilities: [][]string{{"gpu"}}}}
	}
	w := &startupWorkload{dockerWorkload: dockerWorkload{d: d, lines: make(chan Line, 1024), logsDone: make(chan struct{}),
		c: manifest.Container{Name: d.opts.Name}, stopLogs: func() {}}, p: p}
	created, err := d.cli.ContainerCreate(ctx, client.ContainerCreateOptions{Config: cfg, HostConfig: host, Name: d.opts.Name})
	if err != nil {
		w.noOutput()
		return w, fmt.Errorf("creating backend container%s from %s: %w", named(d.opts.Name), d.opts.Image, d.engineErr(err))
	}
	w.id = created.ID
	p.mu.Lock()
	p.id = created.ID
	p.mu.Unlock()
	fail := func(err error) (Workload, error) {
		w.noOutput()
		p.Remove(0)
		return w, err
	}
	if _, err := d.cli.ContainerStart(ctx, created.ID, client.ContainerStartOptions{}); err != nil {
		return fail(fmt.Errorf("starting backend container %s: %w", w.label(), d.engineErr(err)))
	}
	g, err := d.opts.Watchdog.watch(spec.RunDir, containerArgs(created.ID)...)
	if err != nil {
		return fail(err)
	}
	p.mu.Lock()
	p.guard = g
	p.mu.Unlock()
	ins, err := d.cli.ContainerInspect(ctx, created.ID, client.ContainerInspectOptions{})
	if err != nil {
		return fail(fmt.Errorf("inspecting backend container %s: %w", w.label(), d.engineErr(err)))
	}
	w.record(ins.Container)
	addr := "127.0.0.1"
	if ns := ins.Container.NetworkSettings; ns != nil {
		for _, n := range ns.Networks {
			if n != nil && n.IPAddress.IsValid() {
				addr = n.IPAddress.String()
				break
			}
		}
	}
	p.mu.Lock()
	p.host, p.name = addr, w.c.Name
	p.mu.Unlock()
	lctx, stopLogs := context.WithCancel(context.Background())
	logs, err := d.cli.ContainerLogs(lctx, created.ID, client.ContainerLogsOptions{ShowStdout: true, ShowStderr: true,
		Follow: true, Timestamps: true})
	if err != nil {
		stopLogs()
		return fail(fmt.Errorf("following backend container logs: %w", d.engineErr(err)))
	}
	w.stopLogs, w.health = stopLogs, openHealthLog(spec.RunDir)
	go w.follow(logs)
	return w, nil
}

type startupWorkload struct {
	dockerWorkload
	p      *Persistent
	health *healthLog
	failed bool
}

// Wait returns once the server is healthy (exit 0), or when the container exits before that (its exit code, or
// 1 for a container that exited 0 without ever being healthy), or when it is not healthy in time; then the error
// says what the last health check got (every failing check is in the start-up's health.log).
func (w *startupWorkload) Wait(ctx context.Context) (Exit, error) {
	defer w.stopLogs() // the server's later output is not this run's
	defer w.health.close()
	started := time.Now()
	deadline := time.After(w.p.opts.HealthTimeout)
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	last := "no health check answered yet"
	why := func(format string, a ...any) error {
		w.failed = true
		msg := fmt.Sprintf(format, a...) + ": last health check: " + oneLine(last)
		if p := w.health.path(); p != "" {
			msg += " (every failing check in " + p + ")"
		}
		return errors.New(msg)
	}
	for {
		ins, err := w.d.cli.ContainerInspect(ctx, w.id, client.ContainerInspectOptions{})
		if err != nil {
			w.failed = true
			return Exit{}, fmt.Errorf("inspecting backend container %s: %w", w.label(), w.d.engineErr(err))
		}
		w.record(ins.Container)
		if st := ins.Container.State; st != nil && !st.Running {
			code := st.ExitCode
			if code == 0 {
				code = 1
			}
			return Exit{Code: code, OOMKilled: st.OOMKilled, StartedAt: started, FinishedAt: time.Now()},
				why("backend container %s exited (code %d) before it was healthy", w.label(), st.ExitCode)
		}
		ok, detail := w.p.healthy(ctx)
		if ok {
			return Exit{StartedAt: started, FinishedAt: time.Now()}, nil
		}
		last = detail
		w.health.add(detail)
		select {
		case <-ctx.Done():
			return Exit{}, ctx.Err()
		case <-deadline:
			return Exit{Code: 1, StartedAt: started, FinishedAt: time.Now()},
				why("backend container %s not healthy after %s", w.label(), w.p.opts.HealthTimeout)
		case <-tick.C:
		}
	}
}

// Stop stops the server (start-up interrupted or timed out): it must not run on unmeasured.
func (w *startupWorkload) Stop(grace time.Duration) error { return w.p.Remove(grace) }

// Cleanup records the container: it keeps running for the runs, unless its start-up failed (then it is removed
// here).
func (w *startupWorkload) Cleanup(m *manifest.Manifest) error {
	var err error
	if w.failed {
		err = w.p.Remove(5 * time.Second)
	}
	keep := w.d.opts.Keep
	w.d.opts.Keep = true
	w.c.Kept = w.p.ID() != ""
	if cerr := w.dockerWorkload.Cleanup(m); err == nil {
		err = cerr
	}
	w.d.opts.Keep = keep
	return err
}

// ExecBackend runs each workload inside the persistent container (docker exec through the Engine API).
func (p *Persistent) ExecBackend() Backend { return &execBackend{p: p} }

type execBackend struct{ p *Persistent }

func (b *execBackend) Name() string { return "docker-exec" }

// MarkerHost: workloads in the container reach the marker server on the bridge gateway.
func (b *execBackend) MarkerHost(ctx context.Context) (string, error) { return b.p.d.MarkerHost(ctx) }

func (b *startupBackend) MarkerHost(ctx context.Context) (string, error) {
	return b.p.d.MarkerHost(ctx)
}

func (b *execBackend) Preflight(ctx context.Context) error {
	id := b.p.ID()
	if id == "" {
		return errors.New("backend container is not running")
	}
	ins, err := b.p.d.cli.ContainerInspect(ctx, id, client.ContainerInspectOptions{})
	if err != nil {
		return fmt.Errorf("backend container %.12s: %w", id, err)
	}
	if st := ins.Container.State; st == nil || !st.Running {
		return fmt.Errorf("backend container %.12s is no longer running", id)
	}
	return nil
}

func (b *execBackend) Start(ctx context.Context, spec Spec) (Workload, error) {
	p := b.p
	resDir := ContainerResultsDir + "/" + spec.RunID
	if p.opts.ResultsHost != "" {
		if err := os.MkdirAll(filepath.Join(p.opts.ResultsHost, spec.RunID), 0o777); err != nil {
			return nil, fmt.Errorf("results directory for run %s: %w", spec.RunID, err)
		}
	}
	env := append(append([]string{}, spec.Env...), "LEM_RESULTS_DIR="+resDir)
	if !setsEnv(p.d.opts.Env, "PYTHONUNBUFFERED") { // the container's own environment, then the image's
		env = p.d.workloadEnv(env)
	}
	ex, err := p.d.cli.ExecCreate(ctx, p.ID(), client.ExecCreateOptions{Cmd: spec.Command, Env: env,
		AttachStdout: true, AttachStderr: true})
	if err != nil {
		return nil, fmt.Errorf("creating exec in backend container %.12s: %w", p.ID(), err)
	}
	att, err := p.d.cli.ExecAttach(ctx, ex.ID, client.ExecAttachOptions{})
	if err != nil {
		return nil, fmt.Errorf("starting exec in backend container %.12s: %w", p.ID(), err)
	}
	w := &execWorkload{p: p, execID: ex.ID, resDir: resDir, hostDir: spec.ResultsDir, lines: make(chan Line, 1024),
		done: make(chan struct{}), started: time.Now()}
	go w.follow(att.Reader, func() error { att.Close(); return nil })
	// This run's own watchdog: if lem-run dies, the container (so the exec'd workload) is stopped and this run,
	// not only the start-up, is marked crashed.
	if w.guard, err = p.d.opts.Watchdog.watch(spec.RunDir, containerArgs(p.ID())...); err != nil {
		w.Stop(time.Second)
		go func() {
			for range w.lines {
			}
		}()
		return nil, err
	}
	return w, nil
}

type execWorkload struct {
	p               *Persistent
	execID          string
	resDir, hostDir string
	lines           chan Line
	done            chan struct{}
	started         time.Time
	guard           *guard
}

// follow reads the exec's output. An exec's attach stream carries no timestamps (unlike a container's logs), so
// its lines, and the markers among them, are stamped when read.
func (w *execWorkload) follow(r io.Reader, closeConn func() error) {
	defer close(w.done)
	defer close(w.lines)
	defer closeConn()
	demux(r, w.lines, false, time.Now)
}

func (w *execWorkload) Lines() <-chan Line { return w.lines }

func (w *execWorkload) Wait(ctx context.Context) (Exit, error) {
	select {
	case <-w.done:
	case <-ctx.Done():
		return Exit{}, ctx.Err()
	}
	for {
		ins, err := w.p.d.cli.ExecInspect(context.Background(), w.execID, client.ExecInspectOptions{})
		if err != nil {
			if !w.p.d.answers(context.Background()) {
				return Exit{}, fmt.Errorf("%w: inspecting exec %.12s in backend container %.12s: %v; the Docker daemon at %s no longer answers",
					engineGoneErr("lost"), w.execID, w.p.ID(), err, w.p.d.cli.DaemonHost())
			}
			return Exit{}, fmt.Errorf("inspecting exec %.12s: %w", w.execID, err)
		}
		if !ins.Running {
			return Exit{Code: ins.ExitCode, StartedAt: w.started, FinishedAt: time.Now()}, nil
		}
		select {
		case <-ctx.Done():
			return Exit{}, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Stop ends the exec'd process. The Engine API cannot signal an exec, so lem signals its host PID (local Engine,
// enough privilege); failing that, the container is restarted, which ends every process in it.
func (w *execWorkload) Stop(grace time.Duration) error {
	ins, err := w.p.d.cli.ExecInspect(context.Background(), w.execID, client.ExecInspectOptions{})
	if err == nil && !ins.Running {
		return nil
	}
	local := strings.HasPrefix(w.p.d.cli.DaemonHost(), "unix://") // a remote Engine's PIDs are not ours to signal
	if err == nil && local && ins.PID > 0 && syscall.Kill(ins.PID, syscall.SIGTERM) == nil {
		select {
		case <-w.done:
			return nil
		case <-time.After(grace):
			syscall.Kill(ins.PID, syscall.SIGKILL)
			return nil
		}
	}
	secs := int(grace.Seconds())
	if _, err := w.p.d.cli.ContainerRestart(context.Background(), w.p.ID(), client.ContainerRestartOptions{Timeout: &secs}); err != nil {
		return fmt.Errorf("stopping exec %.12s by restarting backend container: %w", w.execID, err)
	}
	return nil
}

// Cleanup copies the run's results out of the container into the run directory and records the container.
func (w *execWorkload) Cleanup(m *manifest.Manifest) error {
	w.guard.release()
	img := w.p.d.image
	m.Image = &img
	w.p.mu.Lock()
	m.Container = &manifest.Container{ID: w.p.id, Name: w.p.name, Kept: true}
	w.p.mu.Unlock()
	res, err := w.p.d.cli.CopyFromContainer(context.Background(), w.p.ID(), client.CopyFromContainerOptions{SourcePath: w.resDir})
	if err != nil {
		if cerrdefs.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("copying results out of backend container: %w", err)
	}
	defer res.Content.Close()
	if err := untar(res.Content, w.hostDir); err != nil {
		return fmt.Errorf("copying results out of backend container: %w", err)
	}
	if w.p.opts.ResultsHost != "" {
		os.RemoveAll(filepath.Join(w.p.opts.ResultsHost, m.RunID)) // copied; the mount's copy is a duplicate
	}
	return nil
}

// untar extracts the archive the Engine returns for a directory (entries prefixed with its base name) into dst.
func untar(r io.Reader, dst string) error {
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		_, rel, _ := strings.Cut(filepath.ToSlash(h.Name), "/")
		if rel == "" || strings.Contains(rel, "..") {
			continue
		}
		path := filepath.Join(dst, filepath.FromSlash(rel))
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(path, 0o755); err != nil {
				return err
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				return err
			}
			f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
			if err != nil {
				return err
			}
			_, err = io.Copy(f, tr)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
		}
	}
}
