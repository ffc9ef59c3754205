package campaign

import (
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/lem-energy/lem/runner"
)

// ExecutorSpec is the campaign file's executor section: which executor carries out the runs (lem-run campaign
// --executor overrides the type) and, for slurm, how each run's job is submitted.
type ExecutorSpec struct {
	Type      string   `yaml:"type,omitempty"` // local (default) or slurm
	Partition string   `yaml:"partition,omitempty"`
	Account   string   `yaml:"account,omitempty"`
	QoS       string   `yaml:"qos,omitempty"`
	TimeLimit Duration `yaml:"time_limit,omitempty"` // per job; default: derived from timeout when every run has one
	// GPUs is each run's GPU count (sbatch --gpus, default 1); Gres a GRES request instead (sbatch --gres,
	// e.g. gpu:h200:2).
	GPUs      int    `yaml:"gpus,omitempty"`
	Gres      string `yaml:"gres,omitempty"`
	Exclusive bool   `yaml:"exclusive,omitempty"` // whole nodes (sbatch --exclusive)
	// Order: free (default: submitted in plan order, started as the scheduler sees fit), cycles (a cycle's jobs
	// wait for every job of the cycle before: cycles never overlap) or serial (each job waits for the one before).
	Order string `yaml:"order,omitempty"`
	// MaxAttempts bounds a run's submissions in one execution of lem-run campaign (default 3).
	MaxAttempts int      `yaml:"max_attempts,omitempty"`
	Sbatch      []string `yaml:"sbatch,omitempty"`  // further sbatch options, e.g. --constraint=h200
	LemRun      string   `yaml:"lem_run,omitempty"` // lem-run's path on the nodes (default: this lem-run's)
	Poll        Duration `yaml:"poll,omitempty"`    // how often the queue is read while following (default 10s)
}

// Defaults are applied when read, not stored: a campaign file without an executor section keeps the definition
// (campaign.json) it had before executors had options.

func (x ExecutorSpec) order() string {
	if x.Order == "" {
		return "free"
	}
	return x.Order
}

func (x ExecutorSpec) maxAttempts() int {
	if x.MaxAttempts == 0 {
		return DefaultMaxAttempts
	}
	return x.MaxAttempts
}

func (x ExecutorSpec) poll() time.Duration {
	if x.Poll == 0 {
		return DefaultPoll
	}
	return x.Poll.D()
}

// gpuRequest is the sbatch option asking for each run's GPUs.
func (x ExecutorSpec) gpuRequest() string {
	if x.Gres != "" {
		return "--gres=" + x.Gres
	}
	return "--gpus=" + strconv.Itoa(max(x.GPUs, 1))
}

// Executor types.
var executorTypes = []string{"local", "slurm"}

// Orders of a cluster executor's jobs.
var orders = []string{"free", "cycles", "serial"}

// Defaults of the executor section.
const (
	DefaultMaxAttempts = 3
	DefaultPoll        = 10 * time.Second
)

// sbatch options lem sets itself for every job: a campaign that set them would break how it finds its jobs.
var ownSbatch = []string{"--job-name", "-J", "--comment", "--output", "-o", "--error", "-e", "--parsable",
	"--requeue", "--dependency", "-d", "--chdir", "-D", "--array", "-a", "--wrap", "--export", "--partition", "-p",
	"--account", "-A", "--qos", "-q", "--time", "-t", "--gpus", "-G", "--gres", "--exclusive", "--no-requeue"}

func (f *File) validateExecutor(bad func([]string, string, ...any)) {
	x, path := &f.Executor, []string{"executor"}
	at := func(k string) []string { return append(slices.Clone(path), k) }
	if x.Type != "" && !slices.Contains(executorTypes, x.Type) {
		bad(at("type"), "%q: want one of %s", x.Type, strings.Join(executorTypes, ", "))
	}
	if x.Order != "" && !slices.Contains(orders, x.Order) {
		bad(at("order"), "%q: want one of %s", x.Order, strings.Join(orders, ", "))
	}
	switch {
	case x.GPUs < 0 || x.GPUs == 0 && f.node("executor", "gpus") != nil:
		bad(at("gpus"), "%d: must be at least 1 (lem measures the GPUs a job is granted)", x.GPUs)
	case x.GPUs > 0 && x.Gres != "":
		bad(at("gres"), "given with gpus: use one of them")
	}
	if x.Gres != "" && !strings.HasPrefix(x.Gres, "gpu") {
		bad(at("gres"), "%q: a GPU request (gpu:N or gpu:TYPE:N)", x.Gres)
	}
	if x.MaxAttempts < 0 || x.MaxAttempts > 100 || x.MaxAttempts == 0 && f.node("executor", "max_attempts") != nil {
		bad(at("max_attempts"), "%d: must be 1 to 100", x.MaxAttempts)
	}
	if x.Poll != 0 && x.Poll.D() < 100*time.Millisecond {
		bad(at("poll"), "%s: at least 100ms (every poll runs squeue)", x.Poll.D())
	}
	if x.TimeLimit != 0 && x.TimeLimit.D() < time.Minute {
		bad(at("time_limit"), "%s: at least 1m (Slurm counts minutes)", x.TimeLimit.D())
	}
	if x.LemRun != "" && !filepath.IsAbs(x.LemRun) {
		bad(at("lem_run"), "%q: an absolute path (jobs start without this directory)", x.LemRun)
	}
	for _, k := range []struct{ key, v string }{{"partition", x.Partition}, {"account", x.Account}, {"qos", x.QoS}} {
		if strings.ContainsAny(k.v, " \t\n'\"") {
			bad(at(k.key), "%q: no spaces or quotes", k.v)
		}
	}
	for i, o := range x.Sbatch {
		name, _, _ := strings.Cut(o, "=")
		switch {
		case !strings.HasPrefix(o, "-"):
			bad(at("sbatch"), "item %d %q: an option (--name=value)", i+1, o)
		case slices.Contains(ownSbatch, name):
			bad(at("sbatch"), "item %d %q: lem sets %s itself (partition, account, qos, time_limit, gpus, gres, exclusive and order are keys of executor)", i+1, o, name)
		}
	}
}

// CheckExecutor refuses what the named executor cannot do with this campaign, naming the file, line and key.
func (f *File) CheckExecutor(name string) error {
	if !slices.Contains(executorTypes, name) {
		return fmt.Errorf("--executor %q: want one of %s", name, strings.Join(executorTypes, ", "))
	}
	if name != "slurm" {
		return nil
	}
	var errs []string
	bad := func(path []string, format string, a ...any) { errs = append(errs, f.errAt(path, format, a...).Error()) }
	if len(f.GPUs) > 0 {
		bad([]string{"gpus"}, "with executor slurm, Slurm chooses each run's GPUs: ask for a count with executor.gpus or executor.gres")
	}
	for i, e := range f.Experiments {
		if len(e.GPUs) > 0 {
			bad([]string{"experiments", strconv.Itoa(i), "gpus"}, "with executor slurm, Slurm chooses each run's GPUs: ask for a count with executor.gpus or executor.gres")
		}
		if e.Container != "" {
			bad([]string{"experiments", strconv.Itoa(i), "backend_container"}, "backend containers run with the local executor only (each Slurm job would start its own)")
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "\n"))
	}
	return nil
}

// ExecutorType is the executor the campaign names (local unless executor.type says otherwise).
func (f *File) ExecutorType() string {
	if f.Executor.Type == "" {
		return "local"
	}
	return f.Executor.Type
}

// jobTimeLimit is each job's time limit: the file's, or, when every run has a timeout, the longest timeout with
// the cool-down, the baseline, the warm-ups and ten minutes for lem-run itself; zero leaves it to the partition.
func (f *File) jobTimeLimit() time.Duration {
	if f.Executor.TimeLimit > 0 {
		return f.Executor.TimeLimit.D()
	}
	var longest time.Duration
	for _, e := range f.Experiments {
		t := e.Timeout.D()
		if t == 0 {
			t = f.Timeout.D()
		}
		if t == 0 {
			return 0
		}
		longest = max(longest, t)
	}
	cooldown := time.Duration(0)
	if f.Cooldown.Target != "" {
		cooldown = f.Cooldown.Timeout.D()
		if cooldown == 0 {
			cooldown = runner.DefaultCooldownTimeout
		}
	}
	return time.Duration(1+f.WarmupRuns)*longest + cooldown + f.BaselineDuration() + 10*time.Minute
}

// slurmTime writes a duration as sbatch --time does (minutes, rounded up: [D-]HH:MM:00).
func slurmTime(d time.Duration) string {
	m := int((d + time.Minute - 1) / time.Minute)
	if days := m / (24 * 60); days > 0 {
		return fmt.Sprintf("%d-%02d:%02d:00", days, m/60%24, m%60)
	}
	return fmt.Sprintf("%02d:%02d:00", m/60, m%60)
}
