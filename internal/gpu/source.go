// Package gpu is lem's view of the GPUs: one small interface the sampler uses for every device, implemented over
// NVML (go-nvml) for real hardware and over a recorded trace for replay (hosts without a GPU, demos, tests).
package gpu

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/lem-energy/lem/internal/meta"
	"github.com/lem-energy/lem/internal/trace"
)

// ErrNotSupported is the normal answer of a GPU that lacks a feature (e.g. no energy counter before Volta).
// Check it with errors.Is; it is not a failure.
var ErrNotSupported = errors.New("not supported on this GPU")

// ErrGPULost means the GPU fell off the bus or the driver gave up on it; it needs operator attention.
var ErrGPULost = errors.New("GPU is lost")

// ClockReasons names NVML's clocks-event-reason bits (nvmlClocksEventReason*).
var ClockReasons = []struct {
	Bit  uint64
	Name string
}{
	{0x1, "gpu_idle"},
	{0x2, "applications_clocks_setting"},
	{0x4, "sw_power_cap"},
	{0x8, "hw_slowdown"},
	{0x10, "sync_boost"},
	{0x20, "sw_thermal_slowdown"},
	{0x40, "hw_thermal_slowdown"},
	{0x80, "hw_power_brake_slowdown"},
	{0x100, "display_clock_setting"},
}

// Process is a compute process running on a GPU.
type Process struct {
	PID             uint32 `json:"pid"`
	UsedMemoryBytes uint64 `json:"used_memory_bytes"` // 0 where the driver does not tell
	// GPUInstance and ComputeInstance are the MIG instance the process runs in; trace.NoInstance without MIG.
	GPUInstance     int `json:"gpu_instance"`
	ComputeInstance int `json:"compute_instance"`
	// Identity is whose the process is (command, container, pod): resolved on the host for NVML, as recorded for
	// a replay.
	Identity trace.ProcessIdentity `json:"identity"`
}

// ProcessUtilizer is implemented by devices that tell how busy each process kept the GPU.
type ProcessUtilizer interface {
	// ProcessUtilization returns the driver's per-process utilization samples stamped strictly after since (zero
	// time: all it holds). The driver keeps each process's latest sample only, so a caller that wants every
	// sample asks more often than the driver's sample period (1 s on H200).
	ProcessUtilization(since time.Time) ([]trace.ProcessSample, error)
}

// Identifier tells whose a host process is (procmap.Resolver).
type Identifier interface {
	Identify(pid uint32) trace.ProcessIdentity
}

// Device is one GPU as the sampler sees it. Calls may block (a counter read takes milliseconds), so each device
// is driven from its own goroutines; implementations must be safe for concurrent use of different methods.
type Device interface {
	// Info returns the device's static identity and capabilities.
	Info() meta.Device
	// ReadEnergy reads the total-energy counter, stamping it with the host time before the read.
	ReadEnergy() (trace.CounterReading, error)
	// PowerSamples returns the driver's buffered power samples stamped strictly after since (zero time: all).
	PowerSamples(since time.Time) ([]trace.PowerSample, error)
	// Telemetry returns a snapshot; unsupported fields are NaN, and the error is non-nil only when nothing
	// could be read.
	Telemetry() (trace.Telemetry, error)
	// Processes lists the compute processes on the GPU.
	Processes() ([]Process, error)
}

// Source is a set of devices sharing one clock.
type Source interface {
	Environment() meta.Environment
	Devices() []Device
	// Clock is the time base of the source's timestamps: the wall clock for NVML, a shifted (and possibly
	// sped-up) clock for replay. Everything that schedules reads or stamps data from a source uses it.
	Clock() Clock
	Close() error
}

// EventReplayer is implemented by sources that carry recorded events (a replayed trace's phase markers).
type EventReplayer interface {
	ReplayEvents(ctx context.Context, emit func(trace.Event))
}

// Clock tells time and makes tickers.
type Clock interface {
	Now() time.Time
	// NewTicker ticks every d of this clock's time.
	NewTicker(d time.Duration) Ticker
	// Since is Now().Sub(t).
	Since(t time.Time) time.Duration
	// After fires once d of this clock's time has passed.
	After(d time.Duration) <-chan time.Time
}

// Ticker is a stoppable periodic channel.
type Ticker interface {
	C() <-chan time.Time
	Stop()
}

// WallClock is the host's clock.
type WallClock struct{}

var _ Clock = WallClock{}

// Now returns time.Now.
func (WallClock) Now() time.Time { return time.Now() }

// Since returns time.Since(t).
func (WallClock) Since(t time.Time) time.Duration { return time.Since(t) }

// After wraps time.After.
func (WallClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// NewTicker wraps time.NewTicker.
func (WallClock) NewTicker(d time.Duration) Ticker { return wallTicker{time.NewTicker(d)} }

type wallTicker struct{ t *time.Ticker }

func (w wallTicker) C() <-chan time.Time { return w.t.C }
func (w wallTicker) Stop()               { w.t.Stop() }

// ScaledClock runs Speed times faster than the wall clock from Origin (its time at Start).
type ScaledClock struct {
	Origin time.Time
	Start  time.Time
	Speed  float64
}

var _ Clock = (*ScaledClock)(nil)

// Now returns the scaled time.
func (c *ScaledClock) Now() time.Time {
	return c.Origin.Add(time.Duration(float64(time.Since(c.Start)) * c.Speed))
}

// Since returns Now().Sub(t).
func (c *ScaledClock) Since(t time.Time) time.Duration { return c.Now().Sub(t) }

// After fires after d of scaled time.
func (c *ScaledClock) After(d time.Duration) <-chan time.Time {
	return time.After(time.Duration(float64(d) / c.Speed))
}

// NewTicker ticks every d of scaled time.
func (c *ScaledClock) NewTicker(d time.Duration) Ticker {
	w := time.Duration(float64(d) / c.Speed)
	if w <= 0 {
		w = time.Microsecond
	}
	return wallTicker{time.NewTicker(w)}
}

// Select picks devices by index or UUID (or UUID prefix); an empty selection or "all" keeps them all.
func Select(devs []Device, specs []string) ([]Device, error) {
	if len(specs) == 0 || (len(specs) == 1 && strings.EqualFold(specs[0], "all")) {
		return devs, nil
	}
	var out []Device
	seen := map[int]bool{}
	for _, spec := range specs {
		spec = strings.TrimSpace(spec)
		var match []Device
		if n, err := strconv.Atoi(spec); err == nil {
			for _, d := range devs {
				if d.Info().Index == n {
					match = append(match, d)
				}
			}
		} else {
			for _, d := range devs {
				if strings.HasPrefix(d.Info().UUID, spec) {
					match = append(match, d)
				}
			}
		}
		switch {
		case len(match) == 0:
			return nil, fmt.Errorf("GPU %q: no such device (have %s)", spec, describe(devs))
		case len(match) > 1:
			return nil, fmt.Errorf("GPU %q matches %d devices; give more of the UUID", spec, len(match))
		}
		if i := match[0].Info().Index; !seen[i] {
			seen[i] = true
			out = append(out, match[0])
		}
	}
	return out, nil
}

func describe(devs []Device) string {
	if len(devs) == 0 {
		return "none"
	}
	parts := make([]string, len(devs))
	for i, d := range devs {
		in := d.Info()
		parts[i] = fmt.Sprintf("%d=%s", in.Index, in.UUID)
	}
	return strings.Join(parts, ", ")
}
