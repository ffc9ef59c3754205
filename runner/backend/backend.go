package backend

import (
	"context"
	"io"
	"time"

	"github.com/lem-energy/lem/internal/manifest"
)

// Spec is what a backend starts.
type Spec struct {
	RunID      string
	Command    []string
	Env        []string // KEY=VALUE, added to the workload's environment
	GPUs       []string // UUIDs of the GPUs the workload gets
	GPUIndices []int
	ResultsDir string // host directory the workload writes its own outputs to (LEM_RESULTS_DIR)
	RunDir     string // the run directory (its watchdog marks it crashed if lem-run dies)
	MarkerURL  string // LEM_MARKER_URL as seen from the workload
	Labels     map[string]string
}

// Line is one line of workload output, stamped with the time it was written where the backend knows it (the
// container runtime's log timestamps) or read (process mode). A line longer than MaxChunk comes in chunks, each
// but the last Partial; only whole lines can be markers.
type Line struct {
	Time    time.Time
	Stderr  bool
	Text    string
	Partial bool
}

// WriteTo writes the line to w as the workload wrote it: its text, and the newline unless it is partial.
func (l Line) WriteTo(w io.Writer) (int64, error) {
	n, err := io.WriteString(w, l.Text)
	if err == nil && !l.Partial {
		var m int
		m, err = io.WriteString(w, "\n")
		n += m
	}
	return int64(n), err
}

// Exit is how the workload ended.
type Exit struct {
	Code       int
	OOMKilled  bool
	StartedAt  time.Time
	FinishedAt time.Time
}

// Backend runs workloads: a plain process, or a Docker container.
type Backend interface {
	Name() string
	// Preflight checks that a workload can be started (daemon reachable, image present), before anything is
	// measured; it starts nothing.
	Preflight(ctx context.Context) error
	// Start starts the workload; its output arrives on the Lines channel until it is closed. On error a non-nil
	// Workload is what was created (a container that did not start): its Cleanup records it and removes it.
	Start(ctx context.Context, spec Spec) (Workload, error)
}

// Workload is a started workload.
type Workload interface {
	Lines() <-chan Line
	// Wait blocks until the workload has exited (and its output is drained).
	Wait(ctx context.Context) (Exit, error)
	// Stop asks it to stop, killing it after grace.
	Stop(grace time.Duration) error
	// Cleanup removes what the backend created (the container, unless kept) and fills in what the manifest
	// records about it.
	Cleanup(m *manifest.Manifest) error
}

// Execute runs a workload without measuring it (a campaign's warm-up runs): output goes to log, and the exit code
// is returned. An interrupt stops it after grace.
func Execute(ctx context.Context, be Backend, spec Spec, log io.Writer, grace time.Duration) (int, error) {
	if err := be.Preflight(ctx); err != nil {
		return 0, err
	}
	wl, err := be.Start(ctx, spec)
	if err != nil {
		if wl != nil {
			wl.Cleanup(&manifest.Manifest{RunID: spec.RunID})
		}
		return 0, err
	}
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		for l := range wl.Lines() {
			l.WriteTo(log)
		}
	}()
	ex, err := wl.Wait(ctx)
	if err != nil {
		wl.Stop(grace)
	}
	<-drained
	if cerr := wl.Cleanup(&manifest.Manifest{RunID: spec.RunID}); err == nil {
		err = cerr
	}
	return ex.Code, err
}
