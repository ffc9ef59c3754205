package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"text/tabwriter"

	"github.com/lem-energy/lem/analyze/account"
	"github.com/lem-energy/lem/internal/manifest"
	"github.com/lem-energy/lem/internal/trace"
)

type processesCmd struct {
	File  string          `arg:"" type:"existingfile" help:"Trace file (.parquet) recorded with per-process data."`
	IdleW map[int]float64 `name:"idle-watts" mapsep:"," help:"Idle power per GPU index (0=75,1=80); default: the lowest 1 s mean power while no process was on the GPU."`
	JSON  bool            `name:"json" help:"Write JSON: the whole recording's split and each phase's."`
}

func (c *processesCmd) Run(ctx context.Context, log *slog.Logger) error {
	t, err := trace.ReadFile(c.File)
	if err != nil {
		return err
	}
	whole, phases := account.TraceProcesses(t, nil, c.IdleW)
	if len(whole) == 0 {
		return fmt.Errorf("%s: no per-process data (recorded with --process-interval 0, or by an older lem)", c.File)
	}
	if c.JSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(struct {
			Model  string                   `json:"model"`
			Whole  []manifest.ProcessGPU    `json:"whole"`
			Phases []account.PhaseProcesses `json:"phases"`
		}{account.ProcessModel, whole, phases})
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	writeSplit(w, "whole recording", whole)
	for _, p := range phases {
		writeSplit(w, fmt.Sprintf("phase %s (%.1f s)", p.Name, p.End.Sub(p.Start).Seconds()), p.GPUs)
	}
	return w.Flush()
}

// writeSplit prints one section: per GPU, its processes, idle and unattributed energy.
func writeSplit(w io.Writer, title string, gpus []manifest.ProcessGPU) {
	fmt.Fprintf(w, "== %s\n", title)
	fmt.Fprintln(w, "gpu\tpid\tcommand\tcontainer\tpod\tbusy s\tenergy J\tshare\t")
	for _, g := range gpus {
		share := func(j manifest.Num) string {
			if g.EnergyJ <= 0 {
				return "—"
			}
			return fmt.Sprintf("%.1f %%", 100*float64(j)/float64(g.EnergyJ))
		}
		gi := strconv.Itoa(g.Index)
		for _, p := range g.Processes {
			pod := p.PodName
			if p.PodNamespace != "" {
				pod = p.PodNamespace + "/" + pod
			}
			fmt.Fprintf(w, "%s\t%d\t%s\t%s\t%s\t%.1f\t%.1f\t%s\t\n", gi, p.PID, p.Command, p.ProcessIdentity.Container(), pod,
				p.BusyS, float64(p.EnergyJ), share(p.EnergyJ))
		}
		fmt.Fprintf(w, "%s\tidle\t%.1f W (%s)\t\t\t\t%.1f\t%s\t\n", gi, float64(g.IdleW), g.IdleSource, float64(g.IdleJ), share(g.IdleJ))
		if g.UnattributedJ > 0 {
			fmt.Fprintf(w, "%s\tunattributed\t\t\t\t\t%.1f\t%s\t\n", gi, float64(g.UnattributedJ), share(g.UnattributedJ))
		}
		fmt.Fprintf(w, "%s\ttotal\t\t\t\t\t%.1f\t\t\n", gi, float64(g.EnergyJ))
	}
}
