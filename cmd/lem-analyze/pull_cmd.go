package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"time"

	"github.com/prometheus/common/config"
	"golang.org/x/term"

	"github.com/lem-energy/lem/analyze/pull"
	"github.com/lem-energy/lem/internal/cli"
	"github.com/lem-energy/lem/internal/trace"
)

type pullCmd struct {
	Prometheus string        `required:"" help:"Base URL of the Prometheus-compatible API."`
	BearerFile string        `name:"bearer-token-file" type:"existingfile" help:"Bearer token file."`
	BasicUser  string        `name:"basic-auth.username" help:"Basic-auth user."`
	BasicPass  string        `name:"basic-auth.password-file" type:"existingfile" help:"Basic-auth password file."`
	Insecure   bool          `name:"insecure-skip-verify" help:"Do not verify the server's TLS certificate."`
	From       time.Time     `help:"Start of the window (RFC 3339)." format:"2006-01-02T15:04:05Z07:00"`
	To         time.Time     `help:"End of the window (RFC 3339; default now)." format:"2006-01-02T15:04:05Z07:00"`
	Since      time.Duration `default:"1h" help:"Window length when --from is not given."`
	RunIDs     []string      `name:"run" help:"Pull only these run ids (default: every run found in the window)."`
	SlurmJob   string        `name:"slurm-job" help:"Pull only the runs of this Slurm job (marked by the Slurm Prolog on each of its nodes: run ids slurm-<cluster>-<job>)."`
	Instance   string        `help:"Pull this instance's series over the window instead of runs (any exporter, incl. dcgm-exporter)."`
	DCGM       bool          `name:"dcgm" help:"Read dcgm-exporter's DCGM_FI_DEV_POWER_USAGE and DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION."`
	Chunk      time.Duration `default:"10m" help:"Range-selector window per query."`
	Workers    int           `default:"4" help:"Chunks queried at once; each chunk is written to the trace as soon as those before it are (memory: a few chunks)."`
	Out        string        `short:"o" default:"pulled" env:"LEM_PULL_DIR" help:"Directory for the pulled traces."`
}

// Bounds of --chunk and --workers.
const (
	maxChunks  = 1_000_000
	maxWorkers = 64
)

func (c *pullCmd) Run(ctx context.Context, log *slog.Logger) error {
	from, to, err := c.window()
	if err != nil {
		return err
	}
	// A pull holds a few chunks at a time and makes garbage of each: collect as usual, not as the batch
	// analyses do (main's 400), so its memory stays a few chunks' (GOGC still overrides).
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(100)
	}
	cl, err := c.client(log)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(c.Out, 0o755); err != nil {
		return fmt.Errorf("--out: %w", err)
	}
	if c.Instance != "" || c.DCGM {
		if c.Instance == "" {
			return errors.New("--dcgm needs --instance (dcgm-exporter has no run markers)")
		}
		return c.write(ctx, cl, fmt.Sprintf("%s-%s", sanitize(c.Instance), from.UTC().Format("20060102T150405Z")),
			c.Instance, from, to, nil)
	}
	return c.pullRuns(ctx, log, cl, from, to)
}

// window is the time window the flags ask for, with --chunk and --workers checked against it.
func (c *pullCmd) window() (from, to time.Time, err error) {
	to = c.To
	if to.IsZero() {
		to = time.Now()
	}
	from = c.From
	if from.IsZero() {
		from = to.Add(-c.Since)
	}
	if !to.After(from) {
		return from, to, fmt.Errorf("--from %s is not before --to %s", from.Format(time.RFC3339), to.Format(time.RFC3339))
	}
	// A chunk is one range query per series: under a second Prometheus (milliseconds) returns next to nothing per
	// query, and the chunks of the window are listed before the first query.
	if c.Chunk < time.Second {
		return from, to, fmt.Errorf("--chunk %s: want at least 1s%w", c.Chunk, cli.Usage)
	}
	if n := to.Sub(from) / c.Chunk; n > maxChunks {
		return from, to, fmt.Errorf("--chunk %s: the window of %s would be %d chunks (at most %d): a longer chunk%w",
			c.Chunk, to.Sub(from), n, maxChunks, cli.Usage)
	}
	// Each worker holds a chunk in memory and a query on the server.
	if c.Workers < 1 || c.Workers > maxWorkers {
		return from, to, fmt.Errorf("--workers %d: want 1 to %d%w", c.Workers, maxWorkers, cli.Usage)
	}
	return from, to, nil
}

// client is the Prometheus client the flags describe.
func (c *pullCmd) client(log *slog.Logger) (*pull.Client, error) {
	hc := config.DefaultHTTPClientConfig
	hc.TLSConfig.InsecureSkipVerify = c.Insecure
	if c.BearerFile != "" {
		hc.Authorization = &config.Authorization{Type: "Bearer", CredentialsFile: c.BearerFile}
	}
	if c.BasicUser != "" {
		hc.BasicAuth = &config.BasicAuth{Username: c.BasicUser, PasswordFile: c.BasicPass}
	}
	// Progress bars only on a terminal: a log or a pipe gets the summary lines alone.
	var progress io.Writer
	if term.IsTerminal(int(os.Stderr.Fd())) {
		progress = os.Stderr
	}
	return pull.New(pull.Options{URL: c.Prometheus, HTTP: hc, Chunk: c.Chunk, Workers: c.Workers, DCGM: c.DCGM,
		Progress: progress, Log: log})
}

// pullRuns writes a trace per marked run in [from, to] (those of --slurm-job, or --run-id, if given).
func (c *pullCmd) pullRuns(ctx context.Context, log *slog.Logger, cl *pull.Client, from, to time.Time) error {
	runs, err := cl.FindRuns(ctx, from, to)
	if err != nil {
		return err
	}
	if c.SlurmJob != "" {
		if runs = pull.SelectSlurmJob(runs, c.SlurmJob); len(runs) == 0 {
			return fmt.Errorf("no run of Slurm job %s found in %s between %s and %s (its Prolog marks it on the node's lem-exporter)",
				c.SlurmJob, c.Prometheus, from.Format(time.RFC3339), to.Format(time.RFC3339))
		}
	}
	// File names: the run id, with the instance where a run id is on several nodes.
	count := map[string]int{}
	for _, r := range runs {
		count[r.RunID]++
	}
	var errs []error
	pulled := 0
	for _, r := range runs {
		if len(c.RunIDs) > 0 && !slices.Contains(c.RunIDs, r.RunID) {
			continue
		}
		name := r.RunID
		if count[r.RunID] > 1 {
			name = r.RunID + "-" + sanitize(r.Instance)
		}
		if ctx.Err() != nil {
			errs = append(errs, fmt.Errorf("interrupted before run %s: %w", r.RunID, ctx.Err()))
			break // interrupted: the runs pulled are complete files, the rest are not started
		}
		// A little before and after, so the hybrid has counter readings and samples around the edges.
		if err := c.write(ctx, cl, name, r.Instance, r.Start.Add(-5*time.Second), r.End.Add(5*time.Second), &r); err != nil {
			log.Error("run not pulled", "run_id", r.RunID, "err", err)
			errs = append(errs, fmt.Errorf("run %s: %w", r.RunID, err))
			continue
		}
		pulled++
	}
	if pulled == 0 && len(errs) == 0 {
		return fmt.Errorf("no runs found in %s between %s and %s (lem_run_active series)", c.Prometheus,
			from.Format(time.RFC3339), to.Format(time.RFC3339))
	}
	return errors.Join(errs...)
}

// write pulls one instance's series over [from, to] (and a run's events) straight into the trace name.parquet:
// chunk after chunk as they arrive, never the whole window in memory.
func (c *pullCmd) write(ctx context.Context, cl *pull.Client, name, instance string, from, to time.Time, run *pull.RunInfo) error {
	devs, err := cl.Devices(ctx, instance, from, to)
	if err != nil {
		return err
	}
	p := filepath.Join(c.Out, name+".parquet")
	w, err := trace.Create(p, cl.Environment(devs))
	if err != nil {
		return err
	}
	begin := time.Now()
	st, err := cl.Stream(ctx, instance, from, to, devs, pull.WriterSink{W: w})
	if err == nil && run != nil {
		var evs []trace.Event
		evs, err = cl.RunEvents(ctx, *run, from, to)
		for _, e := range evs {
			if err == nil {
				err = w.WriteEvent(e)
			}
		}
		w.SetMetadata(pull.MetaRunID, run.RunID)
	}
	if err != nil {
		w.Abort()
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	took := time.Since(begin)
	fmt.Printf("%s: %d GPUs, %d power samples, %d counter readings, %d telemetry snapshots (%d queries, %s, %.0f samples/s)\n",
		p, len(devs), st.Samples, st.Counters, st.Telemetry, st.Queries, took.Round(time.Millisecond),
		float64(st.Samples)/max(took.Seconds(), 1e-3))
	if st.SkippedSamples+st.SkippedCounters > 0 {
		fmt.Printf("%s: left out %d power samples and %d counter readings that no trace can hold (NaN, infinite, negative counters)\n",
			p, st.SkippedSamples, st.SkippedCounters)
	}
	return nil
}

func sanitize(s string) string {
	out := []rune(s)
	for i, r := range out {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			out[i] = '_'
		}
	}
	return string(out)
}
