// Command lem-analyze computes energy per experiment, phase and token from lem traces.
package main

import (
	"os"
	"runtime/debug"
	"runtime/pprof"

	"github.com/alecthomas/kong"

	"github.com/lem-energy/lem/internal/cli"
)

type app struct {
	cli.Globals
	CPUProfile  string         `name:"cpu-profile" hidden:"" type:"path" help:"Write a Go CPU profile here (performance work)."`
	ImportProbe importProbeCmd `cmd:"" name:"import-probe" help:"Convert an NVML probe CSV recording into a lem trace."`
	Pull        pullCmd        `cmd:"" help:"Pull runs' (or an instance's) power and energy series from Prometheus into lem traces, losslessly."`
	Report      reportCmd      `cmd:"" help:"Per-run and per-experiment energy tables from lem-run's run directories."`
	Validate    validateCmd    `cmd:"" help:"Check runs against the quality rules; exits non-zero when any fails."`
	Audit       auditCmd       `cmd:"" help:"Backend-parameter coverage: every parameter's effective value, explicit vs defaulted, energy-relevant ones highlighted."`
	Phases      phasesCmd      `cmd:"" help:"Energy per phase by counter, 50 Hz samples and hybrid, with capture quality."`
	Synth       synthCmd       `cmd:"" hidden:"" help:"Tile a real recording into a large trace (benchmarks)."`
	Version     cli.VersionCmd `cmd:"" help:"Print the version."`
}

func main() {
	// A batch tool holding a whole trace: collect garbage less often than the default (GOGC still overrides).
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(400)
	}
	var a app
	ctx := kong.Parse(&a, kong.Name("lem-analyze"),
		kong.Description("Baseline-subtracted GPU energy per experiment, phase and token."),
		kong.UsageOnError(), kong.DefaultEnvars("LEM"))
	if a.CPUProfile != "" {
		f, err := os.Create(a.CPUProfile)
		ctx.FatalIfErrorf(err)
		ctx.FatalIfErrorf(pprof.StartCPUProfile(f))
		err = ctx.Run(a.Globals.Logger(os.Stderr))
		pprof.StopCPUProfile()
		f.Close()
		ctx.FatalIfErrorf(err)
		return
	}
	ctx.FatalIfErrorf(ctx.Run(a.Globals.Logger(os.Stderr)))
}
