package cli

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/alecthomas/kong"
	"github.com/lem-energy/lem/internal/gpu"
	"github.com/lem-energy/lem/internal/sampler"
)

// SourceFlags choose where GPU data comes from: NVML, or a recorded trace replayed in real time.
type SourceFlags struct {
	Replay string        `type:"existingfile" help:"Replay a recorded lem trace instead of reading NVML (hosts without a GPU, demos, tests)."`
	Speed  float64       `default:"1" help:"Replay speed factor."`
	Loop   bool          `help:"Loop the replayed trace."`
	From   time.Duration `name:"replay-from" help:"Start the replay this far into the recording."`
	GPUs   []string      `name:"gpus" sep:"," help:"GPUs to sample: indices or UUIDs, comma-separated (default all)."`
}

// Open opens the source and selects the GPUs.
func (f SourceFlags) Open(log *slog.Logger) (gpu.Source, []gpu.Device, error) {
	var src gpu.Source
	if f.Replay != "" {
		if f.Speed <= 0 {
			return nil, nil, fmt.Errorf("--speed %g: must be positive%w", f.Speed, Usage)
		}
		if f.From < 0 {
			return nil, nil, fmt.Errorf("--replay-from %s: must not be negative%w", f.From, Usage)
		}
		// Starting "From" into the recording is starting the replay that long ago (in replay time).
		start := time.Now().Add(-time.Duration(float64(f.From) / f.Speed))
		r, err := gpu.OpenReplay(f.Replay, gpu.ReplayOptions{Speed: f.Speed, Loop: f.Loop, Start: start})
		if err != nil {
			return nil, nil, fmt.Errorf("--replay: %w%w", err, Usage)
		}
		src = r
	} else {
		s, err := gpu.OpenNVML(nil, log)
		if err != nil {
			return nil, nil, err
		}
		src = s
	}
	devs, err := gpu.Select(src.Devices(), f.GPUs)
	if err != nil {
		src.Close()
		return nil, nil, fmt.Errorf("--gpus: %w%w", err, Usage)
	}
	return src, devs, nil
}

// SamplerVars are the cadence defaults of a command (kong variables used by SamplerFlags). The runner reads
// telemetry at 10 Hz and the counter every second for the one experiment it brackets; the always-on exporter
// reads both less often to stay near 0.5 % of a core per GPU (each counter read costs 3-4 ms of CPU).
func SamplerVars(counter, telemetry string) kong.Vars {
	return kong.Vars{"counter_interval": counter, "telemetry_interval": telemetry,
		"drain_interval": sampler.DefaultDrainInterval.String(), "ring_span": sampler.DefaultRingSpan.String()}
}

// SamplerFlags set the sampler's cadence.
type SamplerFlags struct {
	CounterInterval   time.Duration `name:"counter-interval" default:"${counter_interval}" help:"Energy-counter read interval (each read costs 3-4 ms of CPU)."`
	DrainInterval     time.Duration `name:"drain-interval" default:"${drain_interval}" help:"Power-sample buffer drain interval (must stay well inside the ~2.4 s buffer)."`
	TelemetryInterval time.Duration `name:"telemetry-interval" default:"${telemetry_interval}" help:"Telemetry (temperature, clocks, utilization) interval."`
	RingSpan          time.Duration `name:"ring-span" default:"${ring_span}" help:"Recent data kept in memory per GPU."`
	SerialReads       bool          `name:"serial-counter-reads" help:"GPUs read their energy counters in turn, never two at once (for hosts where concurrent reads slow each other)."`
	ProcessInterval   time.Duration `name:"process-interval" default:"500ms" help:"Per-process utilization and running-process poll interval, at most 1s (0: no per-process data)."`
}

// Config returns the sampler configuration.
func (f SamplerFlags) Config() sampler.Config {
	return sampler.Config{CounterInterval: f.CounterInterval, DrainInterval: f.DrainInterval,
		TelemetryInterval: f.TelemetryInterval, RingSpan: f.RingSpan, SerialCounterReads: f.SerialReads,
		ProcessInterval: f.ProcessInterval, NoProcesses: f.ProcessInterval == 0}
}
