// Package manifest owns the run directory's manifest.json: what lem-run measured for one experiment run, in a
// versioned schema (docs/MANIFEST.md) that lem-analyze and users' own tools read.
package manifest

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/lem-energy/lem/internal/fileutil"
	"github.com/lem-energy/lem/internal/meta"
	"github.com/lem-energy/lem/internal/trace"
)

// SchemaVersion is the manifest layout version.
const SchemaVersion = "1"

// File names inside a run directory.
const (
	FileName    = "manifest.json"
	TraceFile   = "trace.parquet"
	StdoutFile  = "stdout.log"
	StderrFile  = "stderr.log"
	ResultsDir  = "results"
	StatusOK    = "ok"
	StatusFail  = "failed"
	StatusIntr  = "interrupted"
	StatusTime  = "timeout"
	StatusError = "error"
)

// Manifest describes one run.
type Manifest struct {
	SchemaVersion string            `json:"schema_version"`
	RunID         string            `json:"run_id"`
	Experiment    string            `json:"experiment"`
	Campaign      string            `json:"campaign,omitempty"`
	Cycle         int               `json:"cycle,omitempty"`
	Position      int               `json:"position,omitempty"`  // 1-based place in the campaign's run order
	Variables     map[string]string `json:"variables,omitempty"` // the campaign grid's values for this run
	Inference     *Inference        `json:"inference_backend,omitempty"`
	Status        string            `json:"status"`
	ExitCode      *int              `json:"exit_code,omitempty"`
	Error         string            `json:"error,omitempty"`
	Backend       string            `json:"backend"` // process or docker
	Command       []string          `json:"command"`
	Image         *Image            `json:"image,omitempty"`
	Container     *Container        `json:"container,omitempty"`
	Environment   meta.Environment  `json:"environment"`
	Times         Times             `json:"times"`
	Cooldown      *Cooldown         `json:"cooldown,omitempty"`
	GPUs          []GPU             `json:"gpus"`
	Energy        Energy            `json:"energy"`
	// ObservedEnergy is the energy of GPUs sampled alongside but not given to the workload (--observe): reported
	// apart, never added to Energy.
	ObservedEnergy *Energy           `json:"observed_energy,omitempty"`
	Phases         []Phase           `json:"phases,omitempty"`
	Results        map[string]string `json:"results,omitempty"`
	Derived        *Derived          `json:"derived,omitempty"`
	Markers        Markers           `json:"markers"`
	Warnings       []Warning         `json:"warnings"`
	Files          Files             `json:"files"`
	LemVersion     string            `json:"lem_version"`
}

// Inference records the inference engine's parameters for the run: versions, the parameters the experiment set,
// and the effective value of every parameter in the engine's catalogue (explicit or the engine's default).
type Inference struct {
	Backend   string           `json:"backend"` // transformers, vllm, tensorrt-llm, python
	Version   string           `json:"version"`
	Torch     string           `json:"torch,omitempty"`
	CUDA      string           `json:"cuda,omitempty"`
	Source    string           `json:"catalogue_source"` // image ID or interpreter the catalogue came from
	Explicit  map[string]any   `json:"explicit"`
	Effective []EffectiveParam `json:"effective"`
}

// EffectiveParam is one catalogue parameter's value in a run.
type EffectiveParam struct {
	Name     string `json:"name"`
	Group    string `json:"group"`
	Value    any    `json:"value"`
	Explicit bool   `json:"explicit"`
}

// Image is the container image run.
type Image struct {
	Name    string   `json:"name"`
	ID      string   `json:"id"`
	Digests []string `json:"digests,omitempty"`
}

// Container is what the Docker Engine reported about the run's container.
type Container struct {
	ID         string    `json:"id"`
	Name       string    `json:"name"`
	ExitCode   int       `json:"exit_code"`
	OOMKilled  bool      `json:"oom_killed"`
	StartedAt  time.Time `json:"started_at,omitzero"`
	FinishedAt time.Time `json:"finished_at,omitzero"`
	Kept       bool      `json:"kept"`
}

// Times bound the run: the baseline window, and the workload from just before its start to just after its exit
// (the bracketing counter reads).
type Times struct {
	BaselineStart time.Time `json:"baseline_start,omitzero"`
	BaselineEnd   time.Time `json:"baseline_end,omitzero"`
	Start         time.Time `json:"start"`
	End           time.Time `json:"end"`
	DurationS     float64   `json:"duration_s"`
}

// Cooldown records the gate before the baseline.
type Cooldown struct {
	Mode    string  `json:"mode"` // "temperature" or "stable"
	TargetC float64 `json:"target_c,omitempty"`
	WaitedS float64 `json:"waited_s"`
	Reached bool    `json:"reached"`
	Message string  `json:"message,omitempty"`
}

// GPU roles.
const (
	RoleWorkload = "workload"
	RoleObserved = "observed"
)

// Baseline is one GPU's idle power.
type Baseline struct {
	Start      time.Time `json:"start"`
	End        time.Time `json:"end"`
	MedianW    float64   `json:"median_w"`
	P25W       float64   `json:"p25_w"`
	P75W       float64   `json:"p75_w"`
	IQRW       float64   `json:"iqr_w"`
	Samples    int       `json:"samples"`
	TempStartC *float64  `json:"temp_start_c,omitempty"`
	TempEndC   *float64  `json:"temp_end_c,omitempty"`
	Reused     bool      `json:"reused"`
	AgeS       float64   `json:"age_s,omitempty"`
}

// CounterRead is one bracketing read of the energy counter.
type CounterRead struct {
	Time     time.Time `json:"time"`
	EnergyMJ uint64    `json:"energy_mj"`
}

// GPU is one GPU's result.
type GPU struct {
	Index        int                `json:"index"`
	Role         string             `json:"role"` // workload, or observed (idle neighbour, not in the totals)
	UUID         string             `json:"uuid"`
	Name         string             `json:"name"`
	Baseline     *Baseline          `json:"baseline,omitempty"`
	CounterStart *CounterRead       `json:"counter_start,omitempty"`
	CounterEnd   *CounterRead       `json:"counter_end,omitempty"`
	Energy       Energy             `json:"energy"`
	MeanPowerW   float64            `json:"mean_power_w"`
	PeakPowerW   float64            `json:"peak_power_w"`
	TempStartC   *float64           `json:"temp_start_c,omitempty"`
	TempEndC     *float64           `json:"temp_end_c,omitempty"`
	ThrottleS    map[string]float64 `json:"throttle_s,omitempty"`
	Capture      Capture            `json:"capture"`
}

// Energy by method, in joules. CounterJ is the exact counter difference between the bracketing reads; HybridJ
// covers exactly the workload's run (counter total, 50 Hz shape); AdjustedJ is HybridJ minus idle power.
type Energy struct {
	CounterJ        float64 `json:"counter_j"`
	HybridJ         float64 `json:"hybrid_j"`
	SampledJ        float64 `json:"sampled_j"`
	AdjustedJ       float64 `json:"adjusted_j"`
	AdjustedClamped bool    `json:"adjusted_clamped,omitempty"`
}

// Add adds o to e; a clamped adjustment stays flagged.
func (e *Energy) Add(o Energy) {
	e.CounterJ += o.CounterJ
	e.HybridJ += o.HybridJ
	e.SampledJ += o.SampledJ
	e.AdjustedJ += o.AdjustedJ
	e.AdjustedClamped = e.AdjustedClamped || o.AdjustedClamped
}

// AddGPU appends a GPU's result and adds its energy to the total of its role: Energy for the workload's GPUs,
// ObservedEnergy (created on first use) for observed ones.
func (m *Manifest) AddGPU(g GPU) {
	m.GPUs = append(m.GPUs, g)
	m.AddGPUEnergy(g)
}

// AddGPUEnergy adds a GPU's energy to the total of its role (see AddGPU).
func (m *Manifest) AddGPUEnergy(g GPU) {
	total := &m.Energy
	if g.Role == RoleObserved {
		if m.ObservedEnergy == nil {
			m.ObservedEnergy = &Energy{}
		}
		total = m.ObservedEnergy
	}
	total.Add(g.Energy)
}

// Capture is the power-sample capture quality over the run.
type Capture struct {
	Samples   int `json:"samples"`
	Gaps      int `json:"gaps"`
	DrainGaps int `json:"drain_gaps"`
	Overruns  int `json:"overruns"`
}

// Phase is one workload phase.
type Phase struct {
	Name      string     `json:"name"`
	Start     time.Time  `json:"start"`
	End       time.Time  `json:"end"`
	DurationS float64    `json:"duration_s"`
	GPUs      []PhaseGPU `json:"gpus"`
	Energy    Energy     `json:"energy"` // summed over GPUs
}

// PhaseGPU is one GPU's energy in a phase.
type PhaseGPU struct {
	Index     int     `json:"index"`
	HybridJ   float64 `json:"hybrid_j"`
	AdjustedJ float64 `json:"adjusted_j"`
}

// Derived are per-unit figures from the workload's results.
type Derived struct {
	OutputTokens        float64 `json:"output_tokens,omitempty"`
	Requests            float64 `json:"requests,omitempty"`
	JPerOutputToken     float64 `json:"j_per_output_token,omitempty"`
	JPerOutputTokenAdj  float64 `json:"j_per_output_token_adjusted,omitempty"`
	OutputTokensPerJ    float64 `json:"output_tokens_per_j,omitempty"`
	OutputTokensPerJAdj float64 `json:"output_tokens_per_j_adjusted,omitempty"`
	JPerRequest         float64 `json:"j_per_request,omitempty"`
	JPerRequestAdj      float64 `json:"j_per_request_adjusted,omitempty"`
}

// Markers counts the workload's marker lines.
type Markers struct {
	Parsed    int `json:"parsed"`
	Malformed int `json:"malformed"`
	HTTP      int `json:"http"`
}

// Warning is a quality flag; Code is stable for tools, Message for people.
type Warning struct {
	Code    string `json:"code"`
	GPU     *int   `json:"gpu,omitempty"`
	Message string `json:"message"`
}

// Files are paths relative to the run directory.
type Files struct {
	Trace   string `json:"trace"`
	Stdout  string `json:"stdout"`
	Stderr  string `json:"stderr"`
	Results string `json:"results"`
}

// Write stores m as dir/manifest.json atomically.
func Write(dir string, m *Manifest) error {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding manifest: %w", err)
	}
	if err := fileutil.WriteAtomic(filepath.Join(dir, FileName), append(b, '\n')); err != nil {
		return fmt.Errorf("writing manifest in %s: %w", dir, err)
	}
	return nil
}

// MaxSize bounds a manifest file: the largest ones, with a backend's whole parameter catalogue, take about a
// megabyte.
const MaxSize = 64 << 20

// Read loads dir/manifest.json (or the given file) and checks it (see Parse).
func Read(path string) (*Manifest, error) {
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		path = filepath.Join(path, FileName)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading manifest: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxSize+1))
	if err != nil {
		return nil, fmt.Errorf("reading manifest: %w", err)
	}
	if len(b) > MaxSize {
		return nil, fmt.Errorf("manifest %s: larger than %d bytes", path, MaxSize)
	}
	return Parse(path, b)
}

// Parse decodes a manifest and checks its version and what readers rely on: a run id usable as a directory
// name, a known status, GPU indices in range and each listed once, intervals that do not end before they start.
// name is the file the bytes came from, for errors.
func Parse(name string, b []byte) (*Manifest, error) {
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("manifest %s: %w", name, err)
	}
	if m.SchemaVersion != SchemaVersion {
		return nil, fmt.Errorf("manifest %s: schema version %q, this lem reads %q", name, m.SchemaVersion, SchemaVersion)
	}
	if err := m.check(); err != nil {
		return nil, fmt.Errorf("manifest %s: %w", name, err)
	}
	return &m, nil
}

var statuses = []string{StatusOK, StatusFail, StatusIntr, StatusTime, StatusError}

func (m *Manifest) check() error {
	switch {
	case m.RunID == "":
		return errors.New("run_id: missing")
	case len(m.RunID) > 255 || m.RunID == "." || m.RunID == ".." || strings.ContainsFunc(m.RunID, func(r rune) bool {
		return r == '/' || r == '\\' || unicode.IsControl(r) || r == utf8.RuneError
	}):
		return fmt.Errorf("run_id: %q is not usable as a directory name", m.RunID)
	case !slices.Contains(statuses, m.Status):
		return fmt.Errorf("status: %q, want one of %s", m.Status, strings.Join(statuses, ", "))
	case m.Cycle < 0 || m.Position < 0:
		return fmt.Errorf("cycle %d, position %d: negative", m.Cycle, m.Position)
	}
	if err := interval("times", m.Times.Start, m.Times.End); err != nil {
		return err
	}
	if err := interval("times.baseline", m.Times.BaselineStart, m.Times.BaselineEnd); err != nil {
		return err
	}
	if m.Times.DurationS < 0 {
		return fmt.Errorf("times.duration_s: %g is negative", m.Times.DurationS)
	}
	seen := map[int]bool{}
	for i, g := range m.GPUs {
		switch {
		case g.Index < 0 || g.Index > trace.MaxGPU:
			return fmt.Errorf("gpus[%d].index: %d outside 0..%d", i, g.Index, trace.MaxGPU)
		case seen[g.Index]:
			return fmt.Errorf("gpus[%d].index: GPU %d listed twice", i, g.Index)
		case g.Role != "" && g.Role != RoleWorkload && g.Role != RoleObserved:
			return fmt.Errorf("gpus[%d].role: %q, want %s or %s", i, g.Role, RoleWorkload, RoleObserved)
		}
		seen[g.Index] = true
	}
	for i, p := range m.Phases {
		if err := interval(fmt.Sprintf("phases[%d]", i), p.Start, p.End); err != nil {
			return err
		}
		for j, g := range p.GPUs {
			if g.Index < 0 || g.Index > trace.MaxGPU {
				return fmt.Errorf("phases[%d].gpus[%d].index: %d outside 0..%d", i, j, g.Index, trace.MaxGPU)
			}
		}
	}
	return nil
}

// interval checks that an interval whose ends are both given does not end before it starts.
func interval(field string, start, end time.Time) error {
	if !start.IsZero() && !end.IsZero() && end.Before(start) {
		return fmt.Errorf("%s: ends (%s) before it starts (%s)", field, end.Format(time.RFC3339Nano), start.Format(time.RFC3339Nano))
	}
	return nil
}

// PhaseTotal sums the occurrences of one phase name (prefill, decode once per batch).
type PhaseTotal struct {
	Name      string
	Count     int
	DurationS float64
	HybridJ   float64
	AdjustedJ float64
}

// PhaseTotals sums the phases by name, in order of first appearance.
func (m *Manifest) PhaseTotals() []PhaseTotal {
	var out []PhaseTotal
	at := map[string]int{}
	for _, p := range m.Phases {
		i, ok := at[p.Name]
		if !ok {
			i = len(out)
			at[p.Name] = i
			out = append(out, PhaseTotal{Name: p.Name})
		}
		out[i].Count++
		out[i].DurationS += p.DurationS
		out[i].HybridJ += p.Energy.HybridJ
		out[i].AdjustedJ += p.Energy.AdjustedJ
	}
	return out
}
