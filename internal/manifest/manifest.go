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

// SchemaVersion is the manifest layout version. Version 2: unmeasured values are null (never 0), phases are
// summed per name (each occurrence stays in the trace), the counter lag and energy method are recorded per GPU.
// Read also accepts version 1.
const SchemaVersion = "2"

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
	// StatusRunning marks a provisional manifest written while the run is in progress; a run directory still
	// saying running after its runner is gone crashed.
	StatusRunning = "running"
	StatusCrashed = "crashed"
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
	// Runner is the lem-run process measuring the run: a manifest still "running" whose runner is gone crashed.
	Runner      *meta.Process    `json:"runner,omitempty"`
	Job         *Job             `json:"job,omitempty"` // the cluster job it was measured in (a campaign on Slurm)
	ExitCode    *int             `json:"exit_code,omitempty"`
	Error       string           `json:"error,omitempty"`
	Backend     string           `json:"backend"` // process or docker
	Command     []string         `json:"command"`
	Image       *Image           `json:"image,omitempty"`
	Container   *Container       `json:"container,omitempty"`
	Environment meta.Environment `json:"environment"`
	Times       Times            `json:"times"`
	Cooldown    *Cooldown        `json:"cooldown,omitempty"`
	GPUs        []GPU            `json:"gpus"`
	Energy      Energy           `json:"energy"`
	// ObservedEnergy is the energy of GPUs sampled alongside but not given to the workload (--observe): reported
	// apart, never added to Energy.
	ObservedEnergy *Energy           `json:"observed_energy,omitempty"`
	Phases         []Phase           `json:"phases,omitempty"`
	Windows        []Window          `json:"windows,omitempty"`
	Processes      *ProcessEnergy    `json:"processes,omitempty"` // the GPUs' energy split among their processes
	Results        map[string]string `json:"results,omitempty"`
	Derived        *Derived          `json:"derived,omitempty"`
	Markers        Markers           `json:"markers"`
	Warnings       []Warning         `json:"warnings"`
	Files          Files             `json:"files"`
	LemVersion     string            `json:"lem_version"`
}

// Job is the scheduler's job a run was measured in: which job, on which node, on the GPUs it was granted.
type Job struct {
	Scheduler string `json:"scheduler"` // slurm
	ID        string `json:"id"`        // the scheduler's job id
	// Submission is the submitter's own name for this submission (campaign instance, run, submission number): a
	// job id alone does not identify a job across a controller crash.
	Submission string `json:"submission,omitempty"`
	Cluster    string `json:"cluster,omitempty"`
	Node       string `json:"node"` // the scheduler's name of the node
	Partition  string `json:"partition,omitempty"`
	Account    string `json:"account,omitempty"`
	User       string `json:"user,omitempty"`
	// GPUs are the scheduler's own ids of the GPUs it granted (Slurm's GRES indices), and GPUMapping how they were
	// matched to the sampled devices (whose UUIDs are in gpus[]): uuid, minor (device files and the driver's PCI
	// bus ids), constrained (only the granted GPUs are visible) or index (GRES index taken as device index).
	GPUs       []string `json:"gpus,omitempty"`
	GPUMapping string   `json:"gpu_mapping,omitempty"`
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
	ID   string `json:"id"`
	Name string `json:"name"`
	// ExitCode is the container's exit code as the Engine reported it: null when it never did (the container did
	// not start, still runs, or the Engine stopped or was lost during the run).
	ExitCode   *int      `json:"exit_code"`
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
	Mode    string  `json:"mode"` // "temperature", "idle" or "stable"
	TargetC float64 `json:"target_c,omitempty"`
	// TargetsC are the per-GPU targets of the "idle" gate (each GPU's usual idle temperature + IdleMarginC), by
	// GPU index; a GPU without a history waits to be stable instead.
	TargetsC map[int]float64 `json:"targets_c,omitempty"`
	WaitedS  float64         `json:"waited_s"`
	Reached  bool            `json:"reached"`
	Message  string          `json:"message,omitempty"`
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
	// UtilMean is the GPU's mean utilization (0-1) over the window: above a few percent it was not idle.
	UtilMean *float64 `json:"util_mean,omitempty"`
	// TempMeanC, SMClockHz and MemUsedBytes describe the idle state measured (deep idle: no context, low clocks).
	TempMeanC    *float64 `json:"temp_mean_c,omitempty"`
	SMClockHz    *float64 `json:"sm_clock_hz,omitempty"`
	MemUsedBytes *float64 `json:"mem_used_bytes,omitempty"`
	// PState is the performance state the GPU sat in most (P8 and above: clocks down).
	PState *float64 `json:"pstate,omitempty"`
	// DriftW is the second half's median power minus the first half's: a baseline still settling drifts.
	DriftW *float64 `json:"drift_w,omitempty"`
	// TempFit is idle power against temperature on this GPU, fitted over the baselines this host measured; the
	// accounting corrects the baseline to the run's temperature with it.
	TempFit *TempFit `json:"temp_fit,omitempty"`
	Reused  bool     `json:"reused"`
	AgeS    float64  `json:"age_s,omitempty"`
}

// TempFit is a linear fit of idle power against temperature: W = InterceptW + SlopeWPerC × °C.
type TempFit struct {
	SlopeWPerC float64 `json:"slope_w_per_c"`
	SlopeSE    float64 `json:"slope_se"` // standard error of the slope
	InterceptW float64 `json:"intercept_w"`
	Points     int     `json:"points"`
	SpanC      float64 `json:"span_c"`
	// MinC and MaxC are the temperatures the fit saw: the correction does not extrapolate beyond them.
	MinC float64 `json:"min_c"`
	MaxC float64 `json:"max_c"`
}

// ActiveIdle is a GPU's idle power with the workload's context held (clocks up, memory allocated, nothing running):
// what "adjusted to active idle" subtracts. Source says where it was measured: "window" (the workload's own windows
// named idle) or "zero_utilization" (stretches inside the run with no kernel running and the context held).
type ActiveIdle struct {
	Source    string   `json:"source"`
	MedianW   float64  `json:"median_w"`
	Samples   int      `json:"samples"`
	DurationS float64  `json:"duration_s"`
	SMClockHz *float64 `json:"sm_clock_hz,omitempty"`
	PState    *float64 `json:"pstate,omitempty"` // the most common performance state
}

// CounterRead is one bracketing read of the energy counter.
type CounterRead struct {
	Time     time.Time `json:"time"`
	EnergyMJ uint64    `json:"energy_mj"`
}

// GPU is one GPU's result.
type GPU struct {
	Index    int       `json:"index"`
	Role     string    `json:"role"` // workload, or observed (idle neighbour, not in the totals)
	UUID     string    `json:"uuid"`
	Name     string    `json:"name"`
	Baseline *Baseline `json:"baseline,omitempty"`
	// IdleW is the deep-idle power subtracted: the baseline's median, corrected to the run's temperature when the
	// GPU's temperature fit allows.
	IdleW        Num          `json:"idle_w"`
	ActiveIdle   *ActiveIdle  `json:"active_idle,omitempty"`
	CounterStart *CounterRead `json:"counter_start,omitempty"`
	CounterEnd   *CounterRead `json:"counter_end,omitempty"`
	Energy       Energy       `json:"energy"`
	// Method is how Energy.HybridJ was obtained: hybrid, samples (no usable counter) or counter (no samples).
	Method string `json:"energy_method,omitempty"`
	Lag    *Lag   `json:"counter_lag,omitempty"`
	// Aliasing is the check of the 50 Hz samples against the counter, interval by interval (hybrid GPUs only).
	Aliasing   *Aliasing          `json:"aliasing,omitempty"`
	MeanPowerW Num                `json:"mean_power_w"`
	PeakPowerW Num                `json:"peak_power_w"`
	TempStartC *float64           `json:"temp_start_c,omitempty"`
	TempEndC   *float64           `json:"temp_end_c,omitempty"`
	ThrottleS  map[string]float64 `json:"throttle_s,omitempty"`
	Capture    Capture            `json:"capture"`
}

// Lag is the counter lag the hybrid used on one GPU. Resolved, Contrast and Intervals describe the fit on this
// run's trace; Source says which lag was used: the fit's (LagFit), a well-resolved lag kept from an earlier trace
// of the same GPU because this one could not resolve its own (LagCache, with the date it was measured), or none
// (LagNone: unresolved and nothing kept, 0 used).
type Lag struct {
	MS        float64 `json:"ms"`
	Resolved  bool    `json:"resolved"` // false: the trace could not tell lags apart (flat power, too few intervals)
	Contrast  float64 `json:"contrast"`
	Intervals int     `json:"intervals"`
	// UMS is the standard uncertainty of the lag used, ms; null in manifests written before it was recorded.
	UMS       Num        `json:"u_ms"`
	Source    string     `json:"source,omitempty"`
	CacheDate *time.Time `json:"cache_date,omitempty"`
}

// Lag sources.
const (
	LagFit   = "fit"
	LagCache = "cache"
	LagNone  = "none"
)

// Aliasing is one GPU's check of the 50 Hz samples against the counter over the run: each counter interval's
// ratio of counter to sampled energy against the run's median ratio. An interval is suspect when it departs by
// more than Threshold (relative); docs/METHODOLOGY.md derives the threshold.
type Aliasing struct {
	Intervals int     `json:"intervals"`
	Suspect   int     `json:"suspect"`
	Fraction  float64 `json:"fraction"`
	// MedianRatio is the run's median counter/sampled ratio; Spread its robust relative spread (1.4826·MAD over
	// the median); Threshold the relative departure beyond which an interval is suspect; MaxDeviation the largest.
	MedianRatio  float64 `json:"median_ratio"`
	Spread       float64 `json:"spread"`
	Threshold    float64 `json:"threshold"`
	MaxDeviation float64 `json:"max_deviation"`
}

// Energy by method, in joules; null where not measured. CounterJ is the counter difference over the run (the
// bracketing reads where lem-run made them); HybridJ covers exactly the run (counter total, 50 Hz shape) and is
// the raw energy reported; AdjustedJ is HybridJ minus idle power over the same time, null without a baseline.
type Energy struct {
	CounterJ        Num  `json:"counter_j"`
	HybridJ         Num  `json:"hybrid_j"`
	SampledJ        Num  `json:"sampled_j"`
	AdjustedJ       Num  `json:"adjusted_j"`
	AdjustedClamped bool `json:"adjusted_clamped,omitempty"`
	// AdjustedActiveJ is HybridJ minus active idle (the context held, nothing running) over the same time: what
	// the workload's computation adds; null without an active-idle measurement.
	AdjustedActiveJ Num `json:"adjusted_active_j"`
}

// Unmeasured is an Energy with every value null.
func Unmeasured() Energy {
	return Energy{CounterJ: Null, HybridJ: Null, SampledJ: Null, AdjustedJ: Null, AdjustedActiveJ: Null}
}

// Sum adds o to e: a total is measured only where every part was (null + x = null); a clamped adjustment stays
// flagged.
func (e *Energy) Sum(o Energy) {
	e.CounterJ += o.CounterJ
	e.HybridJ += o.HybridJ
	e.SampledJ += o.SampledJ
	e.AdjustedJ += o.AdjustedJ
	e.AdjustedActiveJ += o.AdjustedActiveJ
	e.AdjustedClamped = e.AdjustedClamped || o.AdjustedClamped
}

// Capture is the power-sample capture quality over the run.
type Capture struct {
	Samples   int `json:"samples"`
	Gaps      int `json:"gaps"`
	DrainGaps int `json:"drain_gaps"`
	Overruns  int `json:"overruns"`
}

// Phase is one workload phase name, every occurrence summed (a phase that recurs, such as prefill and decode per
// batch, appears once; the trace keeps each occurrence). Start is the first occurrence's start, End the last one's
// end.
type Phase struct {
	Name      string     `json:"name"`
	Count     int        `json:"count"`
	Start     time.Time  `json:"start"`
	End       time.Time  `json:"end,omitzero"` // zero (absent) for the open phase of a provisional manifest
	DurationS float64    `json:"duration_s"`
	GPUs      []PhaseGPU `json:"gpus"`
	Energy    Energy     `json:"energy"` // summed over the workload's GPUs
	// Short: an occurrence was shorter than the data resolves (warning short_phase); Aliasing: the samples
	// disagreed with the counter inside it beyond the noise (warning aliasing_suspected).
	Short    bool `json:"short,omitempty"`
	Aliasing bool `json:"aliasing_suspected,omitempty"`
}

// Window is one window name of a run (windows are named intervals the workload begins and ends; they may overlap
// and nest): every occurrence summed, and the distribution of raw energy per occurrence.
type Window struct {
	Name       string            `json:"name"`
	Count      int               `json:"count"`
	EndedByRun int               `json:"ended_by_run,omitempty"` // occurrences still open when the run ended
	DurationS  float64           `json:"duration_s"`
	Energy     Energy            `json:"energy"` // summed over occurrences and the workload's GPUs
	MedianJ    Num               `json:"median_j"`
	P90J       Num               `json:"p90_j"`
	Values     map[string]string `json:"values,omitempty"` // the occurrences' counts, summed
	// Attribution splits the energy of overlapping request windows among the requests (docs/METHODOLOGY.md).
	Attribution *Attribution `json:"attribution,omitempty"`
}

// Attribution is the energy of concurrent requests (windows of one name with ids and token counts), split among
// them by the tokens each processed in each 20 ms interval: the requests' energies sum to the energy of the
// intervals any of them was active in; the rest is unattributed.
type Attribution struct {
	Method                string `json:"method"`
	Requests              int    `json:"requests"`
	AttributedJ           Num    `json:"attributed_j"`
	UnattributedJ         Num    `json:"unattributed_j"`
	AttributedAdjJ        Num    `json:"attributed_adjusted_j"`
	UnattributedAdjJ      Num    `json:"unattributed_adjusted_j"`
	MeanJ                 Num    `json:"mean_j"`
	MedianJ               Num    `json:"median_j"`
	P90J                  Num    `json:"p90_j"`
	MedianJPerOutputToken Num    `json:"median_j_per_output_token"`
	P90JPerOutputToken    Num    `json:"p90_j_per_output_token"`
}

// ProcessEnergy is the run's GPU energy split among the processes that used the GPUs (docs/METHODOLOGY.md, "Who
// used the joules"): on each GPU the processes' energies, idle and unattributed add up to the GPU's raw energy.
type ProcessEnergy struct {
	Model      string            `json:"model"`
	GPUs       []ProcessGPU      `json:"gpus"`
	Containers []ContainerEnergy `json:"containers,omitempty"`
}

// Where a GPU's idle power for the split came from (ProcessGPU.IdleSource).
const (
	IdleFromBaseline  = "baseline"   // the run's deep-idle baseline, at the run's temperature
	IdleFromNoProcess = "no_process" // the lowest 1 s mean power in the run while no process was on the GPU
	IdleFromLowest    = "lowest"     // the lowest 1 s mean power in the run: some process was always there
	IdleGiven         = "given"      // set by the user
)

// ProcessGPU is one GPU's split.
type ProcessGPU struct {
	Index int    `json:"index"`
	Role  string `json:"role"`
	// EnergyJ is the GPU's raw energy over the run (gpus[].energy.hybrid_j), the sum of what follows.
	EnergyJ    Num    `json:"energy_j"`
	IdleW      Num    `json:"idle_w"`
	IdleSource string `json:"idle_source"`
	// IdleJ is the idle power's energy, plus all energy while no process was on the GPU.
	IdleJ Num `json:"idle_j"`
	// UnattributedJ is energy above idle while processes were there but the driver gave no per-process
	// utilization (MIG, or a GPU or recording without it).
	UnattributedJ Num            `json:"unattributed_j"`
	Processes     []ProcessShare `json:"processes"`
}

// ProcessShare is one process's share of a GPU's energy.
type ProcessShare struct {
	PID uint32 `json:"pid"`
	trace.ProcessIdentity
	GPUInstance     *int `json:"gpu_instance,omitempty"`
	ComputeInstance *int `json:"compute_instance,omitempty"`
	EnergyJ         Num  `json:"energy_j"`
	// BusyS is the engine-busy time the driver reported for the process in the run (utilization × time).
	BusyS          float64   `json:"busy_s"`
	MaxMemoryBytes uint64    `json:"max_memory_bytes,omitempty"`
	FirstSeen      time.Time `json:"first_seen"`
	LastSeen       time.Time `json:"last_seen"`
}

// ContainerEnergy is one container's energy over the run: its processes' shares on every GPU. Host processes
// are not listed here.
type ContainerEnergy struct {
	ContainerID   string `json:"container_id"`
	ContainerName string `json:"container_name,omitempty"`
	Runtime       string `json:"runtime,omitempty"`
	PodUID        string `json:"pod_uid,omitempty"`
	PodNamespace  string `json:"pod_namespace,omitempty"`
	PodName       string `json:"pod_name,omitempty"`
	EnergyJ       Num    `json:"energy_j"`
	Processes     int    `json:"processes"`
}

// PhaseGPU is one GPU's energy in a phase.
type PhaseGPU struct {
	Index           int  `json:"index"`
	HybridJ         Num  `json:"hybrid_j"`
	AdjustedJ       Num  `json:"adjusted_j"`
	AdjustedActiveJ Num  `json:"adjusted_active_j"`
	AdjustedClamped bool `json:"adjusted_clamped,omitempty"`
	SMClockHz       Num  `json:"sm_clock_hz"` // mean over the phase's occurrences
	PState          Num  `json:"pstate"`      // the fastest performance state seen (0 = P0)
}

// Derived are per-unit figures from the workload's results; null where the count or the energy is missing.
type Derived struct {
	OutputTokens        Num `json:"output_tokens"`
	Requests            Num `json:"requests"`
	JPerOutputToken     Num `json:"j_per_output_token"`
	JPerOutputTokenAdj  Num `json:"j_per_output_token_adjusted"`
	OutputTokensPerJ    Num `json:"output_tokens_per_j"`
	OutputTokensPerJAdj Num `json:"output_tokens_per_j_adjusted"`
	JPerRequest         Num `json:"j_per_request"`
	JPerRequestAdj      Num `json:"j_per_request_adjusted"`
}

// Markers counts the workload's markers: lines parsed, lines that looked like markers but were malformed,
// markers the store rejected (limits, ended run), and markers that came over HTTP.
type Markers struct {
	Parsed int `json:"parsed"`
	// Stamped counts the parsed lines that carried the workload's own time (at=, or MARK's), exact like posts.
	Stamped   int `json:"stamped,omitempty"`
	Malformed int `json:"malformed"`
	Rejected  int `json:"rejected"`
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
	switch m.SchemaVersion {
	case SchemaVersion:
	case "1":
		upgradeV1(&m)
	default:
		return nil, fmt.Errorf("manifest %s: schema version %q, this lem reads %q and \"1\"", name, m.SchemaVersion, SchemaVersion)
	}
	if err := m.check(); err != nil {
		return nil, fmt.Errorf("manifest %s: %w", name, err)
	}
	return &m, nil
}

var statuses = []string{StatusOK, StatusFail, StatusIntr, StatusTime, StatusError, StatusRunning, StatusCrashed}

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
	if p := m.Processes; p != nil {
		for i, g := range p.GPUs {
			if g.Index < 0 || g.Index > trace.MaxGPU {
				return fmt.Errorf("processes.gpus[%d].index: %d outside 0..%d", i, g.Index, trace.MaxGPU)
			}
		}
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

// upgradeV1 turns a version-1 manifest into the current layout: one entry per phase name.
func upgradeV1(m *Manifest) {
	var out []Phase
	at := map[string]int{}
	for _, p := range m.Phases {
		i, ok := at[p.Name]
		if !ok {
			i = len(out)
			at[p.Name] = i
			q := p
			q.Count, q.GPUs = 0, nil
			q.DurationS, q.Energy = 0, Energy{}
			out = append(out, q)
		}
		o := &out[i]
		o.Count++
		o.End = p.End
		o.DurationS += p.DurationS
		o.Energy.Sum(p.Energy)
		for _, g := range p.GPUs {
			found := false
			for j := range o.GPUs {
				if o.GPUs[j].Index == g.Index {
					o.GPUs[j].HybridJ += g.HybridJ
					o.GPUs[j].AdjustedJ += g.AdjustedJ
					found = true
				}
			}
			if !found {
				o.GPUs = append(o.GPUs, g)
			}
		}
	}
	m.Phases = out
	m.SchemaVersion = SchemaVersion
}
