package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/prometheus/common/config"

	"github.com/lem-energy/lem/analyze/pull"
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
	Out        string        `short:"o" default:"pulled" env:"LEM_PULL_DIR" help:"Directory for the pulled traces."`
}

func (c *pullCmd) Run(ctx context.Context, log *slog.Logger) error {
	to := c.To
	if to.IsZero() {
		to = time.Now()
	}
	from := c.From
	if from.IsZero() {
		from = to.Add(-c.Since)
	}
	if !to.After(from) {
		return fmt.Errorf("--from %s is not before --to %s", from.Format(time.RFC3339), to.Format(time.RFC3339))
	}
	hc := config.DefaultHTTPClientConfig
	hc.TLSConfig.InsecureSkipVerify = c.Insecure
	if c.BearerFile != "" {
		hc.Authorization = &config.Authorization{Type: "Bearer", CredentialsFile: c.BearerFile}
	}
	if c.BasicUser != "" {
		hc.BasicAuth = &config.BasicAuth{Username: c.BasicUser, PasswordFile: c.BasicPass}
	}
	cl, err := pull.New(pull.Options{URL: c.Prometheus, HTTP: hc, Chunk: c.Chunk, DCGM: c.DCGM, Progress: os.Stderr, Log: log})
	if err != nil {
		return err
	}
	if err := os.MkdirAll(c.Out, 0o755); err != nil {
		return fmt.Errorf("--out: %w", err)
	}
	write := func(name string, t *trace.Trace) error {
		p := filepath.Join(c.Out, name+".parquet")
		if err := trace.WriteFile(p, t); err != nil {
			return err
		}
		var n int
		for _, s := range t.GPUs {
			n += len(s.Samples)
		}
		fmt.Printf("%s: %d GPUs, %d power samples\n", p, len(t.GPUs), n)
		return nil
	}
	if c.Instance != "" || c.DCGM {
		if c.Instance == "" {
			return errors.New("--dcgm needs --instance (dcgm-exporter has no run markers)")
		}
		t, err := cl.Trace(ctx, c.Instance, from, to, nil)
		if err != nil {
			return err
		}
		return write(fmt.Sprintf("%s-%s", sanitize(c.Instance), from.UTC().Format("20060102T150405Z")), t)
	}
	runs, err := cl.FindRuns(ctx, from, to)
	if err != nil {
		return err
	}
	names := map[string]string{} // run id → file name, with the instance where a run id is on several nodes
	if c.SlurmJob != "" {
		if runs = pull.SelectSlurmJob(runs, c.SlurmJob); len(runs) == 0 {
			return fmt.Errorf("no run of Slurm job %s found in %s between %s and %s (its Prolog marks it on the node's lem-exporter)",
				c.SlurmJob, c.Prometheus, from.Format(time.RFC3339), to.Format(time.RFC3339))
		}
		count := map[string]int{}
		for _, r := range runs {
			count[r.RunID]++
		}
		for _, r := range runs {
			if count[r.RunID] > 1 {
				names[r.RunID+"\x00"+r.Instance] = r.RunID + "-" + sanitize(r.Instance)
			}
		}
	}
	var errs []error
	pulled := 0
	for _, r := range runs {
		if len(c.RunIDs) > 0 && !slices.Contains(c.RunIDs, r.RunID) {
			continue
		}
		// A little before and after, so the hybrid has counter readings and samples around the edges.
		t, err := cl.Trace(ctx, r.Instance, r.Start.Add(-5*time.Second), r.End.Add(5*time.Second), &r)
		if err == nil {
			name := r.RunID
			if n, ok := names[r.RunID+"\x00"+r.Instance]; ok {
				name = n
			}
			err = write(name, t)
		}
		if err != nil {
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

func sanitize(s string) string {
	out := []rune(s)
	for i, r := range out {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			out[i] = '_'
		}
	}
	return string(out)
}
