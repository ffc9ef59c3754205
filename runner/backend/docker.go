package backend

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
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
	// Watchdog stops the container if lem-run dies (see Watchdog).
	Watchdog Watchdog
}

// Docker runs the workload in a container through the Docker Engine API.
type Docker struct {
	opts  DockerOptions
	cli   *client.Client
	image manifest.Image
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

// Preflight checks the Engine answers and the image is present (pulling it only with --pull), and stops
// containers an earlier lem-run left behind when it died.
func (d *Docker) Preflight(ctx context.Context) error {
	if _, err := d.cli.Ping(ctx, client.PingOptions{NegotiateAPIVersion: true}); err != nil {
		return fmt.Errorf("Docker Engine not reachable at %s: %w (is dockerd running, and may this user use its socket?)",
			d.cli.DaemonHost(), err)
	}
	if err := d.ReapOrphans(ctx); err != nil {
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

// Start creates and starts the container and follows its logs with the runtime's timestamps.
func (d *Docker) Start(ctx context.Context, spec Spec) (Workload, error) {
	cfg := &container.Config{
		Image:  d.opts.Image,
		Env:    append(append([]string{}, d.opts.Env...), append(spec.Env, "LEM_RESULTS_DIR="+ContainerResultsDir)...),
		Labels: runnerLabels(spec),
	}
	if len(spec.Command) > 0 {
		cfg.Cmd = spec.Command
	}
	if len(d.opts.Entrypoint) > 0 {
		cfg.Entrypoint = d.opts.Entrypoint
	}
	host := &container.HostConfig{Binds: append(append([]string{}, d.opts.Volumes...), spec.ResultsDir+":"+ContainerResultsDir)}
	if d.opts.RequestGPUs {
		host.Resources.DeviceRequests = []container.DeviceRequest{{Driver: "nvidia", DeviceIDs: spec.GPUs,
			Capabilities: [][]string{{"gpu"}}}}
	}
	created, err := d.cli.ContainerCreate(ctx, client.ContainerCreateOptions{Config: cfg, HostConfig: host, Name: d.opts.Name})
	if err != nil {
		return nil, fmt.Errorf("creating container from %s: %w", d.opts.Image, err)
	}
	w := &dockerWorkload{d: d, id: created.ID, lines: make(chan Line, 1024), logsDone: make(chan struct{})}
	if _, err := d.cli.ContainerStart(ctx, created.ID, client.ContainerStartOptions{}); err != nil {
		d.cli.ContainerRemove(context.Background(), created.ID, client.ContainerRemoveOptions{Force: true})
		return nil, fmt.Errorf("starting container: %w", err)
	}
	logs, err := d.cli.ContainerLogs(ctx, created.ID, client.ContainerLogsOptions{ShowStdout: true, ShowStderr: true,
		Follow: true, Timestamps: true})
	if err != nil {
		w.Stop(time.Second)
		return nil, fmt.Errorf("following container logs: %w", err)
	}
	go w.follow(logs)
	if w.guard, err = d.opts.Watchdog.watch(spec.RunDir, containerArgs(created.ID)...); err != nil {
		w.Stop(time.Second)
		return nil, err
	}
	return w, nil
}

type dockerWorkload struct {
	d        *Docker
	id       string
	lines    chan Line
	logsDone chan struct{}
	guard    *guard
	info     container.InspectResponse
	inspectd bool
}

// follow demultiplexes the log stream into lines stamped with the runtime's timestamps.
func (w *dockerWorkload) follow(logs io.ReadCloser) {
	defer close(w.logsDone)
	defer close(w.lines)
	defer logs.Close()
	demux(logs, w.lines, true, time.Now)
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

func (w *dockerWorkload) Wait(ctx context.Context) (Exit, error) {
	res := w.d.cli.ContainerWait(ctx, w.id, client.ContainerWaitOptions{Condition: container.WaitConditionNotRunning})
	select {
	case <-res.Result:
	case err := <-res.Error:
		return Exit{}, fmt.Errorf("waiting for container %.12s (did the Docker daemon stop?): %w", w.id, err)
	case <-ctx.Done():
		return Exit{}, ctx.Err()
	}
	select {
	case <-w.logsDone:
	case <-time.After(5 * time.Second): // logs of a finished container end promptly; don't hang on a broken stream
	}
	ins, err := w.d.cli.ContainerInspect(context.Background(), w.id, client.ContainerInspectOptions{})
	if err != nil {
		return Exit{}, fmt.Errorf("inspecting container %.12s: %w", w.id, err)
	}
	w.info, w.inspectd = ins.Container, true
	ex := Exit{}
	if st := ins.Container.State; st != nil {
		ex.Code, ex.OOMKilled = st.ExitCode, st.OOMKilled
		ex.StartedAt, _ = time.Parse(time.RFC3339Nano, st.StartedAt)
		ex.FinishedAt, _ = time.Parse(time.RFC3339Nano, st.FinishedAt)
	}
	return ex, nil
}

func (w *dockerWorkload) Stop(grace time.Duration) error {
	secs := int(grace.Seconds())
	_, err := w.d.cli.ContainerStop(context.Background(), w.id, client.ContainerStopOptions{Timeout: &secs})
	if err != nil && !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("stopping container %.12s: %w", w.id, err)
	}
	return nil
}

func (w *dockerWorkload) Cleanup(m *manifest.Manifest) error {
	w.guard.release()
	img := w.d.image
	m.Image = &img
	c := &manifest.Container{ID: w.id, Kept: w.d.opts.Keep}
	if w.inspectd {
		c.Name = strings.TrimPrefix(w.info.Name, "/")
		if st := w.info.State; st != nil {
			c.ExitCode, c.OOMKilled = st.ExitCode, st.OOMKilled
			c.StartedAt, _ = time.Parse(time.RFC3339Nano, st.StartedAt)
			c.FinishedAt, _ = time.Parse(time.RFC3339Nano, st.FinishedAt)
		}
	}
	m.Container = c
	if w.d.opts.Keep {
		return nil
	}
	if _, err := w.d.cli.ContainerRemove(context.Background(), w.id, client.ContainerRemoveOptions{Force: true}); err != nil {
		return fmt.Errorf("removing container %.12s: %w", w.id, err)
	}
	return nil
}

// Labels on every container lem starts: the run, and the lem-run process and run directory it belongs to, so
// the next lem-run finds containers whose runner died.
const (
	LabelRunID  = "lem.run_id"
	LabelRunner = "lem.runner"
	LabelRunDir = "lem.run_dir"
)

// runnerLabels adds lem's own labels to the spec's.
func runnerLabels(spec Spec) map[string]string {
	l := map[string]string{LabelRunner: meta.Self().String()}
	for k, v := range spec.Labels {
		l[k] = v
	}
	if spec.RunDir != "" {
		l[LabelRunDir] = spec.RunDir
	}
	return l
}

// ReapOrphans stops and removes the containers lem started whose lem-run is gone (killed before it could), and
// marks their run directories crashed. Containers of a lem-run still alive, or of another host, are left alone.
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
		slog.Warn("stopping a container whose lem-run died", "container", c.ID[:12], "names", c.Names,
			"run_id", c.Labels[LabelRunID], "runner", c.Labels[LabelRunner])
		secs := 10
		d.cli.ContainerStop(ctx, c.ID, client.ContainerStopOptions{Timeout: &secs})
		if _, err := d.cli.ContainerRemove(ctx, c.ID, client.ContainerRemoveOptions{Force: true}); err != nil && !cerrdefs.IsNotFound(err) {
			return fmt.Errorf("removing container %.12s left by a dead lem-run: %w", c.ID, err)
		}
		if err := MarkCrashed(c.Labels[LabelRunDir], "lem-run died while the workload ran; a later lem-run stopped its container"); err != nil &&
			!errors.Is(err, os.ErrNotExist) {
			slog.Warn("run directory of an orphaned container not marked crashed", "dir", c.Labels[LabelRunDir], "err", err)
		}
	}
	return nil
}
