package backend

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/lem-energy/lem/internal/manifest"
	"github.com/lem-energy/lem/internal/meta"
)

// ContainerResultsDir is where the run directory's results/ is mounted inside the container.
const ContainerResultsDir = "/lem/results"

// DockerOptions configure the container.
type DockerOptions struct {
	Image      string
	Entrypoint []string // overrides the image's entrypoint
	Env        []string
	Volumes    []string // SRC:DST[:ro]
	Name       string
	Keep       bool
	Pull       bool
	// RequestGPUs asks the NVIDIA runtime for the selected GPUs (off when replaying on a host without GPUs).
	RequestGPUs bool
	// Labels are added to the container's (a campaign's name).
	Labels map[string]string
	// Watchdog stops the container if lem-run dies (see Watchdog).
	Watchdog Watchdog
	// TTY gives the container a pseudo-terminal, so programs that buffer output written to a pipe write each
	// line as they print it. Standard error then arrives merged into standard output.
	TTY bool
}

// Docker runs the workload in a container through the Docker Engine API.
type Docker struct {
	opts     DockerOptions
	cli      *client.Client
	image    manifest.Image
	imageEnv []string // the image's own environment
}

var _ Backend = (*Docker)(nil)

// NewDocker connects to the Engine named by the environment (DOCKER_HOST, or the local socket).
func NewDocker(opts DockerOptions) (*Docker, error) {
	if opts.Image == "" {
		return nil, errors.New("docker backend: no image")
	}
	cli, err := client.New(client.FromEnv)
	if err != nil {
		return nil, fmt.Errorf("docker client: %w", err)
	}
	return &Docker{opts: opts, cli: cli}, nil
}

// Name is "docker".
func (d *Docker) Name() string { return "docker" }

// Close releases the client.
func (d *Docker) Close() error { return d.cli.Close() }

// Preflight checks the Engine answers, the image is present (pulling it only with --pull) and the container
// name asked for is free, and stops containers an earlier lem-run left behind when it died.
func (d *Docker) Preflight(ctx context.Context) error {
	if _, err := d.cli.Ping(ctx, client.PingOptions{NegotiateAPIVersion: true}); err != nil {
		return fmt.Errorf("Docker Engine not reachable at %s: %w (is dockerd running, and may this user use its socket?)",
			d.cli.DaemonHost(), err)
	}
	if err := d.ReapOrphans(ctx); err != nil {
		return err
	}
	if err := d.nameFree(ctx); err != nil {
		return err
	}
	img, err := d.cli.ImageInspect(ctx, d.opts.Image)
	if cerrdefs.IsNotFound(err) && d.opts.Pull {
		rc, perr := d.cli.ImagePull(ctx, d.opts.Image, client.ImagePullOptions{})
		if perr != nil {
			return fmt.Errorf("pulling image %s: %w", d.opts.Image, perr)
		}
		_, perr = io.Copy(io.Discard, rc)
		rc.Close()
		if perr != nil {
			return fmt.Errorf("pulling image %s: %w", d.opts.Image, perr)
		}
		img, err = d.cli.ImageInspect(ctx, d.opts.Image)
	}
	if cerrdefs.IsNotFound(err) {
		return fmt.Errorf("image %s is not present locally: pull or build it first, or pass --pull", d.opts.Image)
	}
	if err != nil {
		return fmt.Errorf("inspecting image %s: %w", d.opts.Image, err)
	}
	d.image = manifest.Image{Name: d.opts.Image, ID: img.ID, Digests: img.RepoDigests}
	if img.Config != nil {
		d.imageEnv = img.Config.Env
	}
	return nil
}

// Check refuses, before anything is measured, a run with no command of an image that has no entrypoint or
// command of its own (the Engine would refuse to create its container). An image not present yet is Preflight's
// to report.
func (d *Docker) Check(command []string) error {
	if len(command) > 0 || len(d.opts.Entrypoint) > 0 {
		return nil
	}
	img, err := d.cli.ImageInspect(context.Background(), d.opts.Image)
	if err != nil || img.Config == nil {
		return nil
	}
	if len(img.Config.Entrypoint) == 0 && len(img.Config.Cmd) == 0 {
		return fmt.Errorf("image %s has no entrypoint or command: give the command to run after --", d.opts.Image)
	}
	return nil
}

// MarkerHost is the address on which the runner's marker server must listen for the container to reach it:
// the gateway of Docker's default bridge network.
func (d *Docker) MarkerHost(ctx context.Context) (string, error) {
	n, err := d.cli.NetworkInspect(ctx, "bridge", client.NetworkInspectOptions{})
	if err != nil {
		return "", fmt.Errorf("inspecting Docker's bridge network: %w", err)
	}
	for _, c := range n.Network.IPAM.Config {
		if c.Gateway.IsValid() && c.Gateway.Is4() {
			return c.Gateway.String(), nil
		}
		// Older Engines (20.10) leave the default bridge's gateway out: it is the subnet's first address.
		if c.Subnet.IsValid() && c.Subnet.Addr().Is4() {
			return c.Subnet.Masked().Addr().Next().String(), nil
		}
	}
	return "", errors.New("Docker's bridge network has no IPv4 gateway for the marker server")
}

// workloadEnv is a container's environment with PYTHONUNBUFFERED=1 added (see Unbuffered), unless env or the
// image's own environment sets it.
func (d *Docker) workloadEnv(env []string) []string {
	if setsEnv(d.imageEnv, "PYTHONUNBUFFERED") {
		return env
	}
	return Unbuffered(env)
}

// Start creates and starts the container and follows its logs with the runtime's timestamps. On error the
// returned workload, if any, is what was created: its Cleanup records it in the manifest and removes it.
func (d *Docker) Start(ctx context.Context, spec Spec) (Workload, error) {
	results, err := filepath.Abs(spec.ResultsDir) // the Engine binds host paths only when they are absolute
	if err != nil {
		return nil, fmt.Errorf("results directory: %w", err)
	}
	env := d.workloadEnv(append(append([]string{}, d.opts.Env...), append(spec.Env, "LEM_RESULTS_DIR="+ContainerResultsDir)...))
	cfg := &container.Config{Image: d.opts.Image, Env: env, Labels: d.labels(spec), Tty: d.opts.TTY}
	if len(spec.Command) > 0 {
		cfg.Cmd = spec.Command
	}
	if len(d.opts.Entrypoint) > 0 {
		cfg.Entrypoint = d.opts.Entrypoint
	}
	host := &container.HostConfig{Binds: append(append([]string{}, d.opts.Volumes...), results+":"+ContainerResultsDir)}
	if d.opts.RequestGPUs {
		host.Resources.DeviceRequests = []container.DeviceRequest{{Driver: "nvidia", DeviceIDs: spec.GPUs,
			Capabilities: [][]string{{"gpu"}}}}
	}
	w := &dockerWorkload{d: d, lines: make(chan Line, 1024), logsDone: make(chan struct{}), tty: d.opts.TTY,
		c: manifest.Container{Name: d.opts.Name, Kept: d.opts.Keep}}
	created, err := d.cli.ContainerCreate(ctx, client.ContainerCreateOptions{Config: cfg, HostConfig: host, Name: d.opts.Name})
	if err != nil {
		w.noOutput()
		return w, fmt.Errorf("creating container%s from %s: %w", named(d.opts.Name), d.opts.Image, d.engineErr(err))
	}
	w.id = created.ID
	if _, err := d.cli.ContainerStart(ctx, created.ID, client.ContainerStartOptions{}); err != nil {
		w.noOutput()
		if ins, ierr := d.cli.ContainerInspect(ctx, created.ID, client.ContainerInspectOptions{}); ierr == nil {
			w.record(ins.Container) // its name; no exit code, as it never ran
		}
		return w, fmt.Errorf("starting container %s from %s: %w", w.label(), d.opts.Image, d.engineErr(err))
	}
	if ins, err := d.cli.ContainerInspect(ctx, created.ID, client.ContainerInspectOptions{}); err == nil {
		w.record(ins.Container)
		if st := ins.Container.State; st != nil {
			w.proc = hostProcess(st.Pid, created.ID)
		}
	}
	lctx, stopLogs := context.WithCancel(context.Background())
	logs, err := d.cli.ContainerLogs(lctx, created.ID, client.ContainerLogsOptions{ShowStdout: true, ShowStderr: true,
		Follow: true, Timestamps: true})
	if err != nil {
		stopLogs()
		w.Stop(time.Second)
		w.noOutput()
		return w, fmt.Errorf("following the logs of container %s: %w", w.label(), d.engineErr(err))
	}
	w.stopLogs = stopLogs
	go w.follow(logs)
	if w.guard, err = d.opts.Watchdog.watch(spec.RunDir, containerArgs(created.ID)...); err != nil {
		w.Stop(time.Second)
		go func() { // nobody reads a workload that failed to start
			for range w.lines {
			}
		}()
		return w, err
	}
	return w, nil
}

type dockerWorkload struct {
	d        *Docker
	id       string
	lines    chan Line
	logsDone chan struct{}
	stopLogs context.CancelFunc
	guard    *guard
	// c is what the Engine said about the container so far (its exit code once it reported one).
	c manifest.Container
	// proc is the container's first process on this host (nil when the Engine is elsewhere): lem-run stops it
	// itself when the Engine is gone, as the orphaned runtime would let it run on.
	proc *os.Process
	// lost is set when the Engine stopped or was lost during the run.
	lost bool
	tty  bool // the container has a terminal: its log stream is raw, not multiplexed
}

// noOutput ends the output of a workload that never started.
func (w *dockerWorkload) noOutput() {
	close(w.lines)
	close(w.logsDone)
}

// label names the container in messages: its name and short id.
func (w *dockerWorkload) label() string {
	switch {
	case w.c.Name != "" && w.id != "":
		return fmt.Sprintf("%s (%.12s)", w.c.Name, w.id)
	case w.id != "":
		return fmt.Sprintf("%.12s", w.id)
	}
	return w.c.Name
}

// named is " NAME" for a container name asked for, "" for none.
func named(name string) string {
	if name == "" {
		return ""
	}
	return " " + name
}

// record keeps what an inspect says about the container; its exit code only once it has exited.
func (w *dockerWorkload) record(ins container.InspectResponse) {
	w.c.Name = strings.TrimPrefix(ins.Name, "/")
	st := ins.State
	if st == nil {
		return
	}
	w.c.OOMKilled = st.OOMKilled
	w.c.StartedAt, _ = time.Parse(time.RFC3339Nano, st.StartedAt)
	if !st.Running && !st.Restarting && !w.c.StartedAt.IsZero() {
		code := st.ExitCode
		w.c.ExitCode = &code
		w.c.FinishedAt, _ = time.Parse(time.RFC3339Nano, st.FinishedAt)
	}
}

// follow demultiplexes the log stream into lines stamped with the runtime's timestamps.
func (w *dockerWorkload) follow(logs io.ReadCloser) {
	defer close(w.logsDone)
	defer close(w.lines)
	defer logs.Close()
	if w.tty {
		rawLines(logs, w.lines, time.Now)
		return
	}
	demux(logs, w.lines, true, time.Now)
}

// rawLines splits a terminal container's log stream: one log message per line, each prefixed by its timestamp,
// ending in the terminal's \r\n. A line longer than the Engine's 16 KB messages arrives in pieces whose later
// timestamps stay in the text: with --pty, keep marker lines short.
func rawLines(r io.Reader, lines chan<- Line, now func() time.Time) error {
	return splitLines(r, func(text []byte, partial bool) {
		at := time.Time{}
		if ts, rest, ok := bytes.Cut(text, []byte(" ")); ok {
			if t, err := time.Parse(time.RFC3339Nano, string(ts)); err == nil {
				text, at = rest, t
			}
		}
		if at.IsZero() {
			at = now()
		}
		lines <- Line{Time: at, Text: string(bytes.TrimSuffix(text, []byte("\r"))), Partial: partial}
	})
}

// demux splits the Engine's multiplexed log stream into lines until it ends. Each frame of the stream is one log
// message, prefixed by stamp's timestamp when the logs were asked for with timestamps (stamp nil: stamped by now).
// The Engine splits lines longer than 16 KB into several messages, only the last ending in a newline: the
// continuations are joined to their line (their timestamps dropped), and lines longer than MaxChunk are passed on
// in chunks.
func demux(r io.Reader, lines chan<- Line, timestamps bool, now func() time.Time) error {
	type stream struct {
		buf []byte
		at  time.Time // the line's first message's timestamp
	}
	var streams [3]stream
	hdr := make([]byte, 8)
	var payload []byte
	flush := func(st *stream, stderr, partial bool) {
		lines <- Line{Time: st.at, Stderr: stderr, Text: string(st.buf), Partial: partial}
		st.buf = st.buf[:0]
	}
	for {
		if _, err := io.ReadFull(r, hdr); err != nil {
			for i := 1; i <= 2; i++ {
				if len(streams[i].buf) > 0 {
					flush(&streams[i], i == 2, false)
				}
			}
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("container log stream: %w", err)
		}
		kind, size := hdr[0], binary.BigEndian.Uint32(hdr[4:])
		if kind != 1 && kind != 2 {
			io.CopyN(io.Discard, r, int64(size)) // stdin echo or an unknown stream: not output
			continue
		}
		if cap(payload) < int(size) {
			payload = make([]byte, size)
		}
		payload = payload[:size]
		if _, err := io.ReadFull(r, payload); err != nil {
			for i := 1; i <= 2; i++ {
				if len(streams[i].buf) > 0 {
					flush(&streams[i], i == 2, false)
				}
			}
			return fmt.Errorf("container log stream: %w", err)
		}
		st, stderr := &streams[kind], kind == 2
		msg, at := payload, time.Time{}
		if timestamps {
			if ts, rest, ok := bytes.Cut(msg, []byte(" ")); ok {
				if t, err := time.Parse(time.RFC3339Nano, string(ts)); err == nil {
					msg, at = rest, t
				}
			}
		}
		if at.IsZero() {
			at = now()
		}
		for len(msg) > 0 {
			if len(st.buf) == 0 {
				st.at = at
			}
			i := bytes.IndexByte(msg, '\n')
			if i < 0 {
				st.buf = append(st.buf, msg...)
				msg = nil
			} else {
				st.buf = append(st.buf, msg[:i]...)
				msg = msg[i+1:]
			}
			for len(st.buf) > MaxChunk {
				rest := append([]byte(nil), st.buf[MaxChunk:]...)
				st.buf = st.buf[:MaxChunk]
				flush(st, stderr, true)
				st.buf = append(st.buf, rest...)
			}
			if i >= 0 {
				flush(st, stderr, false)
			}
		}
	}
}

func (w *dockerWorkload) Lines() <-chan Line { return w.lines }

// Wait waits for the container to exit. When the Engine goes away meanwhile — stopped (it stops its containers
// as it shuts down, and keeps answering on connections already open) or lost (killed: the wait ends with EOF,
// and the orphaned runtime lets the workload run on) — that is the error, with no exit code; lem-run stops the
// workload itself if it runs on this host.
func (w *dockerWorkload) Wait(ctx context.Context) (Exit, error) {
	res := w.d.cli.ContainerWait(ctx, w.id, client.ContainerWaitOptions{Condition: container.WaitConditionNotRunning})
	var werr error
	select {
	case <-res.Result:
	case werr = <-res.Error:
		if ctx.Err() != nil {
			return Exit{}, ctx.Err()
		}
	case <-ctx.Done():
		return Exit{}, ctx.Err()
	}
	if !w.d.answers(context.Background()) {
		return w.engineGone(werr)
	}
	if werr != nil {
		return Exit{}, fmt.Errorf("waiting for container %s: %w", w.label(), werr)
	}
	select {
	case <-w.logsDone:
	case <-time.After(5 * time.Second): // logs of a finished container end promptly; don't hang on a broken stream
	}
	ins, err := w.d.cli.ContainerInspect(context.Background(), w.id, client.ContainerInspectOptions{})
	if err != nil {
		if !w.d.answers(context.Background()) {
			return w.engineGone(err)
		}
		return Exit{}, fmt.Errorf("inspecting container %s: %w", w.label(), err)
	}
	w.record(ins.Container)
	ex := Exit{OOMKilled: w.c.OOMKilled, StartedAt: w.c.StartedAt, FinishedAt: w.c.FinishedAt}
	if w.c.ExitCode != nil {
		ex.Code = *w.c.ExitCode
	}
	return ex, nil
}

// engineGone ends a wait whose Engine went away (cause: the wait's error; nil when the wait ended and the Engine
// did not answer after), stopping the workload if it runs on this host.
func (w *dockerWorkload) engineGone(cause error) (Exit, error) {
	w.lost = true
	how := "stopped"
	detail := fmt.Sprintf("the Docker daemon at %s stopped container %s as it shut down and no longer answers",
		w.d.cli.DaemonHost(), w.label())
	if cause != nil {
		how = "lost"
		detail = fmt.Sprintf("waiting for container %s: %v; the Docker daemon at %s no longer answers", w.label(), cause,
			w.d.cli.DaemonHost())
	}
	switch ran, gone := w.stopProcess(w.d.grace()); {
	case w.proc == nil:
		detail += "; its processes could not be stopped from here (not on this host)"
	case ran && gone:
		detail += fmt.Sprintf("; lem-run stopped the workload (process %d)", w.proc.Pid)
	case ran:
		detail += fmt.Sprintf("; the workload (process %d) could not be stopped", w.proc.Pid)
	}
	select { // what the workload printed before is passed on; the stream ends with the Engine
	case <-w.logsDone:
	case <-time.After(2 * time.Second):
		w.stopLogs()
	}
	return Exit{StartedAt: w.c.StartedAt, FinishedAt: time.Now()}, fmt.Errorf("%w: %s", engineGoneErr(how), detail)
}

// ErrEngineGone marks a run during which the Docker Engine stopped or was lost.
var ErrEngineGone = errors.New("Docker Engine gone")

type engineGoneErr string

func (e engineGoneErr) Error() string        { return "Docker Engine " + string(e) + " during the run" }
func (e engineGoneErr) Is(target error) bool { return target == ErrEngineGone }

// answers says whether the Engine answers a ping on a new connection: after a graceful stop it still answers on
// the connections it had, and a killed one's socket may take a new connection before the kernel closes it.
func (d *Docker) answers(ctx context.Context) bool {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	conn, err := d.cli.Dialer()(ctx)
	if err != nil {
		return false
	}
	defer conn.Close()
	deadline, _ := ctx.Deadline()
	conn.SetDeadline(deadline)
	if _, err := io.WriteString(conn, "GET /_ping HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n"); err != nil {
		return false
	}
	status, err := bufio.NewReader(conn).ReadString('\n')
	return err == nil && strings.HasPrefix(status, "HTTP/1.") && strings.Contains(status, " 200 ")
}

// engineErr names the Engine in an error from it when it no longer answers.
func (d *Docker) engineErr(err error) error {
	if !d.answers(context.Background()) {
		return fmt.Errorf("%w (the Docker daemon at %s does not answer)", err, d.cli.DaemonHost())
	}
	return err
}

// grace is how long a stopped workload gets between SIGTERM and SIGKILL.
func (d *Docker) grace() time.Duration {
	if d.opts.Watchdog.Grace > 0 {
		return d.opts.Watchdog.Grace
	}
	return 10 * time.Second
}

// hostProcess is a handle (a pidfd, immune to PID reuse) on the container's first process, if it runs on this
// host: the PID the Engine reports is in the container's cgroup (not so for a remote Engine, or a rootless one
// in its own PID namespace).
func hostProcess(pid int, id string) *os.Process {
	if pid <= 0 {
		return nil
	}
	p, err := os.FindProcess(pid)
	if err != nil {
		return nil
	}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid)); err != nil || !bytes.Contains(b, []byte(id)) {
		p.Release()
		return nil
	}
	return p
}

// stopProcess ends the container's process itself (SIGTERM, SIGKILL after grace): ran says it still ran, gone
// that it no longer does.
func (w *dockerWorkload) stopProcess(grace time.Duration) (ran, gone bool) {
	p := w.proc
	if p == nil {
		return false, false
	}
	ended := func(within time.Duration) bool {
		deadline := time.Now().Add(within)
		for {
			if !running(p) {
				return true
			}
			if time.Now().After(deadline) {
				return false
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	if !running(p) {
		return false, true
	}
	p.Signal(syscall.SIGTERM)
	if ended(grace) {
		return true, true
	}
	p.Signal(syscall.SIGKILL)
	return true, ended(5 * time.Second)
}

// running says whether a process still runs: not gone, and not a zombie (whose parent, the runtime's shim, may
// be gone too and never reap it).
func running(p *os.Process) bool {
	if p.Signal(syscall.Signal(0)) != nil {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.Pid))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	return i < 0 || i+2 >= len(b) || b[i+2] != 'Z'
}

// Stop stops the container through the Engine, or, when the Engine is gone, its process on this host.
func (w *dockerWorkload) Stop(grace time.Duration) error {
	if w.id == "" {
		return nil
	}
	secs := int(grace.Seconds())
	_, err := w.d.cli.ContainerStop(context.Background(), w.id, client.ContainerStopOptions{Timeout: &secs})
	if err == nil || cerrdefs.IsNotFound(err) {
		return nil
	}
	if !w.d.answers(context.Background()) {
		if _, gone := w.stopProcess(grace); gone {
			return nil
		}
	}
	return fmt.Errorf("stopping container %.12s: %w", w.id, err) // (not its name: Wait may be recording it)
}

// Cleanup records the image and the container (whatever the Engine said about it, even if it never started or
// the Engine went away) and removes the container unless it is kept.
func (w *dockerWorkload) Cleanup(m *manifest.Manifest) error {
	w.guard.release()
	if w.proc != nil {
		w.proc.Release()
	}
	img := w.d.image
	if img.Name == "" {
		img.Name = w.d.opts.Image
	}
	m.Image = &img
	c := w.c
	c.ID = w.id
	m.Container = &c
	if w.id == "" || w.d.opts.Keep {
		return nil
	}
	if w.lost {
		return fmt.Errorf("container %s not removed: the Docker Engine is gone (the next lem-run on it removes the container)", w.label())
	}
	if _, err := w.d.cli.ContainerRemove(context.Background(), w.id, client.ContainerRemoveOptions{Force: true}); err != nil &&
		!cerrdefs.IsNotFound(err) {
		return fmt.Errorf("removing container %s: %w", w.label(), err)
	}
	return nil
}

// Labels on every container lem starts: the run, and the lem-run process and run directory it belongs to, so
// the next lem-run finds containers whose runner died; whether it is kept after its run; the campaign.
const (
	LabelRunID    = "lem.run_id"
	LabelRunner   = "lem.runner"
	LabelRunDir   = "lem.run_dir"
	LabelKeep     = "lem.keep"
	LabelCampaign = "lem.campaign"
)

// labels are the container's: the backend's own (a campaign's), the spec's, and lem's.
func (d *Docker) labels(spec Spec) map[string]string {
	l := map[string]string{}
	for k, v := range d.opts.Labels {
		l[k] = v
	}
	for k, v := range spec.Labels {
		l[k] = v
	}
	l[LabelRunner] = meta.Self().String()
	if spec.RunDir != "" {
		l[LabelRunDir] = spec.RunDir
		if abs, err := filepath.Abs(spec.RunDir); err == nil { // a later lem-run may run elsewhere
			l[LabelRunDir] = abs
		}
	}
	if d.opts.Keep {
		l[LabelKeep] = "true"
	}
	return l
}

// nameFree checks that the container name asked for is not taken (by a kept container, say): creating the
// container would fail after the baseline.
func (d *Docker) nameFree(ctx context.Context) error {
	if d.opts.Name == "" {
		return nil
	}
	res, err := d.cli.ContainerList(ctx, client.ContainerListOptions{All: true,
		Filters: make(client.Filters).Add("name", "^/"+regexp.QuoteMeta(d.opts.Name)+"$")})
	if err != nil {
		return fmt.Errorf("looking for containers named %s: %w", d.opts.Name, err)
	}
	if len(res.Items) == 0 {
		return nil
	}
	c := res.Items[0]
	owner := ""
	if id := c.Labels[LabelRunID]; id != "" {
		owner = ", of lem run " + id
		if dir := c.Labels[LabelRunDir]; dir != "" {
			owner += " in " + dir
		}
	}
	return fmt.Errorf("container name %s is taken by container %.12s (%s%s): remove it (docker rm -f %s) or choose another name",
		d.opts.Name, c.ID, c.State, owner, d.opts.Name)
}

// ReapOrphans stops the containers lem started whose lem-run is gone (killed before it could), removes them unless
// they were to be kept, and marks their run directories crashed (those whose run never finished). Containers of a
// lem-run still alive, or of another host, are left alone.
func (d *Docker) ReapOrphans(ctx context.Context) error {
	res, err := d.cli.ContainerList(ctx, client.ContainerListOptions{All: true,
		Filters: make(client.Filters).Add("label", LabelRunner)})
	if err != nil {
		return fmt.Errorf("listing lem's containers: %w", err)
	}
	for _, c := range res.Items {
		p, err := meta.ParseProcess(c.Labels[LabelRunner])
		if err != nil || !p.Gone() {
			continue
		}
		kept := c.Labels[LabelKeep] == "true"
		if kept && c.State != container.StateRunning && c.State != container.StateRestarting && c.State != container.StatePaused {
			continue // kept after its run, as asked
		}
		slog.Warn("stopping a container whose lem-run died", "container", c.ID[:12], "names", c.Names,
			"run_id", c.Labels[LabelRunID], "runner", c.Labels[LabelRunner], "kept", kept)
		secs := 10
		d.cli.ContainerStop(ctx, c.ID, client.ContainerStopOptions{Timeout: &secs})
		if !kept {
			if _, err := d.cli.ContainerRemove(ctx, c.ID, client.ContainerRemoveOptions{Force: true}); err != nil && !cerrdefs.IsNotFound(err) {
				return fmt.Errorf("removing container %.12s left by a dead lem-run: %w", c.ID, err)
			}
		}
		ct := manifest.Container{ID: c.ID, Kept: kept}
		if len(c.Names) > 0 {
			ct.Name = strings.TrimPrefix(c.Names[0], "/")
		}
		err = markCrashed(c.Labels[LabelRunDir], "lem-run died while the workload ran; a later lem-run stopped its container",
			&manifest.Image{Name: c.Image, ID: c.ImageID}, &ct)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			slog.Warn("run directory of an orphaned container not marked crashed", "dir", c.Labels[LabelRunDir], "err", err)
		}
	}
	return nil
}
