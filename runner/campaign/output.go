package campaign

import (
	"fmt"
	"io"
	"time"

	"github.com/lem-energy/lem/analyze/report"
)

// WriteDryRun writes what a dry run found: to warnings, where a backend's own catalogue could not be used; to w,
// the ordered plan and each experiment's catalogue, in the file's order of experiments.
func (p *Prepared) WriteDryRun(w, warnings io.Writer) {
	for _, n := range p.Notes {
		fmt.Fprintln(warnings, "warning: "+n)
	}
	p.File.PrintPlan(w, p.Plan, p.Configs)
	for _, e := range p.File.Experiments {
		if cat := p.Catalogues[e]; cat != nil {
			fmt.Fprintf(w, "experiment %s: backend %s %s (%d parameters; %d set explicitly)\n", e.Name, cat.Backend,
				cat.Version, len(cat.Parameters), len(e.BackendParams))
		}
	}
}

// WriteStart announces an execution: the plan's size and structure, its estimated duration, the campaign
// directory and the executor.
func (p *Prepared) WriteStart(w io.Writer, executor string) {
	f := p.File
	fmt.Fprintf(w, "campaign %s: %d configurations × %d cycles = %d runs (%s), about %s; directory %s; executor %s\n",
		f.Name, len(p.Configs), f.Cycles, len(p.Plan), f.Structure,
		f.Estimate(p.Plan, p.Configs).Round(time.Second), p.OutDir(), executor)
}

// WriteSummary writes an execution's outcome: the campaign's status and state file, then its runs where they are
// still with a cluster, else the per-experiment statistics.
func (p *Prepared) WriteSummary(w io.Writer, st *State) {
	fmt.Fprintf(w, "\ncampaign %s: %s — %s/%s\n\n", st.Campaign, st.Status, p.OutDir(), StateFile)
	if st.Status == StatusSubmitted {
		WriteStatus(w, st)
	} else {
		report.ExperimentTable(w, st.Experiments)
	}
}
