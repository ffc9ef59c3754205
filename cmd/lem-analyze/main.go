// Command lem-analyze computes energy per experiment, phase and token from lem traces.
package main

import (
	"fmt"
	"os"
	"runtime/debug"
	"runtime/pprof"

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
	Processes   processesCmd   `cmd:"" help:"Each GPU's energy split among its processes, over the recording and per phase."`
	Calibrate   calibrateCmd   `cmd:"" help:"Fit a board's gain and offset against an external power meter's log recorded alongside a lem trace."`
	Precision   precisionCmd   `cmd:"" help:"Tables of a run of the GPU characterisation workload (scripts/gpu/precision.py): square waves and known-energy bursts."`
	Synth       synthCmd       `cmd:"" hidden:"" help:"Tile a real recording into a large trace (benchmarks)."`
}

func main() {
	// A batch tool holding a whole trace: collect garbage less often than the default (GOGC still overrides).
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(400)
	}
	var a app
	os.Exit(cli.Main(&a, &a.Globals, "lem-analyze", "Baseline-subtracted GPU energy per experiment, phase and token.", nil,
		func(run func() error) error {
			if a.CPUProfile == "" {
				return run()
			}
			f, err := os.Create(a.CPUProfile)
			if err != nil {
				return fmt.Errorf("--cpu-profile: %w", err)
			}
			defer f.Close()
			if err := pprof.StartCPUProfile(f); err != nil {
				return fmt.Errorf("--cpu-profile: %w", err)
			}
			defer pprof.StopCPUProfile()
			return run()
		}))
}
