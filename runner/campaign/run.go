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
	"reflect"
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
	// Force resumes a campaign whose file changed since its state was written: the runs already ok under an id of
	// the new plan are kept, the others run.
	Force bool
	// Cooldown overrides the file's cool-down gate (runner.ParseCooldown); "" keeps the file's, whose default
	// is the idle gate.
	Cooldown string
	// IdleHistory is the host's idle-baseline history file (runner.Options.IdleHistory).
	IdleHistory string
	// Executor carries out the runs (nil: Local, one after another in this process).
	Executor Executor
	// ReadOnly only looks: the executor reconciles the state with what it knows (a cluster's queue), nothing is
	// run or submitted, and campaign.json is rewritten only when no other lem-run holds the campaign directory.
	ReadOnly bool
}

// RunState is one planned run's outcome.
type RunState struct {
	Position   int     `json:"position"`
	Cycle      int     `json:"cycle"`
	Experiment string  `json:"experiment"`
	RunID      string  `json:"run_id"`
	Status     string  `json:"status"` // pending, queued, running, ok, failed, interrupted, timeout, error, crashed
	Error      string  `json:"error,omitempty"`
	Attempts   int     `json:"attempts"`
	DurationS  float64 `json:"duration_s,omitempty"`
	// Node is where the current attempt ran, when a cluster executor placed it.
	Node string `json:"node,omitempty"`
	// Jobs are the run's submissions to a cluster's scheduler, oldest first (cluster executors only).
	Jobs []Job `json:"jobs,omitempty"`
}

// State is campaign.json.
type State struct {
	SchemaVersion string `json:"schema_version"`
	Campaign      string `json:"campaign"`
	File          string `json:"file"`
	FileSHA256    string `json:"file_sha256"`
	// Definition is the campaign as validated (defaults applied, the file's key names, keys sorted), and its
	// SHA-256: a resumed campaign compares its file with it and names what changed.
	Definition       json.RawMessage     `json:"definition,omitempty"`
	DefinitionSHA256 string              `json:"definition_sha256,omitempty"`
	Structure        string              `json:"structure"`
	Cycles           int                 `json:"cycles"`
	Status           string              `json:"status"` // running, done, interrupted, incomplete, submitted
	Started          time.Time           `json:"started"`
	Updated          time.Time           `json:"updated"`
	Runs             []RunState          `json:"runs"`
	Startups         []RunState          `json:"backend_startups,omitempty"`
	Catalogues       map[string]string   `json:"catalogues,omitempty"` // experiment → catalogue file
	Experiments      []report.Experiment `json:"experiments,omitempty"`
	Problems         []report.Problem    `json:"problems,omitempty"`
	// Executor is what carried out the runs (local, slurm); Instance tells this campaign directory's campaign
	// from any other of the same name (its cluster jobs carry it).
	Executor string `json:"executor,omitempty"`
	Instance string `json:"instance,omitempty"`
}

// Prepared is a validated campaign: its plan and every experiment's catalogue.
type Prepared struct {
	File       *File
	Plan       []Planned
	Configs    []*Config
	Catalogues map[*Experiment]*catalogue.Catalogue
	// Notes say where a dry run could not use the backend's own catalogue, and what it checked instead.
	Notes    []string
	catFiles map[string]string
	out      string
	params   map[*Config]*manifest.Inference
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
	return prepare(ctx, f, out, log, false)
}

// PrepareDryRun is Prepare for --dry-run on a machine that may not have the backends: a backend whose catalogue
// cannot be captured here is checked against the committed catalogue of that backend, or not checked at all
// where none is kept; Notes say which.
func PrepareDryRun(ctx context.Context, f *File, out string, log *slog.Logger) (*Prepared, error) {
	return prepare(ctx, f, out, log, true)
}

func prepare(ctx context.Context, f *File, out string, log *slog.Logger, dry bool) (*Prepared, error) {
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
		if err != nil && dry {
			if cat, _ = catalogue.Committed(e.Backend); cat == nil {
				p.Notes = append(p.Notes, fmt.Sprintf("experiment %s: backend %s is not available here (%v) and no catalogue of it is committed: its backend_params are not checked", e.Name, e.Backend, err))
				continue
			}
			p.Notes = append(p.Notes, fmt.Sprintf("experiment %s: backend %s is not available here (%v): backend_params checked against the committed catalogue of %s", e.Name, e.Backend, err, cat))
			err = nil
		}
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

// changes names what differs between a campaign's stored state and its file now: top-level keys, keys of
// backends and sections, and experiments (by name) added, removed or changed (with their keys).
func changes(old, now *State) []string {
	if old.Campaign != now.Campaign {
		return []string{fmt.Sprintf("name %q, was %q", now.Campaign, old.Campaign)}
	}
	if len(old.Definition) == 0 { // state written before definitions were kept
		if old.FileSHA256 != now.FileSHA256 {
			return []string{"the file's SHA-256 differs; the state does not say what changed"}
		}
		return nil
	}
	if old.DefinitionSHA256 == now.DefinitionSHA256 { // of the compact encoding; campaign.json holds it indented
		return nil
	}
	var a, b map[string]any
	if json.Unmarshal(old.Definition, &a) != nil || json.Unmarshal(now.Definition, &b) != nil {
		return []string{"the stored definition is unreadable"}
	}
	var out []string
	for _, k := range union(a, b) {
		if reflect.DeepEqual(a[k], b[k]) {
			continue
		}
		if k == "experiments" {
			out = append(out, experimentChanges(a[k], b[k])...)
			continue
		}
		am, aok := a[k].(map[string]any)
		bm, bok := b[k].(map[string]any)
		if !aok || !bok {
			out = append(out, k)
			continue
		}
		for _, kk := range union(am, bm) {
			if !reflect.DeepEqual(am[kk], bm[kk]) {
				out = append(out, k+"."+kk)
			}
		}
	}
	if len(out) == 0 {
		out = []string{"the definition's encoding"}
	}
	return out
}

func union(a, b map[string]any) []string {
	keys := slices.Collect(maps.Keys(a))
	for k := range b {
		if _, ok := a[k]; !ok {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	return keys
}

// experimentChanges compares the experiments lists by name.
func experimentChanges(a, b any) []string {
	byName := func(v any) ([]string, map[string]map[string]any) {
		list, _ := v.([]any)
		var names []string
		m := map[string]map[string]any{}
		for _, e := range list {
			if em, ok := e.(map[string]any); ok {
				name := fmt.Sprint(em["name"])
				names, m[name] = append(names, name), em
			}
		}
		return names, m
	}
	an, am := byName(a)
	bn, bm := byName(b)
	var out []string
	for _, n := range bn {
		old, ok := am[n]
		if !ok {
			out = append(out, fmt.Sprintf("experiment %s added", n))
			continue
		}
		var keys []string
		for _, k := range union(old, bm[n]) {
			if !reflect.DeepEqual(old[k], bm[n][k]) {
				keys = append(keys, k)
			}
		}
		if len(keys) > 0 {
			out = append(out, fmt.Sprintf("experiment %s: %s", n, strings.Join(keys, ", ")))
		}
	}
	for _, n := range an {
		if _, ok := bm[n]; !ok {
			out = append(out, fmt.Sprintf("experiment %s removed", n))
		}
	}
	if len(out) == 0 {
		out = append(out, "experiments' order")
	}
	return out
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
	exe := opts.Executor
	if exe == nil {
		exe = Local{}
	}
	unlock, err := openDir(p.out, opts)
	if err != nil {
		return nil, err
	}
	if unlock != nil {
		defer unlock()
	}
	st, err := resume(p, opts, exe)
	if err != nil {
		return nil, err
	}
	x := &Execution{Prepared: p, State: st, Options: opts, Began: time.Now().UTC(), readOnly: unlock == nil}
	if opts.ReadOnly {
		return look(ctx, exe, x)
	}
	return execute(ctx, exe, x)
}

// openDir creates the campaign directory and locks it; the unlock is nil where a read-only look found it held by
// another lem-run.
func openDir(dir string, opts Options) (unlock func(), err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("campaign directory: %w", err)
	}
	unlock, err = lock(dir)
	switch {
	case err == nil:
		return unlock, nil
	case opts.ReadOnly && errors.Is(err, ErrLocked):
		opts.Log.Debug("campaign directory in use: reading only", "err", err)
		return nil, nil
	}
	return nil, err
}

// resume builds the campaign's state: the file's definition, what an earlier state of the directory carries over
// (refused where the file changed without --force, or where runs are still with another executor), and every
// planned run as its directory holds it.
func resume(p *Prepared, opts Options, exe Executor) (*State, error) {
	st, err := newState(p, exe)
	if err != nil {
		return nil, err
	}
	old, err := carryOver(p, st, opts, exe)
	if err != nil {
		return nil, err
	}
	if st.Instance == "" {
		st.Instance = newInstance()
	}
	for name, file := range p.catFiles {
		if rel, err := filepath.Rel(p.out, file); err == nil && !strings.HasPrefix(rel, "..") {
			file = rel
		}
		st.Catalogues[name] = file
	}
	if err := readRuns(p, st, old); err != nil {
		return nil, err
	}
	return st, nil
}

// newState is the state of a campaign starting now with the prepared file.
func newState(p *Prepared, exe Executor) (*State, error) {
	f := p.File
	def, err := f.Definition()
	if err != nil {
		return nil, err
	}
	dsum := sha256.Sum256(def)
	return &State{SchemaVersion: "1", Campaign: f.Name, File: f.path, FileSHA256: f.sum, Definition: def,
		DefinitionSHA256: hex.EncodeToString(dsum[:]), Structure: f.Structure, Cycles: f.Cycles, Status: "running",
		Started: time.Now().UTC(), Catalogues: map[string]string{}, Executor: exe.Name()}, nil
}

// carryOver reads the directory's earlier state, if any, and keeps its start and instance in st. It refuses a
// changed file without opts.Force, and another executor while runs are still with the earlier one.
func carryOver(p *Prepared, st *State, opts Options, exe Executor) (*State, error) {
	f := p.File
	old, err := ReadState(p.out)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("resuming: %w", err)
	}
	if changed := changes(old, st); len(changed) > 0 {
		what := fmt.Sprintf("campaign file %s changed since %s was written (%s)", f.path,
			filepath.Join(p.out, StateFile), strings.Join(changed, "; "))
		if !opts.Force {
			return nil, fmt.Errorf("%s: resume with --force to keep the runs already ok under the new file, or use another --out", what)
		}
		opts.Log.Warn(what + "; resuming (--force): runs already ok under an id of the new plan are kept")
	}
	st.Started, st.Instance = old.Started, old.Instance
	if inCluster := old.inCluster(); old.Executor != exe.Name() && len(inCluster) > 0 && !opts.ReadOnly {
		return nil, fmt.Errorf("campaign %s: %d run(s) are still with executor %s (%s, …): resume with --executor %s, or cancel them (--executor %s --cancel)",
			f.Name, len(inCluster), old.Executor, inCluster[0], old.Executor, old.Executor)
	}
	return old, nil
}

// readRuns fills the state's runs and backend start-ups from what the campaign directory holds, read by the rules
// lem-analyze reads it by: each run's directory is its current attempt, .attempts/ its earlier ones. A run keeps
// its cluster jobs from the old state.
func readRuns(p *Prepared, st, old *State) error {
	earlier, err := report.EarlierAttempts(p.out)
	if err != nil {
		return err
	}
	prior := map[string][]Job{}
	if old != nil {
		for _, r := range old.Runs {
			prior[r.RunID] = r.Jobs
		}
	}
	for _, pl := range p.Plan {
		rs := RunState{Position: pl.Position, Cycle: pl.Cycle, Experiment: pl.Config.Name, RunID: pl.RunID, Status: "pending",
			Attempts: report.Attempts(p.out, pl.RunID, earlier), Jobs: prior[pl.RunID]}
		current(&rs, filepath.Join(p.out, pl.RunID))
		st.Runs = append(st.Runs, rs)
	}
	st.Startups = startups(p, earlier)
	return nil
}

// look reconciles the state with what the executor knows, runs nothing, and saves it where the directory is ours.
func look(ctx context.Context, exe Executor, x *Execution) (*State, error) {
	err := exe.Reconcile(ctx, x)
	summarise(x.Prepared, x.State)
	x.State.Status = looked(x.State, x.readOnly)
	x.Save()
	return x.State, err
}

// execute has the executor carry out the runs, then summarises them and writes the final state.
func execute(ctx context.Context, exe Executor, x *Execution) (*State, error) {
	p, st := x.Prepared, x.State
	if err := writeState(p.out, st); err != nil {
		return st, err
	}
	err := exe.Execute(ctx, x)
	summarise(p, st)
	err = conclude(ctx, x, err)
	if werr := writeState(p.out, st); werr != nil {
		err = errors.Join(err, werr)
	}
	return st, err
}

// conclude sets the campaign's status from the execution's error and its runs, and returns the error to report:
// interrupted, stopped, submitted (runs still queued with a cluster), or done — incomplete where runs failed.
func conclude(ctx context.Context, x *Execution, err error) error {
	p, st, name := x.Prepared, x.State, x.Prepared.File.Name
	var failed []RunState
	queued := 0
	for _, r := range st.Runs {
		switch r.Status {
		case manifest.StatusOK, "pending":
		case StatusQueued, StatusRunning:
			queued++
		default:
			failed = append(failed, r)
		}
	}
	switch {
	case err != nil && ctx.Err() != nil:
		st.Status = "interrupted"
		err = fmt.Errorf("campaign %s interrupted%s; state in %s; run it again to resume: %w", name,
			during(p, x.Stopped), filepath.Join(p.out, StateFile), err)
	case err != nil:
		st.Status = "incomplete"
		err = fmt.Errorf("campaign %s stopped%s: %w", name, during(p, x.Stopped), err)
	case queued > 0:
		st.Status = StatusSubmitted
	default:
		st.Status = "done"
		if len(failed) > 0 {
			st.Status = "incomplete"
			err = &IncompleteError{Campaign: name, Dir: p.out, Failed: failed, Runs: len(st.Runs)}
		}
	}
	return err
}

// looked is the status of a campaign read without executing it: running while another lem-run executes it,
// submitted while runs are with a cluster, else what its runs say.
func looked(st *State, inUse bool) string {
	ok, notOK := 0, 0
	for _, r := range st.Runs {
		switch r.Status {
		case manifest.StatusOK:
			ok++
		case StatusPending:
		default:
			notOK++
		}
	}
	switch {
	case inUse:
		return "running"
	case len(st.inCluster()) > 0:
		return StatusSubmitted
	case ok == len(st.Runs):
		return "done"
	case ok+notOK == 0:
		return StatusPending
	}
	return "incomplete"
}

// current fills a run's state from its run directory's manifest, if it has one: a run whose runner died without
// marking it is crashed, as lem-analyze reports it.
func current(rs *RunState, dir string) {
	m, err := manifest.Read(dir)
	if err != nil {
		return
	}
	rs.Status, rs.Error, rs.DurationS = m.Status, m.Error, m.Times.DurationS
	if m.Status == manifest.StatusRunning && m.Runner != nil && m.Runner.Gone() {
		rs.Status = manifest.StatusCrashed
	}
}

// startups lists the backend containers' start-up runs the campaign directory holds (numbered from 1 per backend).
func startups(p *Prepared, earlier map[string][]string) []RunState {
	var out []RunState
	for _, name := range slices.Sorted(maps.Keys(p.File.Backends)) {
		label := "startup-" + name
		for n := 1; ; n++ {
			id := runID(p.File.Name, label, n)
			rs := RunState{Experiment: label, RunID: id, Status: manifest.StatusError, Error: "no run directory",
				Attempts: report.Attempts(p.out, id, earlier)}
			if rs.Attempts == 0 {
				break
			}
			current(&rs, filepath.Join(p.out, id))
			if m, err := manifest.Read(filepath.Join(p.out, id)); err == nil {
				rs.Cycle = m.Cycle
			}
			out = append(out, rs)
		}
	}
	return out
}

// during names the run a campaign stopped in, and its directory.
func during(p *Prepared, pl *Planned) string {
	if pl == nil {
		return ""
	}
	return fmt.Sprintf(" during run %s (%s)", pl.RunID, filepath.Join(p.out, pl.RunID))
}

// IncompleteError is a campaign that ran to its end with runs that did not end ok.
type IncompleteError struct {
	Campaign string
	Dir      string
	Failed   []RunState
	Runs     int
}

func (e *IncompleteError) Error() string {
	first := e.Failed[0]
	msg := fmt.Sprintf("campaign %s: %d of %d runs did not end ok: %s %s", e.Campaign, len(e.Failed), e.Runs,
		first.RunID, first.Status)
	if first.Error != "" {
		msg += " (" + first.Error + ")"
	}
	if _, err := os.Stat(filepath.Join(e.Dir, first.RunID)); err == nil {
		msg += " in " + filepath.Join(e.Dir, first.RunID)
	}
	if len(e.Failed) > 1 {
		msg += fmt.Sprintf(", and %d more", len(e.Failed)-1)
	}
	return strings.ReplaceAll(msg, "\n", "; ") + fmt.Sprintf("; see %s; run the campaign again to redo them",
		filepath.Join(e.Dir, StateFile))
}

// Is makes an IncompleteError an ErrIncomplete.
func (e *IncompleteError) Is(target error) bool { return target == ErrIncomplete }

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
func summarise(p *Prepared, st *State) {
	var dirs []string
	for _, r := range st.Runs {
		dir := filepath.Join(p.out, r.RunID)
		if _, err := os.Stat(filepath.Join(dir, manifest.FileName)); err == nil {
			dirs = append(dirs, dir)
		}
	}
	if len(dirs) == 0 {
		return
	}
	runs, probs := report.Load(dirs)
	st.Problems = probs
	if exps, err := report.Experiments(runs, ""); err == nil {
		st.Experiments = exps
	}
}
