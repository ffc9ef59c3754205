// Command lem-run brackets GPU experiments with an idle baseline, exact energy-counter reads and the workload's
// own phase markers.
package main

import (
	"os"

	"github.com/lem-energy/lem/internal/cli"
	"github.com/lem-energy/lem/runner"
)

type app struct {
	cli.Globals
	Run        runCmd        `cmd:"" default:"withargs" help:"Measure one experiment: baseline, bracketed run, phases, manifest (the default)."`
	Record     recordCmd     `cmd:"" help:"Record the GPUs' power samples, counter and telemetry to a trace, optionally around a command."`
	Campaign   campaignCmd   `cmd:"" help:"Run a campaign file: a grid of experiments over repeated cycles, resumable."`
	Introspect introspectCmd `cmd:"" help:"Print an inference backend's parameter catalogue (versions, parameters, defaults) as JSON."`
	SlurmJob   slurmJobCmd   `cmd:"" name:"slurm-job" help:"Mark a Slurm job's start or end on the node's lem-exporter (run by Slurm's Prolog and Epilog: deploy/slurm)."`
	Watchdog   watchdogCmd   `cmd:"" hidden:"" help:"Stop a workload whose lem-run died (started by lem-run)."`
}

func main() {
	var a app
	vars := cli.SamplerVars("1s", "100ms")
	vars["baseline"] = runner.DefaultBaseline.String()
	vars["cooldown_timeout"] = runner.DefaultCooldownTimeout.String()
	vars["stop_grace"] = runner.DefaultStopGrace.String()
	os.Exit(cli.Main(&a, &a.Globals, "lem-run", "Measure the GPU energy of an experiment.", vars, nil))
}
