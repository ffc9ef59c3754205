package testutil

import (
	"math"
	"time"

	"github.com/lem-energy/lem/internal/trace"
)

// The energy methods written plainly, for tests' expected values: linear scans, no caches, no cursors, none of
// analyze/energy's code. Slow and obvious on purpose.

// sec is t − base in seconds.
func sec(t, base time.Time) float64 { return t.Sub(base).Seconds() }

// PlainSampled integrates the samples over [a, b] by the trapezoid rule, the power at a and b interpolated
// linearly between the samples around them.
func PlainSampled(ss []trace.PowerSample, a, b time.Time) float64 {
	at := func(t time.Time) float64 {
		for i := 1; i < len(ss); i++ {
			if !ss[i].Time.Time().Before(t) {
				p, q := ss[i-1], ss[i]
				f := sec(t, p.Time.Time()) / sec(q.Time.Time(), p.Time.Time())
				return p.PowerW + f*(q.PowerW-p.PowerW)
			}
		}
		return math.NaN()
	}
	prevT, prevP := a, at(a)
	var e float64
	for _, s := range ss {
		if !s.Time.Time().After(a) || s.Time.Time().After(b) {
			continue
		}
		e += (prevP + s.PowerW) / 2 * sec(s.Time.Time(), prevT)
		prevT, prevP = s.Time.Time(), s.PowerW
	}
	return e + (prevP+at(b))/2*sec(b, prevT)
}

// PlainCounter is the counter's energy over [a, b], its value at a and b interpolated linearly between reads
// (no reset handling: test traces have none).
func PlainCounter(cs []trace.CounterReading, a, b time.Time) float64 {
	at := func(t time.Time) float64 {
		for i := 1; i < len(cs); i++ {
			if !cs[i].Time.Time().Before(t) {
				p, q := cs[i-1], cs[i]
				f := sec(t, p.Time.Time()) / sec(q.Time.Time(), p.Time.Time())
				return p.Joules() + f*(q.Joules()-p.Joules())
			}
		}
		return math.NaN()
	}
	return at(b) - at(a)
}

// PlainHybrid is the hybrid energy over [a, b] with a given counter lag: the counter's distinct values, moved back
// by lag, split the time into intervals; each interval's counter increment is spread over it in proportion to the
// samples' energy. a and b must lie inside the (moved) readings.
func PlainHybrid(cs []trace.CounterReading, ss []trace.PowerSample, lag time.Duration, a, b time.Time) float64 {
	type pt struct {
		t time.Time
		j float64
	}
	var pts []pt
	for i, c := range cs {
		if i > 0 && c.EnergyMJ == cs[i-1].EnergyMJ {
			continue // the value appeared at the first read that showed it
		}
		pts = append(pts, pt{c.Time.Time().Add(-lag), c.Joules()})
	}
	cum := func(t time.Time) float64 {
		for k := 1; k < len(pts); k++ {
			if !pts[k].t.Before(t) {
				p, q := pts[k-1], pts[k]
				whole := PlainSampled(ss, p.t, q.t)
				if whole <= 0 {
					return p.j + sec(t, p.t)/sec(q.t, p.t)*(q.j-p.j)
				}
				return p.j + (q.j-p.j)*PlainSampled(ss, p.t, t)/whole
			}
		}
		return math.NaN()
	}
	return cum(b) - cum(a)
}
