package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/lem-energy/lem/analyze/pull"
	"github.com/lem-energy/lem/internal/cli"
	"github.com/lem-energy/lem/internal/marker"
	"github.com/lem-energy/lem/internal/meta"
	"github.com/lem-energy/lem/internal/trace"
	"github.com/lem-energy/lem/runner/campaign"
)

// slurmJobCmd is what a node's Slurm Prolog and Epilog run (deploy/slurm): it marks the job as a run on the
// node's lem-exporter, so that Prometheus holds every job's GPU energy by counter. It never fails the job: Slurm
// drains a node whose Prolog or Epilog fails, so every problem is one line on stderr and the exit status is 0
// unless the flags themselves are wrong.
type slurmJobCmd struct {
	Edge          string        `arg:"" enum:"start,end" help:"start (from the Prolog) or end (from the Epilog)."`
	Exporter      string        `default:"http://127.0.0.1:9636" help:"The node's lem-exporter (user:password@ for basic auth)."`
	ExporterToken string        `name:"exporter-token-file" help:"Marker token file (readable by root only; the token is never printed)."`
	ExporterCA    string        `name:"exporter-ca-file" help:"PEM certificate(s) to trust for an https --exporter."`
	MetricsPath   string        `name:"metrics-path" default:"/metrics" help:"The exporter's metrics path (its GPUs' indices and PCI bus ids are read there)."`
	Experiment    string        `default:"slurm/{partition}/{user}" help:"Experiment name of the job's run; {user}, {account}, {partition} and {cluster} are the job's."`
	GresConf      string        `name:"gres-conf" help:"The node's gres.conf (default: beside SLURM_CONF)."`
	Timeout       time.Duration `default:"5s" help:"Give up after this long (the Prolog delays the job's start)."`
}

func (c *slurmJobCmd) Run(ctx context.Context, log *slog.Logger) error {
	if _, err := marker.NewClient(c.Exporter, "", marker.WithCAFile(c.ExporterCA)); err != nil {
		return fmt.Errorf("--exporter: %v%w", err, cli.Usage)
	}
	ctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	id, err := c.mark(ctx, os.Getenv)
	if err != nil {
		// One line, the URL without credentials, never the token: Slurm logs what a Prolog prints.
		fmt.Fprintf(os.Stderr, "lem-run slurm-job %s: job %s: %s\n", c.Edge, os.Getenv("SLURM_JOB_ID"),
			strings.ReplaceAll(err.Error(), "\n", "; "))
		return nil
	}
	log.Info("Slurm job marked", "edge", c.Edge, "run", id, "exporter", marker.Redact(c.Exporter))
	return nil
}

// mark posts the job's start or end and returns its run id.
func (c *slurmJobCmd) mark(ctx context.Context, getenv func(string) string) (string, error) {
	job := getenv("SLURM_JOB_ID")
	if job == "" {
		return "", errors.New("no SLURM_JOB_ID: run from Slurm's Prolog or Epilog")
	}
	restart, _ := strconv.Atoi(getenv("SLURM_JOB_RESTART_COUNT"))
	id := pull.SlurmRunID(getenv("SLURM_CLUSTER_NAME"), job, restart)
	if err := marker.ValidRunID(id); err != nil {
		return "", err
	}
	token, err := cli.ReadSecret("--exporter-token-file", c.ExporterToken)
	if err != nil {
		return "", err
	}
	cl, err := marker.NewClient(c.Exporter, token, marker.WithCAFile(c.ExporterCA))
	if err != nil {
		return "", err
	}
	if c.Edge == "end" {
		status := slurmJobStatus(getenv("SLURM_JOB_EXIT_CODE2"), getenv("SLURM_JOB_EXIT_CODE"))
		err := cl.End(ctx, id, status, time.Time{})
		var se *marker.StatusError
		if errors.As(err, &se) && se.Code == http.StatusNotFound {
			return id, fmt.Errorf("run %s: the exporter has no such run (its Prolog did not mark it, or the exporter restarted)", id)
		}
		return id, err
	}
	// A job whose GPUs cannot be matched is still marked (its energy is then the node's to pick from).
	labels, gerr := c.labels(ctx, getenv)
	err = cl.Start(ctx, marker.StartReq{RunID: id, Experiment: c.experiment(getenv), Labels: labels})
	var se *marker.StatusError
	if errors.As(err, &se) && se.Code == http.StatusConflict {
		err = nil // marked already (the Prolog ran twice)
	}
	if gerr != nil {
		gerr = fmt.Errorf("run %s marked without its GPUs: %w", id, gerr)
	}
	return id, errors.Join(err, gerr)
}

// experiment fills the --experiment template.
func (c *slurmJobCmd) experiment(getenv func(string) string) string {
	account := getenv("SLURM_JOB_ACCOUNT")
	if account == "" || account == "(null)" {
		account = "-"
	}
	r := strings.NewReplacer("{user}", or(getenv("SLURM_JOB_USER"), "-"), "{account}", account,
		"{partition}", or(getenv("SLURM_JOB_PARTITION"), "-"), "{cluster}", or(getenv("SLURM_CLUSTER_NAME"), "-"))
	return r.Replace(c.Experiment)
}

func or(s, alt string) string {
	if s == "" {
		return alt
	}
	return s
}

// labels are the job's run labels: who and where, the GPUs Slurm granted and, as workload_gpus, the exporter's
// indices of those GPUs (so dashboards and pulls sum the job's GPUs only).
func (c *slurmJobCmd) labels(ctx context.Context, getenv func(string) string) (map[string]string, error) {
	l := map[string]string{"slurm_job_id": getenv("SLURM_JOB_ID")}
	for k, env := range map[string]string{"user": "SLURM_JOB_USER", "account": "SLURM_JOB_ACCOUNT",
		"partition": "SLURM_JOB_PARTITION", "node": "SLURMD_NODENAME", "cluster": "SLURM_CLUSTER_NAME"} {
		if v := getenv(env); v != "" && v != "(null)" && len(v) <= marker.MaxValueLen {
			l[k] = v
		}
	}
	grant, err := campaign.SlurmGrantFromEnv(getenv)
	if err != nil {
		return l, err
	}
	if grant.Empty() {
		return l, nil // a job without GPUs: its run is marked, its GPUs are none
	}
	l["slurm_gpus"] = strings.Join(grant.IDs(), ",")
	devs, err := c.devices(ctx)
	if err != nil {
		return l, fmt.Errorf("the exporter's GPUs: %w", err)
	}
	gres := c.GresConf
	if gres == "" {
		gres = campaign.GresConf(getenv)
	}
	node, err := campaign.ReadNodeGPUs(gres, getenv("SLURMD_NODENAME"), "/proc")
	if err != nil {
		return l, err
	}
	sel, how, err := campaign.MapSlurmGPUs(grant, devs, node)
	if err != nil {
		return l, err
	}
	var idx []int
	for _, d := range sel {
		idx = append(idx, d.Index)
	}
	l[trace.LabelWorkloadGPUs] = marker.FormatGPUs(idx)
	l["gpu_mapping"] = how
	return l, nil
}

// devices reads the exporter's GPUs (index, UUID, PCI bus id) from its lem_gpu_info series.
func (c *slurmJobCmd) devices(ctx context.Context) ([]meta.Device, error) {
	u, err := url.Parse(strings.TrimRight(c.Exporter, "/") + c.MetricsPath)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "", nil)
	if err != nil {
		return nil, err
	}
	if u.User != nil {
		pass, _ := u.User.Password()
		req.SetBasicAuth(u.User.Username(), pass)
		u.User = nil
	}
	req.URL = u
	hc := &http.Client{}
	if c.ExporterCA != "" {
		b, err := os.ReadFile(c.ExporterCA)
		if err != nil {
			return nil, err
		}
		pool, _ := x509.SystemCertPool()
		if pool == nil {
			pool = x509.NewCertPool()
		}
		pool.AppendCertsFromPEM(b)
		hc.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", u.Redacted(), err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: HTTP %d", u.Redacted(), resp.StatusCode)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", u.Redacted(), err)
	}
	fam := fams["lem_gpu_info"]
	if fam == nil {
		return nil, fmt.Errorf("GET %s: no lem_gpu_info series (is it lem-exporter?)", u.Redacted())
	}
	var out []meta.Device
	for _, m := range fam.GetMetric() {
		var d meta.Device
		ok := false
		for _, lp := range m.GetLabel() {
			switch lp.GetName() {
			case "gpu":
				d.Index, err = strconv.Atoi(lp.GetValue())
				ok = err == nil
			case "uuid":
				d.UUID = lp.GetValue()
			case "pci_bus_id":
				d.PCIBusID = lp.GetValue()
			}
		}
		if ok {
			out = append(out, d)
		}
	}
	slices.SortFunc(out, func(a, b meta.Device) int { return a.Index - b.Index })
	return out, nil
}

// slurmJobStatus is the end status of a job's run from the Epilog's exit codes: ok, failed (a non-zero exit
// code) or interrupted (ended by a signal: cancelled, preempted, out of time).
func slurmJobStatus(code2, wait string) string {
	if code, sig, ok := strings.Cut(code2, ":"); ok {
		switch {
		case sig != "0" && sig != "":
			return "interrupted"
		case code != "0":
			return "failed"
		}
		return "ok"
	}
	if w, err := strconv.Atoi(wait); err == nil {
		switch {
		case w&0x7f != 0:
			return "interrupted"
		case w>>8&0xff != 0:
			return "failed"
		}
		return "ok"
	}
	return "ended"
}
