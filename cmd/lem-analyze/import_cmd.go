package main

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/lem-energy/lem/internal/meta"
	"github.com/lem-energy/lem/internal/trace"
)

type importProbeCmd struct {
	Dir         string  `arg:"" type:"existingdir" help:"Directory with counters.csv, power_samples.csv and marks.txt."`
	Out         string  `short:"o" required:"" env:"LEM_TRACE" help:"Trace file to write (.parquet)."`
	GPU         int     `default:"0" help:"GPU index to file the data under."`
	Name        string  `help:"GPU model name of the recording."`
	UUID        string  `help:"GPU UUID of the recording."`
	Driver      string  `help:"Driver version of the recording."`
	NVML        string  `name:"nvml" help:"NVML version of the recording."`
	PowerLimitW float64 `name:"power-limit" help:"Enforced power limit of the recording, watts."`
}

func (c *importProbeCmd) Run(ctx context.Context, log *slog.Logger) error {
	env := meta.Environment{
		Source: meta.Source{Kind: "probe-csv", Path: c.Dir},
		Driver: meta.Driver{DriverVersion: c.Driver, NVMLVersion: c.NVML},
		Devices: []meta.Device{{Index: c.GPU, Name: c.Name, UUID: c.UUID, EnergyCounter: true, PowerSamples: true,
			PowerLimits: meta.PowerLimits{EnforcedW: c.PowerLimitW, CurrentW: c.PowerLimitW}}},
	}
	t, err := trace.ImportProbeDir(c.Dir, c.GPU, env)
	if err != nil {
		return err
	}
	if err := trace.WriteFile(c.Out, t); err != nil {
		return err
	}
	s := t.GPUs[c.GPU]
	log.Info("trace written", "file", c.Out, "samples", len(s.Samples), "counter_reads", len(s.Counters),
		"telemetry", len(s.Telemetry), "events", len(t.Events))
	fmt.Println(c.Out)
	return nil
}
