package campaign

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/lem-energy/lem/analyze/report"
	"github.com/lem-energy/lem/internal/catalogue"
	"github.com/lem-energy/lem/internal/fileutil"
	"github.com/lem-energy/lem/internal/gpu"
	"github.com/lem-energy/lem/internal/manifest"
	"github.com/lem-energy/lem/internal/sampler"
	"github.com/lem-energy/lem/runner/backend"
	"github.com/lem-energy/lem/runner/introspect"
)

// StateFile is the campaign's state and summary, rewritten atomically after every run.
const StateFile = "campaign.json"

// Options configure a campaign execution.
type Options struct {
	Source        gpu.Source
	Devices       []gpu.Device // every device lem may sample; experiments select among them
	Sampler       sampler.Config
	ExporterURL   string
	ExporterToken string
	RequestGPUs   bool             // ask the NVIDIA runtime for GPUs (real NVML)
	Watchdog      backend.Watchdog // stops workloads and backend containers if lem-run dies
	Stdout        io.Writer
	Progress      *Progress
	Log           *slog.Logger
}

// RunState is one planned run's outcome.
type RunState struct {
	Position   int     `json:"position"`
	Cycle      int     `json:"cycle"`
	Experiment string  `json:"experiment"`
	RunID      string  `json:"run_id"`
	Status     string  `json:"status"` // pending, ok, failed, interrupted, timeout, error
	Error      string  `json:"error,omitempty"`
	Attempts   int     `json:"attempts"`
	DurationS  float64 `json:"duration_s,omitempty"`
}

// State is campaign.json.
type State struct {
	SchemaVersion string              `json:"schema_version"`
	Campaign      string              `json:"campaign"`
	File          string              `json:"file"`
	FileSHA256    string              `json:"file_sha256"`
	Structure     string              `json:"structure"`
	Cycles        int                 `json:"cycles"`
	Status        string              `json:"status"` // running, done, interrupted, incomplete
	Started       time.Time           `json:"started"`
	Updated       time.Time           `json:"updated"`
	Runs          []RunState          `json:"runs"`
	Startups      []RunState          `json:"backend_startups,omitempty"`
	Catalogues    map[string]string   `json:"catalogues,omitempty"` // experiment → catalogue file
	Experiments   []report.Experiment `json:"experiments,omitempty"`
	Problems      []report.Problem    `json:"problems,omitempty"`
}

// Prepared is a validated campaign: its plan and every experiment's catalogue.
type Prepared struct {
	File       *File
	Plan       []Planned
	Configs    []*Config
	Catalogues map[*Experiment]*catalogue.Catalogue
	catFiles   map[string]string
	out        string
	params     map[*Config]*manifest.Inference
}

// OutDir is where the campaign writes.
func (p *Prepared) OutDir() string { return p.out }

func outDir(f *File, out string) string {
	if out == "" {
		return filepath.Join("campaigns", f.Name)
	}
	return out
}

// Prepare validates a campaign beyond its syntax: it expands the plan, captures (or loads, or reuses from the
// campaign directory) each backend's catalogue and checks every backend_params name against it.
func Prepare(ctx context.Context, f *File, out string, log *slog.Logger) (*Prepared, error) {
	plan, cfgs, err := f.Plan()
	if err != nil {
		return nil, err
	}
	p := &Prepared{File: f, Plan: plan, Configs: cfgs, Catalogues: map[*Experiment]*catalogue.Catalogue{},
		catFiles: map[string]string{}, out: outDir(f, out), params: map[*Config]*manifest.Inference{}}
	var errs []error
	for _, e := range f.Experiments {
		if e.Backend == "" {
			continue
		}
		path := []string{"experiments", fmt.Sprint(e.index)}
		cat, file, err := p.catalogue(ctx, e, log)
		if err != nil {
			errs = append(errs, f.errAt(append(path, "backend"), "%v", err))
			continue
		}
		p.Catalogues[e], p.catFiles[e.Name] = cat, file
		for _, k := range slices.Sorted(maps.Keys(e.BackendParams)) {
			if _, err := cat.Lookup(k); err != nil {
				errs = append(errs, f.errAt(append(path, "backend_params", k), "%v", err))
			}
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	for _, c := range cfgs {
		if cat := p.Catalogues[c.Exp]; cat != nil {
			inf, err := cat.Effective(c.Params)
			if err != nil {
				return nil, f.errAt([]string{"experiments", fmt.Sprint(c.Exp.index), "backend_params"}, "%v", err)
			}
			p.params[c] = inf
		}
	}
	return p, nil
}

// catalogue loads the experiment's catalogue file, or reuses the one captured for this backend and environment
// in the campaign directory, or captures it (inside the image — the backend container's for exec runs — or with
// the experiment's interpreter).
func (p *Prepared) catalogue(ctx context.Context, e *Experiment, log *slog.Logger) (*catalogue.Catalogue, string, error) {
	if e.Catalogue != "" {
		path := e.Catalogue
		if !filepath.IsAbs(path) {
			path = filepath.Join(filepath.Dir(p.File.path), path)
		}
		c, err := catalogue.Load(path)
		return c, path, err
	}
	python := e.Python
	if python == "" {
		python = "python3"
	}
	image := e.Image
	if e.Container != "" && p.File.Backends[e.Container].Mode == "exec" {
		image = p.File.Backends[e.Container].Image
	}
	var ex introspect.Executor = introspect.Process{Python: python}
	key := "process:" + python
	if image != "" {
		d, err := backend.NewDocker(backend.DockerOptions{Image: image})
		if err != nil {
			return nil, "", err
		}
		defer d.Close()
		if err := d.Preflight(ctx); err != nil {
			return nil, "", err
		}
		ex, key = d, "image:"+d.ImageID()
	} else if abs, err := lookPath(python); err == nil {
		key = "process:" + abs
	}
	key += ":" + e.Backend + ":" + strings.Join(e.BackendTarget, ",")
	h := sha256.Sum256([]byte(key))
	file := filepath.Join(p.out, "catalogues", e.Backend+"-"+hex.EncodeToString(h[:6])+".json")
	if c, err := catalogue.Load(file); err == nil {
		return c, file, nil
	}
	log.Info("capturing backend catalogue", "backend", e.Backend, "environment", ex.Source())
	c, err := introspect.Capture(ctx, ex, python, e.Backend, e.BackendTarget)
	if err != nil {
		return nil, "", err
	}
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		return nil, "", err
	}
	return c, file, c.Save(file)
}

func writeState(dir string, s *State) error {
	s.Updated = time.Now().UTC()
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	if err := fileutil.WriteAtomic(filepath.Join(dir, StateFile), append(b, '\n')); err != nil {
		return fmt.Errorf("writing campaign state in %s: %w", dir, err)
	}
	return nil
}

// ReadState loads a campaign directory's campaign.json.
func ReadState(dir string) (*State, error) {
	b, err := os.ReadFile(filepath.Join(dir, StateFile))
	if err != nil {
		return nil, err
	}
	var s State
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, StateFile), err)
	}
	return &s, nil
}

// ErrIncomplete is returned when some runs did not end ok.
var ErrIncomplete = errors.New("campaign incomplete")

// Run executes the prepared campaign: runs whose manifest says ok are kept (resume), others are (re)done after
// moving their old directory aside. It returns ctx's error when interrupted (after cleaning up the current run
// and the backend containers) and ErrIncomplete when some runs failed.
func Run(ctx context.Context, p *Prepared, opts Options) (*State, error) {
	f := p.File
	log := opts.Log
	if err := os.MkdirAll(p.out, 0o755); err != nil {
		return nil, fmt.Errorf("campaign directory: %w", err)
	}
	st := &State{SchemaVersion: "1", Campaign: f.Name, File: f.path, FileSHA256: f.sum, Structure: f.Structure,
		Cycles: f.Cycles, Status: "running", Started: time.Now().UTC(), Catalogues: map[string]string{}}
	if old, err := ReadState(p.out); err == nil {
		st.Started, st.Startups = old.Started, old.Startups
		if old.FileSHA256 != f.sum {
			log.Warn("campaign file changed since the campaign started; runs with the same id are kept", "file", f.path)
		}
	}
	for name, file := range p.catFiles {
		if rel, err := filepath.Rel(p.out, file); err == nil && !strings.HasPrefix(rel, "..") {
			file = rel
		}
		st.Catalogues[name] = file
	}
	remaining := map[*Config]bool{}
	for _, pl := range p.Plan {
		rs := RunState{Position: pl.Position, Cycle: pl.Cycle, Experiment: pl.Config.Name, RunID: pl.RunID, Status: "pending"}
		dir := filepath.Join(p.out, pl.RunID)
		if m, err := manifest.Read(dir); err == nil {
			rs.Status, rs.DurationS, rs.Attempts = m.Status, m.Times.DurationS, 1
		}
		if rs.Status != manifest.StatusOK {
			remaining[pl.Config] = true
		}
		st.Runs = append(st.Runs, rs)
	}
	if err := writeState(p.out, st); err != nil {
		return st, err
	}
	ex := &executor{p: p, opts: opts, st: st, containers: map[string]*backendContainer{}}
	defer ex.closeContainers()

	err := ex.warmups(ctx, remaining)
	done := 0
	for _, r := range st.Runs {
		if r.Status == manifest.StatusOK {
			done++
		}
	}
	opts.Progress.Start(len(st.Runs), done)
	var prev *Planned
	for i := range p.Plan {
		if err != nil {
			break
		}
		pl := &p.Plan[i]
		rs := &st.Runs[i]
		if rs.Status == manifest.StatusOK {
			continue
		}
		if prev != nil {
			gap := f.Gaps.BetweenRuns.D()
			if prev.Cycle != pl.Cycle {
				gap = f.Gaps.BetweenCycles.D()
			}
			if err = sleep(ctx, gap); err != nil {
				break
			}
		}
		prev = pl
		opts.Progress.Begin(pl)
		err = ex.run(ctx, pl, rs)
		opts.Progress.End(pl, rs)
		if werr := writeState(p.out, st); werr != nil {
			log.Error("campaign state", "err", werr)
		}
	}
	ex.closeContainers()
	ex.summarise()
	switch {
	case err != nil && ctx.Err() != nil:
		st.Status = "interrupted"
	case err != nil:
		st.Status = "incomplete"
	default:
		st.Status = "done"
		for _, r := range st.Runs {
			if r.Status != manifest.StatusOK {
				st.Status = "incomplete"
			}
		}
	}
	if werr := writeState(p.out, st); werr != nil {
		err = errors.Join(err, werr)
	}
	if err == nil && st.Status == "incomplete" {
		err = ErrIncomplete
	}
	return st, err
}

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// summarise fills the per-experiment statistics with the analyzer's own code.
func (ex *executor) summarise() {
	var dirs []string
	for _, r := range ex.st.Runs {
		dir := filepath.Join(ex.p.out, r.RunID)
		if _, err := os.Stat(filepath.Join(dir, manifest.FileName)); err == nil {
			dirs = append(dirs, dir)
		}
	}
	if len(dirs) == 0 {
		return
	}
	runs, probs := report.Load(dirs)
	ex.st.Problems = probs
	if exps, err := report.Experiments(runs, ""); err == nil {
		ex.st.Experiments = exps
	}
}
