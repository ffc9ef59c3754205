package campaign

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"maps"
	"math/big"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/lem-energy/lem/runner"
)

// Config is one concrete configuration: an experiment with one combination of its grid's values.
type Config struct {
	Name    string
	ID      string // its runs' id without the cycle: readable, unique in the campaign, stable
	Exp     *Experiment
	Vars    map[string]string
	Command []string
	Env     map[string]string
	Params  map[string]any
}

// Planned is one run of the plan.
type Planned struct {
	Position int
	Cycle    int
	Config   *Config
	RunID    string
}

func fmtValue(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case nil:
		return ""
	default:
		return fmt.Sprint(x)
	}
}

// substitute replaces {var} placeholders of known variables.
func substitute(s string, vars map[string]string) string {
	if !strings.Contains(s, "{") {
		return s
	}
	for k, v := range vars {
		s = strings.ReplaceAll(s, "{"+k+"}", v)
	}
	return s
}

// combinations is the cartesian product of vary, keys in sorted order.
func combinations(vary map[string][]any) []map[string]any {
	keys := make([]string, 0, len(vary))
	for k := range vary {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := []map[string]any{{}}
	for _, k := range keys {
		var next []map[string]any
		for _, c := range out {
			for _, v := range vary[k] {
				n := map[string]any{k: v}
				for kk, vv := range c {
					n[kk] = vv
				}
				next = append(next, n)
			}
		}
		out = next
	}
	return out
}

// size counts the plan's configurations and runs without expanding them, saturating just above limit (a grid of
// twelve variables with ten values each has 10^12 configurations).
func (f *File) size(limit int64) (configs, runs int64) {
	mul := func(a, b int64) int64 {
		if a == 0 || b == 0 {
			return 0
		}
		if a > (limit+1)/b {
			return limit + 1
		}
		return min(a*b, limit+1)
	}
	for _, e := range f.Experiments {
		n := int64(1)
		for _, vs := range e.Vary {
			n = mul(n, int64(len(vs)))
		}
		configs = min(configs+n, limit+1)
	}
	return configs, mul(configs, int64(f.Cycles))
}

// checkSize refuses a plan larger than max_runs before it is expanded, with its exact size.
func (f *File) checkSize() error {
	if _, runs := f.size(int64(f.MaxRuns)); runs <= int64(f.MaxRuns) {
		return nil
	}
	configs := new(big.Int)
	for _, e := range f.Experiments {
		n := big.NewInt(1)
		for _, vs := range e.Vary {
			n.Mul(n, big.NewInt(int64(len(vs))))
		}
		configs.Add(configs, n)
	}
	runs := new(big.Int).Mul(configs, big.NewInt(int64(f.Cycles)))
	return f.errAt([]string{"max_runs"}, "the plan has %s runs (%s configurations × %d cycles), more than max_runs %d",
		runs, configs, f.Cycles, f.MaxRuns)
}

// Configs expands every experiment's grid (after checking its size against max_runs) and gives each configuration
// its run id.
func (f *File) Configs() ([]*Config, error) {
	if err := f.checkSize(); err != nil {
		return nil, err
	}
	var out []*Config
	seen := map[string]bool{}
	for _, e := range f.Experiments {
		for _, combo := range combinations(e.Vary) {
			vars := map[string]string{}
			for k, v := range combo {
				vars[k] = fmtValue(v)
			}
			c := &Config{Exp: e, Vars: vars, Env: map[string]string{}, Params: map[string]any{}}
			c.Name = substitute(e.Name, vars)
			var missing []string
			for k := range vars {
				if !strings.Contains(e.Name, "{"+k+"}") {
					missing = append(missing, k+"="+vars[k])
				}
			}
			sort.Strings(missing)
			if len(missing) > 0 {
				c.Name += "-" + strings.Join(missing, "-")
			}
			for _, a := range e.Command {
				c.Command = append(c.Command, substitute(a, vars))
			}
			for k, v := range e.Env {
				c.Env[k] = substitute(v, vars)
			}
			for k, v := range e.BackendParams {
				if s, ok := v.(string); ok {
					// A value that is exactly one placeholder keeps the grid value's type (a number stays a number).
					if name, ok := strings.CutSuffix(strings.TrimPrefix(s, "{"), "}"); ok && strings.HasPrefix(s, "{") {
						if gv, ok := combo[name]; ok {
							c.Params[k] = gv
							continue
						}
					}
					v = substitute(s, vars)
				}
				c.Params[k] = v
			}
			if seen[c.Name] {
				return nil, f.errAt([]string{"experiments", fmt.Sprint(e.index), "name"},
					"configuration name %q occurs twice; put the grid's variables in the name, e.g. %s-{var}", c.Name, e.Name)
			}
			seen[c.Name] = true
			out = append(out, c)
		}
	}
	if err := f.assignIDs(out); err != nil {
		return nil, err
	}
	return out, nil
}

// Run ids. A configuration's runs are <campaign>-<configuration>-c<cycle>, the campaign's name left out where the
// configuration's name already starts with it, characters other than letters, digits, '.', '-' and '_' replaced
// by '_'. Where that makes two configurations' ids meet ("a/b" and "a_b"), or one meet a backend start-up's, each
// of them gets 8 hex digits of a hash of its exact name and values after the name: ids stay readable, each
// configuration has its own, and they are the same on every resume of the same file.

func sanitise(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.' {
			return r
		}
		return '_'
	}, s)
}

// baseID is the id of a configuration or backend start-up named name, without the cycle and any hash.
func baseID(campaign, name string) string {
	if name != campaign && !strings.HasPrefix(name, campaign+"-") {
		name = campaign + "-" + name
	}
	return sanitise(name)
}

// idHash is 8 hex digits of SHA-256 over a configuration's exact name and values.
func idHash(name string, vars map[string]string) string {
	h := sha256.New()
	h.Write([]byte(name))
	for _, k := range slices.Sorted(maps.Keys(vars)) {
		fmt.Fprintf(h, "\x00%s=%s", k, vars[k])
	}
	return hex.EncodeToString(h.Sum(nil))[:8]
}

// runID is the id of a backend container's n-th start-up run (label "startup-<backend>").
func runID(campaign, label string, n int) string {
	return fmt.Sprintf("%s-c%d", baseID(campaign, label), n)
}

// assignIDs gives each configuration its id, with the hash where ids would meet.
func (f *File) assignIDs(cfgs []*Config) error {
	count := map[string]int{}
	for name := range f.Backends {
		count[baseID(f.Name, "startup-"+name)]++
	}
	for _, c := range cfgs {
		c.ID = baseID(f.Name, c.Name)
		count[c.ID]++
	}
	byID := map[string]*Config{}
	for _, c := range cfgs {
		if count[c.ID] > 1 {
			c.ID += "-" + idHash(c.Name, c.Vars)
		}
		if other, dup := byID[c.ID]; dup { // only if a hashed id meets a name that looks like one
			return f.errAt([]string{"experiments", fmt.Sprint(c.Exp.index), "name"},
				"configurations %q and %q get the same run id %s; rename one", other.Name, c.Name, c.ID)
		}
		byID[c.ID] = c
	}
	return nil
}

// Plan orders every run: interleaved (each cycle runs every configuration in file order), shuffled (each cycle
// in its own seeded random order) or grouped (all cycles of a configuration back to back).
func (f *File) Plan() ([]Planned, []*Config, error) {
	cfgs, err := f.Configs() // checks the plan's size first
	if err != nil {
		return nil, nil, err
	}
	plan := make([]Planned, 0, len(cfgs)*f.Cycles)
	add := func(c *Config, cycle int) {
		plan = append(plan, Planned{Position: len(plan) + 1, Cycle: cycle, Config: c, RunID: fmt.Sprintf("%s-c%d", c.ID, cycle)})
	}
	switch f.Structure {
	case "grouped":
		for _, c := range cfgs {
			for cy := 1; cy <= f.Cycles; cy++ {
				add(c, cy)
			}
		}
	default:
		var seed uint64
		if f.Seed != nil {
			seed = *f.Seed
		}
		for cy := 1; cy <= f.Cycles; cy++ {
			order := append([]*Config{}, cfgs...)
			if f.Structure == "shuffled" {
				rng := rand.New(rand.NewPCG(seed, uint64(cy)))
				rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
			}
			for _, c := range order {
				add(c, cy)
			}
		}
	}
	return plan, cfgs, nil
}

// BaselineDuration is the idle baseline each measured baseline lasts.
func (f *File) BaselineDuration() time.Duration {
	if f.Baseline.Duration != nil {
		return f.Baseline.Duration.D()
	}
	return runner.DefaultBaseline
}

// defaultExpected is assumed for a run whose experiment gives no expected_duration.
const defaultExpected = time.Minute

// Estimate is the plan's expected duration: baselines, runs, gaps and warm-ups.
func (f *File) Estimate(plan []Planned, cfgs []*Config) time.Duration {
	baseline := f.BaselineDuration()
	var d time.Duration
	for i, p := range plan {
		exp := p.Config.Exp.Expected.D()
		if exp == 0 {
			exp = defaultExpected
		}
		d += exp
		if f.Baseline.Policy == "per_run" || (f.Baseline.Policy == "per_cycle" && (i == 0 || plan[i-1].Cycle != p.Cycle)) ||
			(f.Baseline.Policy == "ttl" && i == 0) {
			d += baseline
		}
		if i > 0 {
			if plan[i-1].Cycle != p.Cycle {
				d += f.Gaps.BetweenCycles.D()
			} else {
				d += f.Gaps.BetweenRuns.D()
			}
		}
	}
	for _, c := range cfgs {
		exp := c.Exp.Expected.D()
		if exp == 0 {
			exp = defaultExpected
		}
		d += time.Duration(f.WarmupRuns) * exp
	}
	return d
}

// PrintPlan writes the ordered plan and its estimated duration.
func (f *File) PrintPlan(w io.Writer, plan []Planned, cfgs []*Config) {
	fmt.Fprintf(w, "campaign %s: %d configurations × %d cycles = %d runs (%s), %d warm-up run(s) per configuration\n",
		f.Name, len(cfgs), f.Cycles, len(plan), f.Structure, f.WarmupRuns)
	for _, p := range plan {
		fmt.Fprintf(w, "  %3d  cycle %d  %-40s %s\n", p.Position, p.Cycle, p.Config.Name, strings.Join(p.Config.Command, " "))
	}
	assumed := ""
	for _, c := range cfgs {
		if c.Exp.Expected == 0 {
			assumed = fmt.Sprintf(" (assuming %s per run where expected_duration is not given)", defaultExpected)
		}
	}
	fmt.Fprintf(w, "estimated duration: %s%s\n", f.Estimate(plan, cfgs).Round(time.Second), assumed)
}
