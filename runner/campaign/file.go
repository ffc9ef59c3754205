// Package campaign runs grids of experiment configurations over repeated cycles with lem-run's measurement of
// each run, resumably, and summarises them with the analyzer's statistics.
package campaign

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/lem-energy/lem/runner"
)

// Duration is a YAML duration ("30s", "5m").
type Duration time.Duration

// UnmarshalYAML parses Go duration syntax.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil || v < 0 {
		return fmt.Errorf("line %d: %q is not a duration (want e.g. 30s, 5m)", n.Line, n.Value)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes Go duration syntax (the campaign state's copy of the file reads like the file).
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// D is the time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// File is a campaign file.
type File struct {
	Name       string   `yaml:"name"`
	Cycles     int      `yaml:"cycles"`
	Structure  string   `yaml:"structure"` // interleaved (default), shuffled, grouped
	Seed       *uint64  `yaml:"seed"`      // for shuffled
	MaxRuns    int      `yaml:"max_runs"`  // refuse plans larger than this (default 500, at most MaxPlanRuns)
	WarmupRuns int      `yaml:"warmup_runs"`
	GPUs       []string `yaml:"gpus"`
	Timeout    Duration `yaml:"timeout"` // per run
	Gaps       struct {
		BetweenRuns   Duration `yaml:"between_runs"`
		BetweenCycles Duration `yaml:"between_cycles"`
	} `yaml:"gaps"`
	Cooldown struct {
		Target  string   `yaml:"target"` // e.g. 45C, or "stable"
		Timeout Duration `yaml:"timeout"`
	} `yaml:"cooldown"`
	Baseline struct {
		Policy   string    `yaml:"policy"` // per_run (default), per_cycle, ttl
		Duration *Duration `yaml:"duration"`
		TTL      Duration  `yaml:"ttl"`
	} `yaml:"baseline"`
	Backends    map[string]*Persistent `yaml:"backends"`
	Experiments []*Experiment          `yaml:"experiments"`
	Executor    ExecutorSpec           `yaml:"executor,omitempty"`

	path string
	sum  string
	root *yaml.Node
}

// Persistent is a long-running backend container shared by the runs of the experiments that name it.
type Persistent struct {
	Image      string            `yaml:"image"`
	Entrypoint []string          `yaml:"entrypoint"`
	Command    []string          `yaml:"command"`
	Volumes    []string          `yaml:"volumes"` // SRC:DST[:ro]; a relative SRC is relative to the campaign file
	Env        map[string]string `yaml:"env"`
	Health     struct {
		HTTP    string   `yaml:"http"` // "{host}" is the container's address
		Command []string `yaml:"command"`
		Timeout Duration `yaml:"timeout"`
	} `yaml:"health"`
	// Mode: exec (each run's command runs inside the container, the default) or client (each run runs as its
	// own process or container against the server).
	Mode           string `yaml:"mode"`
	ForceColdStart bool   `yaml:"force_cold_start"`
}

// Experiment is one configuration, or a grid of them (vary).
type Experiment struct {
	Name          string            `yaml:"name"`
	Image         string            `yaml:"image"`
	Entrypoint    []string          `yaml:"entrypoint"`
	Volumes       []string          `yaml:"volumes"` // SRC:DST[:ro]; a relative SRC is relative to the campaign file
	Command       []string          `yaml:"command"`
	Env           map[string]string `yaml:"env"`
	GPUs          []string          `yaml:"gpus"`
	Timeout       Duration          `yaml:"timeout"`
	Backend       string            `yaml:"backend"` // inference backend: transformers, vllm, tensorrt-llm, python
	BackendTarget []string          `yaml:"backend_targets"`
	Python        string            `yaml:"python"`    // interpreter for introspection (default python3)
	Catalogue     string            `yaml:"catalogue"` // a saved catalogue instead of introspecting
	BackendParams map[string]any    `yaml:"backend_params"`
	Container     string            `yaml:"backend_container"` // a key of backends
	Vary          map[string][]any  `yaml:"vary"`
	Expected      Duration          `yaml:"expected_duration"` // for the plan's duration estimate

	index int
}

var unknownField = regexp.MustCompile(`line (\d+): field (\S+) not found in type \S+`)

// Limits on a campaign file.
const (
	// MaxPlanRuns is the largest max_runs a file may set: a plan is expanded in memory before it runs.
	MaxPlanRuns = 100_000
	// maxFileSize bounds the campaign file itself.
	maxFileSize = 16 << 20
)

// Load reads and validates a campaign file. Errors name the file, line and key.
func Load(path string) (*File, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("campaign file: %w", err)
	}
	if st.Size() > maxFileSize {
		return nil, fmt.Errorf("campaign file %s: %d bytes, more than %d", path, st.Size(), maxFileSize)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("campaign file: %w", err)
	}
	return Parse(path, b)
}

// Parse validates the content b of the campaign file at path (relative volumes and catalogues are relative to
// it).
func Parse(path string, b []byte) (*File, error) {
	f := &File{path: path}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(f); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%s: empty campaign file", path)
		}
		return nil, fileError(path, err)
	}
	var root yaml.Node
	if err := yaml.Unmarshal(b, &root); err != nil {
		return nil, fileError(path, err)
	}
	f.root = &root
	s := sha256.Sum256(b)
	f.sum = hex.EncodeToString(s[:])
	if err := f.validate(); err != nil {
		return nil, err
	}
	return f, nil
}

// fileError rewrites the YAML library's messages as FILE:LINE: message, one per line.
func fileError(path string, err error) error {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		var errs []error
		for _, e := range te.Errors {
			msg := e
			if m := unknownField.FindStringSubmatch(msg); m != nil {
				errs = append(errs, fmt.Errorf("%s:%s: unknown key %q", path, m[1], m[2]))
				continue
			}
			if rest, ok := strings.CutPrefix(msg, "line "); ok {
				if n, msg, ok := strings.Cut(rest, ": "); ok {
					errs = append(errs, fmt.Errorf("%s:%s: %s", path, n, msg))
					continue
				}
			}
			errs = append(errs, fmt.Errorf("%s: %s", path, msg))
		}
		return errors.Join(errs...)
	}
	if rest, ok := strings.CutPrefix(err.Error(), "line "); ok {
		if n, msg, ok := strings.Cut(rest, ": "); ok {
			return fmt.Errorf("%s:%s: %s", path, n, msg)
		}
	}
	return fmt.Errorf("%s: %w", path, err)
}

// node finds the value at a key path (mapping keys and sequence indexes) in the file; nil where there is none.
func (f *File) node(path ...string) *yaml.Node {
	n := f.root
	if n != nil && n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	for _, p := range path {
		n, _ = child(n, p)
	}
	return n
}

// child is the value under key p of a mapping or sequence node, and the line of its key.
func child(n *yaml.Node, p string) (*yaml.Node, int) {
	if n == nil {
		return nil, 0
	}
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == p {
				return n.Content[i+1], n.Content[i].Line
			}
		}
	case yaml.SequenceNode:
		if i, err := strconv.Atoi(p); err == nil && i >= 0 && i < len(n.Content) {
			return n.Content[i], n.Content[i].Line
		}
	}
	return nil, 0
}

// line finds the line of a key path (mapping keys and sequence indexes) in the file: the deepest part found.
func (f *File) line(path ...string) int {
	n := f.root
	if n != nil && n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	line := 1
	for _, p := range path {
		next, l := child(n, p)
		if next == nil {
			break
		}
		n, line = next, l
	}
	return line
}

// errAt is a validation error at a key path.
func (f *File) errAt(path []string, format string, a ...any) error {
	return fmt.Errorf("%s:%d: %s: %s", f.path, f.line(path...), strings.Join(path, "."), fmt.Sprintf(format, a...))
}

var (
	structures = []string{"interleaved", "shuffled", "grouped"}
	policies   = []string{"per_run", "per_cycle", "ttl"}
	backends   = []string{"transformers", "vllm", "tensorrt-llm", "python"}
	varName    = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
)

// problems collects validation errors at key paths, so one pass reports every problem of a file.
type problems func(path []string, format string, a ...any)

// validate checks the file section by section and applies defaults; errors come in the order of the sections.
func (f *File) validate() error {
	var errs []error
	bad := func(path []string, format string, a ...any) { errs = append(errs, f.errAt(path, format, a...)) }
	f.validateTop(bad)
	f.validateBaseline(bad)
	f.validateBackends(bad)
	f.validateExecutor(bad)
	f.validateExperiments(bad)
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	return nil
}

// validateTop checks the campaign's name and the plan's shape (cycles, structure, size, warm-ups).
func (f *File) validateTop(bad problems) {
	if f.Name == "" {
		bad([]string{"name"}, "required (names the campaign and its runs)")
	} else if !varName.MatchString(strings.ReplaceAll(f.Name, "-", "_")) {
		bad([]string{"name"}, "%q: use letters, digits, - and _", f.Name)
	}
	if f.Cycles == 0 && f.node("cycles") == nil {
		f.Cycles = 1
	}
	if f.Cycles < 1 {
		bad([]string{"cycles"}, "%d: must be at least 1", f.Cycles)
	}
	if f.Structure == "" {
		f.Structure = "interleaved"
	}
	if !slices.Contains(structures, f.Structure) {
		bad([]string{"structure"}, "%q: want one of %s", f.Structure, strings.Join(structures, ", "))
	}
	if f.MaxRuns == 0 && f.node("max_runs") == nil {
		f.MaxRuns = 500
	}
	if f.MaxRuns < 1 || f.MaxRuns > MaxPlanRuns {
		bad([]string{"max_runs"}, "%d: must be 1 to %d", f.MaxRuns, MaxPlanRuns)
	}
	if f.WarmupRuns < 0 {
		bad([]string{"warmup_runs"}, "%d: must not be negative", f.WarmupRuns)
	}
}

// validateBaseline checks the baseline policy and the cool-down gate.
func (f *File) validateBaseline(bad problems) {
	if f.Baseline.Policy == "" {
		f.Baseline.Policy = "per_run"
	}
	if !slices.Contains(policies, f.Baseline.Policy) {
		bad([]string{"baseline", "policy"}, "%q: want one of %s", f.Baseline.Policy, strings.Join(policies, ", "))
	}
	if f.Baseline.Policy == "ttl" && f.Baseline.TTL <= 0 {
		bad([]string{"baseline", "ttl"}, "policy ttl needs a ttl (e.g. 15m)")
	}
	if t := f.Cooldown.Target; t != "" {
		if _, err := runner.ParseCooldown(t); err != nil {
			bad([]string{"cooldown", "target"}, "%v", err)
		}
	}
}

// validateBackends checks every backend container, in name order.
func (f *File) validateBackends(bad problems) {
	for _, name := range slices.Sorted(maps.Keys(f.Backends)) {
		p, path := f.Backends[name], []string{"backends", name}
		if p == nil {
			bad(path, "empty: a backend needs an image and a health check")
			continue
		}
		if p.Image == "" {
			bad(append(path, "image"), "required: the backend container's image")
		}
		if p.Mode == "" {
			p.Mode = "exec"
		}
		if p.Mode != "exec" && p.Mode != "client" {
			bad(append(path, "mode"), "%q: want exec or client", p.Mode)
		}
		p.Volumes = f.volumes(append(path, "volumes"), p.Volumes, bad)
		if p.Health.HTTP == "" && len(p.Health.Command) == 0 {
			bad(append(path, "health"), "needs http (URL, {host} = container address) or command")
		}
	}
}

// validateExperiments checks that there are experiments, each valid and named once.
func (f *File) validateExperiments(bad problems) {
	if len(f.Experiments) == 0 {
		bad([]string{"experiments"}, "at least one experiment is required")
	}
	used := map[string]bool{}
	for i, e := range f.Experiments {
		path := []string{"experiments", strconv.Itoa(i)}
		if e == nil {
			bad(path, "empty entry")
			continue
		}
		e.index = i
		if e.Name == "" {
			bad(append(path, "name"), "required")
		}
		if used[e.Name] {
			bad(append(path, "name"), "%q is used by another experiment", e.Name)
		}
		used[e.Name] = true
		f.validateExperiment(e, path, bad)
	}
}

// validateExperiment checks one experiment beyond its name: what it runs, where, its backend and its grid.
func (f *File) validateExperiment(e *Experiment, path []string, bad problems) {
	e.Volumes = f.volumes(append(path, "volumes"), e.Volumes, bad)
	if len(e.Volumes) > 0 && e.Image == "" {
		bad(append(path, "volumes"), "bind mounts need an image (the run is a container)")
	}
	if len(e.Command) == 0 && e.Image == "" {
		bad(path, "needs a command or an image")
	}
	f.validateBackendContainer(e, path, bad)
	if e.Backend != "" && !slices.Contains(backends, e.Backend) {
		bad(append(path, "backend"), "%q: want one of %s", e.Backend, strings.Join(backends, ", "))
	}
	if len(e.BackendParams) > 0 && e.Backend == "" {
		bad(append(path, "backend_params"), "given without backend (which catalogue to check them against?)")
	}
	validateVary(e, path, bad)
	f.placeholders(e, path, bad)
}

// validateBackendContainer checks an experiment's use of a backend container against the container's mode.
func (f *File) validateBackendContainer(e *Experiment, path []string, bad problems) {
	if e.Container == "" {
		return
	}
	switch p, ok := f.Backends[e.Container]; {
	case !ok:
		bad(append(path, "backend_container"), "%q is not declared under backends", e.Container)
	case p == nil: // reported under backends
	case p.Mode == "exec" && len(e.Command) == 0:
		bad(append(path, "command"), "required: it is executed inside backend container %q", e.Container)
	case p.Mode == "exec" && e.Image != "":
		bad(append(path, "image"), "runs execute inside backend container %q; drop image or use mode: client", e.Container)
	}
}

// validateVary checks an experiment's grid: variable names, and lists of scalar values.
func validateVary(e *Experiment, path []string, bad problems) {
	for _, k := range slices.Sorted(maps.Keys(e.Vary)) {
		vs := e.Vary[k]
		if !varName.MatchString(k) {
			bad(append(path, "vary", k), "not a variable name (letters, digits, _)")
		}
		if len(vs) == 0 {
			bad(append(path, "vary", k), "empty list")
		}
		for j, v := range vs {
			switch v.(type) {
			case map[string]any, []any, map[any]any:
				bad(append(path, "vary", k, strconv.Itoa(j)), "a list or mapping; grid values are strings, numbers or booleans")
			}
		}
	}
}

// placeholder is a {var} in a name, command, env value or backend parameter; ${VAR} is shell syntax.
var placeholder = regexp.MustCompile(`\$?\{([A-Za-z_][A-Za-z0-9_]*)\}`)

// placeholders reports every {name} of e that is not one of its vary variables, naming the key and line.
func (f *File) placeholders(e *Experiment, path []string, bad problems) {
	check := func(key []string, s string) {
		for _, m := range placeholder.FindAllStringSubmatch(s, -1) {
			if _, ok := e.Vary[m[1]]; ok || strings.HasPrefix(m[0], "$") {
				continue // a variable, or a shell expansion the grid does not touch
			}
			vars := "it has no vary"
			if len(e.Vary) > 0 {
				vars = "vary has " + strings.Join(slices.Sorted(maps.Keys(e.Vary)), ", ")
			}
			bad(key, "placeholder {%s} is not a vary variable (%s)", m[1], vars)
		}
	}
	check(append(slices.Clone(path), "name"), e.Name)
	for i, a := range e.Command {
		check(append(slices.Clone(path), "command", strconv.Itoa(i)), a)
	}
	for _, k := range slices.Sorted(maps.Keys(e.Env)) {
		check(append(slices.Clone(path), "env", k), e.Env[k])
	}
	for _, k := range slices.Sorted(maps.Keys(e.BackendParams)) {
		if s, ok := e.BackendParams[k].(string); ok {
			check(append(slices.Clone(path), "backend_params", k), s)
		}
	}
}

// volumes checks SRC:DST[:ro] mounts and makes relative sources relative to the campaign file.
func (f *File) volumes(path []string, vs []string, bad problems) []string {
	out := make([]string, 0, len(vs))
	for i, v := range vs {
		parts := strings.Split(v, ":")
		if len(parts) < 2 || len(parts) > 3 || parts[0] == "" || !strings.HasPrefix(parts[1], "/") ||
			(len(parts) == 3 && parts[2] != "ro" && parts[2] != "rw") {
			bad(append(path, strconv.Itoa(i)), "%q: want SRC:DST[:ro] with an absolute DST", v)
			continue
		}
		if !filepath.IsAbs(parts[0]) {
			if abs, err := filepath.Abs(filepath.Join(filepath.Dir(f.path), parts[0])); err == nil {
				parts[0] = abs
			}
		}
		out = append(out, strings.Join(parts, ":"))
	}
	return out
}

// Definition is the campaign as validated, in a canonical form: defaults applied, the file's key names, JSON with
// sorted keys (comments, layout and key order of the file do not matter). The campaign state keeps it.
func (f *File) Definition() (json.RawMessage, error) {
	y, err := yaml.Marshal(f)
	if err != nil {
		return nil, fmt.Errorf("campaign %s: %w", f.Name, err)
	}
	var v any
	if err := yaml.Unmarshal(y, &v); err != nil {
		return nil, fmt.Errorf("campaign %s: %w", f.Name, err)
	}
	b, err := json.Marshal(stringKeys(v))
	if err != nil {
		return nil, fmt.Errorf("campaign %s: %w", f.Name, err)
	}
	return b, nil
}

// stringKeys turns YAML mappings with other than string keys (backend_params: {1: x}) into JSON-encodable ones.
func stringKeys(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, vv := range x {
			x[k] = stringKeys(vv)
		}
	case map[any]any:
		m := make(map[string]any, len(x))
		for k, vv := range x {
			m[fmt.Sprint(k)] = stringKeys(vv)
		}
		return m
	case []any:
		for i, vv := range x {
			x[i] = stringKeys(vv)
		}
	}
	return v
}

// Path is the file's path; Sum its SHA-256.
func (f *File) Path() string { return f.path }

// Sum is the file's SHA-256, recorded in the campaign state.
func (f *File) Sum() string { return f.sum }
