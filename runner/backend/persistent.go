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

// healthy checks the server once.
func (p *Persistent) healthy(ctx context.Context) bool {
	if p.opts.HealthURL != "" {
		url := strings.ReplaceAll(p.opts.HealthURL, "{host}", p.Host())
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return false
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode/100 == 2
	}
	if len(p.opts.HealthCommand) > 0 {
		code, err := p.exec(ctx, p.opts.HealthCommand)
		return err == nil && code == 0
	}
	return true
}

// exec runs cmd in the container to completion, discarding its output.
func (p *Persistent) exec(ctx context.Context, cmd []string) (int, error) {
	ex, err := p.d.cli.ExecCreate(ctx, p.ID(), client.ExecCreateOptions{Cmd: cmd, AttachStdout: true, AttachStderr: true})
	if err != nil {
		return 0, err
	}
	att, err := p.d.cli.ExecAttach(ctx, ex.ID, client.ExecAttachOptions{})
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, att.Reader)
	att.Close()
	ins, err := p.d.cli.ExecInspect(ctx, ex.ID, client.ExecInspectOptions{})
	return ins.ExitCode, err
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
	cfg := &container.Config{Image: d.opts.Image, Env: append(append([]string{}, d.opts.Env...), spec.Env...),
		Labels: runnerLabels(spec)}
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
	created, err := d.cli.ContainerCreate(ctx, client.ContainerCreateOptions{Config: cfg, HostConfig: host, Name: d.opts.Name})
	if err != nil {
		return nil, fmt.Errorf("creating backend container from %s: %w", d.opts.Image, err)
	}
	p.mu.Lock()
	p.id = created.ID
	p.mu.Unlock()
	if _, err := d.cli.ContainerStart(ctx, created.ID, client.ContainerStartOptions{}); err != nil {
		p.Remove(0)
		return nil, fmt.Errorf("starting backend container: %w", err)
	}
	g, err := d.opts.Watchdog.watch(spec.RunDir, containerArgs(created.ID)...)
	if err != nil {
		p.Remove(0)
		return nil, err
	}
	p.mu.Lock()
	p.guard = g
	p.mu.Unlock()
	ins, err := d.cli.ContainerInspect(ctx, created.ID, client.ContainerInspectOptions{})
	if err != nil {
		p.Remove(0)
		return nil, fmt.Errorf("inspecting backend container: %w", err)
	}
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
	p.host = addr
	p.mu.Unlock()
	lctx, stopLogs := context.WithCancel(context.Background())
	logs, err := d.cli.ContainerLogs(lctx, created.ID, client.ContainerLogsOptions{ShowStdout: true, ShowStderr: true,
		Follow: true, Timestamps: true})
	if err != nil {
		stopLogs()
		p.Remove(0)
		return nil, fmt.Errorf("following backend container logs: %w", err)
	}
	w := &startupWorkload{dockerWorkload: dockerWorkload{d: d, id: created.ID, lines: make(chan Line, 1024),
		logsDone: make(chan struct{})}, p: p, stopLogs: stopLogs}
	go w.follow(logs)
	return w, nil
}

type startupWorkload struct {
	dockerWorkload
	p        *Persistent
	stopLogs context.CancelFunc
}

// Wait returns once the server is healthy (exit 0), or when the container exits before that (its exit code, or
// 1 for a container that exited 0 without ever being healthy).
func (w *startupWorkload) Wait(ctx context.Context) (Exit, error) {
	defer w.stopLogs() // the server's later output is not this run's
	started := time.Now()
	deadline := time.After(w.p.opts.HealthTimeout)
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		ins, err := w.d.cli.ContainerInspect(ctx, w.id, client.ContainerInspectOptions{})
		if err != nil {
			return Exit{}, fmt.Errorf("inspecting backend container %.12s: %w", w.id, err)
		}
		w.info, w.inspectd = ins.Container, true
		if st := ins.Container.State; st != nil && !st.Running {
			code := st.ExitCode
			if code == 0 {
				code = 1
			}
			return Exit{Code: code, OOMKilled: st.OOMKilled, StartedAt: started, FinishedAt: time.Now()},
				fmt.Errorf("backend container exited (code %d) before it was healthy", st.ExitCode)
		}
		if w.p.healthy(ctx) {
			return Exit{StartedAt: started, FinishedAt: time.Now()}, nil
		}
		select {
		case <-ctx.Done():
			return Exit{}, ctx.Err()
		case <-deadline:
			return Exit{Code: 1, StartedAt: started, FinishedAt: time.Now()},
				fmt.Errorf("backend container not healthy after %s", w.p.opts.HealthTimeout)
		case <-tick.C:
		}
	}
}

// Stop stops the server (start-up interrupted or timed out): it must not run on unmeasured.
func (w *startupWorkload) Stop(grace time.Duration) error { return w.p.Remove(grace) }

// Cleanup records the container; it keeps running for the runs.
func (w *startupWorkload) Cleanup(m *manifest.Manifest) error {
	keep := w.d.opts.Keep
	w.d.opts.Keep = true
	err := w.dockerWorkload.Cleanup(m)
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
	return w, nil
}

type execWorkload struct {
	p               *Persistent
	execID          string
	resDir, hostDir string
	lines           chan Line
	done            chan struct{}
	started         time.Time
}

// follow reads the exec's output (no runtime timestamps on an attach stream: lines are stamped when read).
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
	img := w.p.d.image
	m.Image = &img
	m.Container = &manifest.Container{ID: w.p.ID(), Kept: true}
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
