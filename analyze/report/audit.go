package report

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"

	"github.com/lem-energy/lem/internal/catalogue"
)

// AuditParam is one backend parameter across an experiment's runs.
type AuditParam struct {
	Name           string   `json:"name"`
	Group          string   `json:"group"`
	Values         []string `json:"values"` // distinct effective values (JSON), in run order
	Explicit       bool     `json:"explicit"`
	EnergyRelevant bool     `json:"energy_relevant"`
}

// AuditExperiment is an experiment's backend-parameter coverage.
type AuditExperiment struct {
	Experiment string       `json:"experiment"`
	Runs       int          `json:"runs"`
	Backend    string       `json:"backend"`
	Version    string       `json:"version"`
	Torch      string       `json:"torch,omitempty"`
	CUDA       string       `json:"cuda,omitempty"`
	Params     []AuditParam `json:"parameters"`
	Explicit   int          `json:"explicit"`
	Defaulted  int          `json:"defaulted"`
	// EnergyExplicit and EnergyDefaulted name the energy-relevant parameters set explicitly and left at the
	// backend's default.
	EnergyExplicit  []string `json:"energy_relevant_explicit"`
	EnergyDefaulted []string `json:"energy_relevant_defaulted"`
}

// Audit lists, per experiment, every backend parameter's effective value and whether the experiment set it.
// Runs without recorded backend parameters become problems.
func Audit(runs []Run) ([]AuditExperiment, []Problem) {
	by := map[string]*AuditExperiment{}
	idx := map[string]map[string]int{}
	var probs []Problem
	var names []string
	for _, r := range runs {
		m := r.Manifest
		inf := m.Inference
		if inf == nil {
			probs = append(probs, Problem{Path: r.Dir, Err: "no backend parameters recorded (run not from a campaign experiment with backend:)"})
			continue
		}
		a := by[m.Experiment]
		if a == nil {
			a = &AuditExperiment{Experiment: m.Experiment, Backend: inf.Backend, Version: inf.Version, Torch: inf.Torch, CUDA: inf.CUDA}
			by[m.Experiment], idx[m.Experiment] = a, map[string]int{}
			names = append(names, m.Experiment)
		}
		a.Runs++
		for _, e := range inf.Effective {
			key := e.Group + "." + e.Name
			i, ok := idx[m.Experiment][key]
			if !ok {
				i = len(a.Params)
				idx[m.Experiment][key] = i
				a.Params = append(a.Params, AuditParam{Name: e.Name, Group: e.Group, EnergyRelevant: catalogue.EnergyRelevant(e.Name)})
			}
			p := &a.Params[i]
			b, _ := json.Marshal(e.Value)
			if v := string(b); !slices.Contains(p.Values, v) {
				p.Values = append(p.Values, v)
			}
			p.Explicit = p.Explicit || e.Explicit
		}
	}
	sort.Strings(names)
	out := make([]AuditExperiment, 0, len(names))
	for _, n := range names {
		a := by[n]
		for _, p := range a.Params {
			if p.Explicit {
				a.Explicit++
			} else {
				a.Defaulted++
			}
			switch {
			case p.EnergyRelevant && p.Explicit:
				a.EnergyExplicit = append(a.EnergyExplicit, p.Name)
			case p.EnergyRelevant:
				a.EnergyDefaulted = append(a.EnergyDefaulted, p.Name)
			}
		}
		out = append(out, *a)
	}
	return out, probs
}

// AuditMarkdown renders the audit: coverage per experiment, then the explicit and energy-relevant parameters
// (all of them with all).
func AuditMarkdown(w io.Writer, exps []AuditExperiment, probs []Problem, all bool) {
	fmt.Fprintln(w, "# Backend parameter audit")
	for _, a := range exps {
		fmt.Fprintf(w, "\n## %s — %s %s (%d runs", a.Experiment, a.Backend, a.Version, a.Runs)
		if a.Torch != "" {
			fmt.Fprintf(w, "; torch %s, CUDA %s", a.Torch, a.CUDA)
		}
		fmt.Fprintf(w, ")\n\n%d parameters: %d set explicitly, %d at the backend's default. Energy-relevant: %d explicit (%s); %d defaulted (%s).\n\n",
			len(a.Params), a.Explicit, a.Defaulted, len(a.EnergyExplicit), strings.Join(a.EnergyExplicit, ", "),
			len(a.EnergyDefaulted), strings.Join(a.EnergyDefaulted, ", "))
		fmt.Fprintln(w, "| parameter | group | value | set | energy-relevant |\n|---|---|---|---|---|")
		for _, p := range a.Params {
			if !all && !p.Explicit && !p.EnergyRelevant {
				continue
			}
			set, star := "default", ""
			if p.Explicit {
				set = "**explicit**"
			}
			if p.EnergyRelevant {
				star = "★"
			}
			fmt.Fprintf(w, "| %s | %s | `%s` | %s | %s |\n", p.Name, p.Group, strings.Join(p.Values, "`, `"), set, star)
		}
		if !all {
			fmt.Fprintln(w, "\n(other defaulted parameters left out; --all lists every one)")
		}
	}
	if len(probs) > 0 {
		fmt.Fprint(w, "\n## Inputs not audited\n\n")
		for _, p := range probs {
			fmt.Fprintf(w, "- `%s`: %s\n", p.Path, p.Err)
		}
	}
}
