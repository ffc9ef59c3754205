package testutil

import (
	"math"
	"time"

	"github.com/lem-energy/lem/internal/trace"
)

// Square is a synthetic GPU whose load switches instantly between Low and High: High for Duty of every Period
// while the wave runs ([On, Off) from Start; Off 0: to the end), Low otherwise. Its 50 Hz samples are
// instantaneous readings every SamplePeriod from Start+SampleOffset, so a wave faster than the sampling is aliased
// (a 40 ms wave at 25 % duty sampled inside its high part reads 50 % duty); its counter is exact: it updates every
// UpdatePeriod from UpdateOffset, is read phase-locked half an update later every ReadEvery, and a read at t holds
// the energy up to t − Lag (the reads' lag, as in Synth), in whole millijoules.
type Square struct {
	Start         time.Time
	Duration      time.Duration
	Low, High     float64
	Period        time.Duration
	Duty          float64
	On, Off       time.Duration
	SampleOffset  time.Duration
	SamplePeriod  time.Duration // default 20 ms
	Lag           time.Duration
	ReadEvery     time.Duration // default 100 ms
	UpdatePeriod  time.Duration // default 100 ms
	UpdateOffset  time.Duration // default 37 ms
	AverageWindow time.Duration // > 0: each sample is the mean power over this window before it, not a reading
}

func (s Square) defaults() Square {
	if s.SamplePeriod == 0 {
		s.SamplePeriod = 20 * time.Millisecond
	}
	if s.ReadEvery == 0 {
		s.ReadEvery = 100 * time.Millisecond
	}
	if s.UpdatePeriod == 0 {
		s.UpdatePeriod = 100 * time.Millisecond
	}
	if s.UpdateOffset == 0 {
		s.UpdateOffset = 37 * time.Millisecond
	}
	if s.Off == 0 {
		s.Off = s.Duration
	}
	return s
}

// Power is the true power at t.
func (s Square) Power(t time.Time) float64 {
	s = s.defaults()
	x := t.Sub(s.Start)
	if x < s.On || x >= s.Off {
		return s.Low
	}
	if time.Duration(math.Mod(float64(x-s.On), float64(s.Period))) < time.Duration(s.Duty*float64(s.Period)) {
		return s.High
	}
	return s.Low
}

// Energy is the true energy over [a, b], exact: the power is constant between switches, which are walked one by
// one.
func (s Square) Energy(a, b time.Time) float64 {
	s = s.defaults()
	if !b.After(a) {
		return 0
	}
	var e float64
	x, end := a.Sub(s.Start), b.Sub(s.Start)
	for x < end {
		next := end
		if x < s.On {
			next = min(next, s.On)
		} else if x < s.Off {
			high := time.Duration(s.Duty * float64(s.Period))
			k := (x - s.On) / s.Period
			base := s.On + k*s.Period
			switch {
			case x < base+high:
				next = min(next, base+high)
			default:
				next = min(next, base+s.Period)
			}
			next = min(next, s.Off)
		}
		e += s.Power(s.Start.Add(x)) * (next - x).Seconds()
		x = next
	}
	return e
}

// Series is what lem records of the GPU.
func (s Square) Series() *trace.Series {
	s = s.defaults()
	out := &trace.Series{}
	for t := s.SampleOffset; t <= s.Duration; t += s.SamplePeriod {
		at := s.Start.Add(t)
		p := s.Power(at)
		if s.AverageWindow > 0 && t >= s.AverageWindow {
			p = s.Energy(at.Add(-s.AverageWindow), at) / s.AverageWindow.Seconds()
		}
		out.Samples = append(out.Samples, trace.PowerSample{Time: trace.StampOf(at), PowerW: p})
	}
	every := max(int(s.ReadEvery/s.UpdatePeriod), 1)
	for j := 0; ; j++ {
		update := s.UpdateOffset + time.Duration(j)*s.UpdatePeriod
		read := update + s.UpdatePeriod/2
		if read > s.Duration {
			break
		}
		if j%every != 0 || read-s.Lag < 0 {
			continue
		}
		e := s.Energy(s.Start, s.Start.Add(read-s.Lag))
		out.Counters = append(out.Counters, trace.CounterReading{Time: trace.StampOf(s.Start.Add(read)),
			EnergyMJ: 5_000_000 + uint64(math.Floor(e*1000))})
	}
	return out
}

// Trace is a one-GPU trace of the synthetic GPU (index 0) with the given events.
func (s Square) Trace(events ...trace.Event) *trace.Trace {
	t := trace.New(SynthEnv(0))
	*t.Series(0) = *s.Series()
	t.Events = events
	return t
}
