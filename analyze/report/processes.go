package report

import (
	"encoding/csv"
	"fmt"
	"io"
	"slices"
	"strconv"

	"github.com/lem-energy/lem/internal/manifest"
)

// processesMarkdown writes each run's GPU energy split among its processes (docs/METHODOLOGY.md, "Who used the
// joules"), where any run has one.
func processesMarkdown(w io.Writer, runs []Run) {
	if !slices.ContainsFunc(runs, func(r Run) bool { return r.Manifest.Processes != nil }) {
		return
	}
	fmt.Fprintln(w, "\n## Processes\n\n| run | GPU | pid | command | container | pod | busy s | energy J | share |\n|---|---|---|---|---|---|---|---|---|")
	for _, r := range runs {
		p := r.Manifest.Processes
		if p == nil {
			continue
		}
		for _, g := range p.GPUs {
			share := func(j manifest.Num) string {
				if !g.EnergyJ.Valid() || g.EnergyJ <= 0 || !j.Valid() {
					return "—"
				}
				return fmt.Sprintf("%.1f %%", 100*float64(j)/float64(g.EnergyJ))
			}
			for _, x := range g.Processes {
				fmt.Fprintf(w, "| %s | %d | %d | %s | %s | %s | %s | %s | %s |\n", r.Manifest.RunID, g.Index, x.PID, x.Command,
					x.ProcessIdentity.Container(), pod(x.PodNamespace, x.PodName), num(manifest.Num(x.BusyS), 1), num(x.EnergyJ, 1),
					share(x.EnergyJ))
			}
			fmt.Fprintf(w, "| %s | %d | idle (%s W, %s) | | | | | %s | %s |\n", r.Manifest.RunID, g.Index, num(g.IdleW, 1),
				g.IdleSource, num(g.IdleJ, 1), share(g.IdleJ))
			if g.UnattributedJ > 0 {
				fmt.Fprintf(w, "| %s | %d | unattributed | | | | | %s | %s |\n", r.Manifest.RunID, g.Index, num(g.UnattributedJ, 1),
					share(g.UnattributedJ))
			}
		}
	}
	fmt.Fprintln(w, "\nEach GPU's energy over the run split by the processes' busy time above its idle power; per GPU the rows add up")
	fmt.Fprintln(w, "to its energy. See docs/METHODOLOGY.md, \"Who used the joules\".")
}

func pod(ns, name string) string {
	if ns == "" {
		return name
	}
	return ns + "/" + name
}

// csvProcesses is one row per run, GPU and process, with rows for idle and unattributed energy (pid empty).
func csvProcesses(cw *csv.Writer, runs []Run) {
	cw.Write([]string{"run_id", "experiment", "cycle", "gpu", "pid", "what", "command", "container_id", "container_name",
		"pod_namespace", "pod_name", "busy_s", "energy_j", "gpu_energy_j", "idle_w", "idle_source"})
	for _, r := range runs {
		m := r.Manifest
		if m.Processes == nil {
			continue
		}
		for _, g := range m.Processes.GPUs {
			row := func(pid, what string, x manifest.ProcessShare, busy string, j manifest.Num) {
				cw.Write([]string{m.RunID, m.Experiment, strconv.Itoa(m.Cycle), strconv.Itoa(g.Index), pid, what, x.Command,
					x.ContainerID, x.ContainerName, x.PodNamespace, x.PodName, busy, cell(j, 6), cell(g.EnergyJ, 6),
					cell(g.IdleW, 3), g.IdleSource})
			}
			for _, x := range g.Processes {
				row(strconv.FormatUint(uint64(x.PID), 10), "process", x, strconv.FormatFloat(x.BusyS, 'f', 3, 64), x.EnergyJ)
			}
			row("", "idle", manifest.ProcessShare{}, "", g.IdleJ)
			row("", "unattributed", manifest.ProcessShare{}, "", g.UnattributedJ)
		}
	}
}
