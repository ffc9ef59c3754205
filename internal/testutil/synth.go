package testutil

import (
	"fmt"
	"math"
	"sort"
	"time"

	"github.com/lem-energy/lem/internal/meta"
	"github.com/lem-energy/lem/internal/trace"
)

// Synth is a synthetic GPU whose energy is known exactly. Its power holds each Level from the level's At (relative
// to Start) until the next and ramps linearly to a new level over one sample period, so the 50 Hz samples
// (every SamplePeriod from Start) describe it exactly. The energy counter updates every UpdatePeriod (from
// UpdateOffset) and is read phase-locked half an update after an update, every ReadEvery; a reading taken at host
// time t holds the exact integral of the power up to t − Lag, in whole millijoules (Lag is the lag of the reads,
// their staleness included: what lem's lag fit estimates).
type Synth struct {
	Start        time.Time
	Duration     time.Duration
	Levels       []Level
	Lag          time.Duration
	ReadEvery    time.Duration // default 1 s
	SamplePeriod time.Duration // default 20 ms
	UpdatePeriod time.Duration // default 100 ms
	UpdateOffset time.Duration // default 37 ms
	// Gaps are windows (relative to Start) whose samples the driver never produced.
	Gaps [][2]time.Duration
	// BaseMJ is the counter's value at Start (default 5e6 mJ).
	BaseMJ uint64
	// TempC, when set, is the temperature of telemetry snapshots every 100 ms (none otherwise).
	TempC float64
}

// Level is a power level from At on.
type Level struct {
	At time.Duration
	W  float64
}

func (s Synth) defaults() Synth {
	if s.ReadEvery == 0 {
		s.ReadEvery = time.Second
	}
	if s.SamplePeriod == 0 {
		s.SamplePeriod = 20 * time.Millisecond
	}
	if s.UpdatePeriod == 0 {
		s.UpdatePeriod = 100 * time.Millisecond
	}
	if s.UpdateOffset == 0 {
		s.UpdateOffset = 37 * time.Millisecond
	}
	if s.BaseMJ == 0 {
		s.BaseMJ = 5_000_000
	}
	return s
}

// corners are the power curve's breakpoints: it is linear between them and flat beyond both ends.
func (s Synth) corners() [][2]float64 {
	s = s.defaults()
	var out [][2]float64 // seconds from Start, watts
	for i, l := range s.Levels {
		t := l.At.Seconds()
		if i == 0 {
			out = append(out, [2]float64{t, l.W})
			continue
		}
		prev := s.Levels[i-1].W
		out = append(out, [2]float64{t, prev}, [2]float64{t + s.SamplePeriod.Seconds(), l.W})
	}
	return out
}

// Power is the true power at t.
func (s Synth) Power(t time.Time) float64 {
	c := s.corners()
	x := t.Sub(s.Start).Seconds()
	if x <= c[0][0] {
		return c[0][1]
	}
	for i := 1; i < len(c); i++ {
		if x <= c[i][0] {
			a, b := c[i-1], c[i]
			if b[0] == a[0] {
				return b[1]
			}
			return a[1] + (x-a[0])/(b[0]-a[0])*(b[1]-a[1])
		}
	}
	return c[len(c)-1][1]
}

// Energy is the true energy over [a, b], integrated exactly over the curve's linear pieces.
func (s Synth) Energy(a, b time.Time) float64 {
	x0, x1 := a.Sub(s.Start).Seconds(), b.Sub(s.Start).Seconds()
	pts := []float64{x0, x1}
	for _, c := range s.corners() {
		if c[0] > x0 && c[0] < x1 {
			pts = append(pts, c[0])
		}
	}
	sort.Float64s(pts)
	var e float64
	for i := 1; i < len(pts); i++ {
		ta := s.Start.Add(time.Duration(pts[i-1] * 1e9))
		tb := s.Start.Add(time.Duration(pts[i] * 1e9))
		e += (s.Power(ta) + s.Power(tb)) / 2 * (pts[i] - pts[i-1]) // the curve is linear between corners
	}
	return e
}

// Series is what lem records of the GPU: samples (minus the gaps), and the counter's phase-locked reads.
func (s Synth) Series() *trace.Series {
	s = s.defaults()
	out := &trace.Series{}
	for t := time.Duration(0); t <= s.Duration; t += s.SamplePeriod {
		gap := false
		for _, g := range s.Gaps {
			gap = gap || (t > g[0] && t < g[1])
		}
		if !gap {
			at := s.Start.Add(t)
			out.Samples = append(out.Samples, trace.PowerSample{Time: trace.StampOf(at), PowerW: s.Power(at)})
		}
	}
	if s.TempC != 0 {
		for t := time.Duration(0); t <= s.Duration; t += 100 * time.Millisecond {
			tm := trace.NewTelemetry(trace.StampOf(s.Start.Add(t)))
			tm.TemperatureC = s.TempC
			out.Telemetry = append(out.Telemetry, tm)
		}
	}
	every := int(s.ReadEvery / s.UpdatePeriod)
	for j := 0; ; j++ {
		update := s.UpdateOffset + time.Duration(j)*s.UpdatePeriod
		read := update + s.UpdatePeriod/2
		if read > s.Duration {
			break
		}
		if j%max(every, 1) != 0 {
			continue
		}
		upTo := read - s.Lag
		e := s.Energy(s.Start, s.Start.Add(upTo))
		if upTo < 0 {
			e = -s.Energy(s.Start.Add(upTo), s.Start)
		}
		out.Counters = append(out.Counters, trace.CounterReading{Time: trace.StampOf(s.Start.Add(read)),
			EnergyMJ: uint64(int64(s.BaseMJ) + int64(math.Floor(e*1000)))})
	}
	return out
}

// Trace is a one-GPU trace of the synthetic GPU (index 0) with the given events.
func (s Synth) Trace(events ...trace.Event) *trace.Trace {
	t := trace.New(SynthEnv(0))
	*t.Series(0) = *s.Series()
	t.Events = events
	return t
}

// SynthEnv is the environment of synthetic GPUs 0..n.
func SynthEnv(n int) meta.Environment {
	env := meta.Environment{Source: meta.Source{Kind: "synthetic"}}
	for g := 0; g <= n; g++ {
		env.Devices = append(env.Devices, meta.Device{Index: g, UUID: fmt.Sprintf("GPU-synthetic-%d", g),
			Name: "Synthetic GPU", EnergyCounter: true, PowerSamples: true})
	}
	return env
}
