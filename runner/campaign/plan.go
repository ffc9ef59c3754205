package campaign

import (
	"fmt"
	"io"
	"math/rand/v2"
	"sort"
	"strings"
	"time"

	"github.com/lem-energy/lem/runner"
)

// Config is one concrete configuration: an experiment with one combination of its grid's values.
type Config struct {
	Name    string
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

// Configs expands every experiment's grid.
func (f *File) Configs() ([]*Config, error) {
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
	return out, nil
}

// runID is a configuration's run id in a cycle: stable, so that a resumed campaign finds its runs.
func runID(campaign, config string, cycle int) string {
	id := fmt.Sprintf("%s-%s-c%d", campaign, config, cycle)
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.' {
			return r
		}
		return '_'
	}, id)
}

// Plan orders every run: interleaved (each cycle runs every configuration in file order), shuffled (each cycle
// in its own seeded random order) or grouped (all cycles of a configuration back to back).
func (f *File) Plan() ([]Planned, []*Config, error) {
	cfgs, err := f.Configs()
	if err != nil {
		return nil, nil, err
	}
	n := len(cfgs) * f.Cycles
	if n > f.MaxRuns {
		return nil, nil, f.errAt([]string{"max_runs"}, "the plan has %d runs (%d configurations × %d cycles), more than max_runs %d",
			n, len(cfgs), f.Cycles, f.MaxRuns)
	}
	var plan []Planned
	add := func(c *Config, cycle int) {
		plan = append(plan, Planned{Position: len(plan) + 1, Cycle: cycle, Config: c, RunID: runID(f.Name, c.Name, cycle)})
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
