// Package manifest owns the run directory's manifest.json: what lem-run measured for one experiment run, in a
// versioned schema (docs/MANIFEST.md) that lem-analyze and users' own tools read.
package manifest

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/lem-energy/lem/internal/fileutil"
	"github.com/lem-energy/lem/internal/meta"
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

// Read loads dir/manifest.json (or the given file) and checks its version.
func Read(path string) (*Manifest, error) {
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		path = filepath.Join(path, FileName)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading manifest: %w", err)
	}
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("manifest %s: %w", path, err)
	}
	if m.SchemaVersion != SchemaVersion {
		return nil, fmt.Errorf("manifest %s: schema version %q, this lem reads %q", path, m.SchemaVersion, SchemaVersion)
	}
	return &m, nil
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
