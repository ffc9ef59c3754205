package calibrate

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/lem-energy/lem/analyze/stats"
)

// EnergyMeter is lem's energy of one GPU over any window (account.Meter): the hybrid, counter totals placed by
// the 50 Hz shape — the energy lem reports, so the fit calibrates what lem reports.
type EnergyMeter interface {
	Energy(t0, t1 time.Time) float64
}

// Options tune Fit.
type Options struct {
	// MaxOffset bounds the search for the meter clock's offset from lem's: ± this (default 10 s).
	MaxOffset time.Duration
}

// DefaultMaxOffset is the default clock-offset search range: NTP-synchronised hosts agree within milliseconds, a
// meter's own clock set by hand within seconds.
const DefaultMaxOffset = 10 * time.Second

// Result is one board's fit of P_meter = Gain·P_lem + OffsetW.
type Result struct {
	Gain, GainSE      float64
	OffsetW, OffsetSE float64
	// CovW is the covariance of gain and offset (W), for the uncertainty of a corrected energy.
	CovW float64
	// ClockOffset is the meter's clock minus lem's: a reading stamped t covers lem time up to t − ClockOffset.
	ClockOffset time.Duration
	// Points is the readings fitted; Interval the meter's median interval between readings.
	Points   int
	Interval time.Duration
	// MinW and MaxW are the range of lem's power over the fitted intervals.
	MinW, MaxW float64
	// ResidualSDW is the residuals' standard deviation; Lag1 their lag-1 autocorrelation: where it is positive
	// the standard errors are widened by √((1+ρ)/(1−ρ)) (neighbouring residuals carry less than independent ones).
	ResidualSDW float64
	Lag1        float64
}

// Quantile97 is the two-sided 95 % quantile of Student's t with the fit's degrees of freedom (n − 2).
func (r Result) Quantile97() float64 { return stats.TQuantile(float64(r.Points - 2)) }

// minPoints is the fewest readings a fit uses.
const minPoints = 10

// gridStep is the resolution of lem's running energy and of the clock-offset search.
const gridStep = 10 * time.Millisecond

// Fit aligns the meter readings with lem's energy over [from, to] and fits the meter's power against lem's. Each
// reading is the meter's mean power over the interval since the reading before (or over the median interval,
// after a gap of more than two); lem's power over the same interval, moved by the clock offset, is its energy
// there over the interval's length. The clock offset is the one (searched on a 10 ms grid within ±MaxOffset,
// refined by a parabola through the best three) whose least-squares fit leaves the smallest residual.
func Fit(readings []Reading, m EnergyMeter, from, to time.Time, opts Options) (Result, error) {
	return Prepare(m, from, to).Fit(readings, opts)
}

// Lem is lem's running energy of one GPU over a span, on a 10 ms grid: prepared once, fitted against any number
// of meter logs.
type Lem struct {
	from, to time.Time
	cum      running
}

// Prepare computes lem's running energy over [from, to].
func Prepare(m EnergyMeter, from, to time.Time) *Lem {
	return &Lem{from: from, to: to, cum: runningEnergy(m, from, to)}
}

// Fit is the package's Fit on prepared energy.
func (l *Lem) Fit(readings []Reading, opts Options) (Result, error) {
	if opts.MaxOffset <= 0 {
		opts.MaxOffset = DefaultMaxOffset
	}
	if len(readings) < minPoints+1 {
		return Result{}, fmt.Errorf("%d meter readings: a fit needs at least %d", len(readings), minPoints+1)
	}
	interval := medianInterval(readings)
	if interval < gridStep {
		return Result{}, fmt.Errorf("the meter reads every %s: average it to %s or more first", interval, gridStep)
	}
	ivs := l.usableIntervals(readings, interval, opts.MaxOffset)
	if len(ivs) < minPoints {
		return Result{}, fmt.Errorf("%d meter readings overlap the trace (%s .. %s) with ±%s to spare: a fit needs %d",
			len(ivs), l.from.Format(time.RFC3339), l.to.Format(time.RFC3339), opts.MaxOffset, minPoints)
	}
	p := l.pairs(ivs)
	d, err := p.bestOffset(opts.MaxOffset)
	if err != nil {
		return Result{}, err
	}
	p.shift(d)
	f, err := ols(p.xs, p.ys)
	if err != nil {
		return Result{}, err
	}
	res := Result{Gain: f.gain, OffsetW: f.offset, ClockOffset: d, Points: len(ivs), Interval: interval,
		MinW: slices.Min(p.xs), MaxW: slices.Max(p.xs)}
	if res.MaxW-res.MinW < max(10, 0.1*res.MaxW) {
		return Result{}, fmt.Errorf("lem's power spans only %.0f–%.0f W over the meter's readings: a calibration needs loads "+
			"across the range (idle and full load)", res.MinW, res.MaxW)
	}
	res.setUncertainty(f)
	return res, nil
}

// medianInterval is the median time between consecutive readings (at least two).
func medianInterval(readings []Reading) time.Duration {
	gaps := make([]float64, 0, len(readings)-1)
	for i := 1; i < len(readings); i++ {
		gaps = append(gaps, float64(readings[i].Time.Sub(readings[i-1].Time)))
	}
	slices.Sort(gaps)
	return time.Duration(gaps[len(gaps)/2])
}

// meterInterval is one reading: the meter's mean power w over [a, b].
type meterInterval struct {
	a, b time.Time
	w    float64
}

// usableIntervals are the readings' intervals that lie inside lem's span at every candidate offset, so all
// candidates are scored on the same readings.
func (l *Lem) usableIntervals(readings []Reading, interval, maxOffset time.Duration) []meterInterval {
	var ivs []meterInterval
	for i, r := range readings {
		a := r.Time.Add(-interval)
		if i > 0 && r.Time.Sub(readings[i-1].Time) <= 2*interval {
			a = readings[i-1].Time
		}
		if !a.Add(-maxOffset).Before(l.from) && !r.Time.Add(maxOffset).After(l.to) {
			ivs = append(ivs, meterInterval{a, r.Time, r.W})
		}
	}
	return ivs
}

// powerPairs are the meter's powers (ys) beside lem's over the same intervals moved by a clock offset (xs).
type powerPairs struct {
	cum    running
	xa, xb []float64 // interval edges on the grid (grid units from the start), so a shift by d is a subtraction
	secs   []float64
	xs, ys []float64
}

func (l *Lem) pairs(ivs []meterInterval) *powerPairs {
	n := len(ivs)
	p := &powerPairs{cum: l.cum, xa: make([]float64, n), xb: make([]float64, n), secs: make([]float64, n),
		xs: make([]float64, n), ys: make([]float64, n)}
	for i, v := range ivs {
		p.xa[i], p.xb[i] = l.cum.x(v.a), l.cum.x(v.b)
		p.secs[i] = v.b.Sub(v.a).Seconds()
		p.ys[i] = v.w
	}
	return p
}

// shift sets xs to lem's power over each interval moved by d.
func (p *powerPairs) shift(d time.Duration) {
	s := float64(d) / float64(gridStep)
	for i := range p.xs {
		p.xs[i] = (p.cum.atX(p.xb[i]-s) - p.cum.atX(p.xa[i]-s)) / p.secs[i]
	}
}

// bestOffset is the clock offset within ±maxOffset whose fit leaves the smallest residual: the best on the grid,
// refined to the vertex of the parabola through it and its neighbours.
func (p *powerPairs) bestOffset(maxOffset time.Duration) (time.Duration, error) {
	steps := int(maxOffset / gridStep)
	rss := make([]float64, 2*steps+1)
	for k := -steps; k <= steps; k++ {
		p.shift(time.Duration(k) * gridStep)
		f, err := ols(p.xs, p.ys)
		if err != nil {
			rss[k+steps] = math.Inf(1)
			continue
		}
		rss[k+steps] = f.rss
	}
	best := 0
	for k := range rss {
		if rss[k] < rss[best] {
			best = k
		}
	}
	if math.IsInf(rss[best], 1) {
		return 0, errors.New("lem's power does not vary over the meter's readings: a calibration needs loads across the range (idle and full load)")
	}
	if best == 0 || best == len(rss)-1 {
		return 0, fmt.Errorf("the best clock offset lies at the search limit (±%s): the meter's clock is further off "+
			"(its time zone?) or the log and the trace do not overlap; widen the search", maxOffset)
	}
	d := time.Duration(best-steps) * gridStep
	if l, c, r := rss[best-1], rss[best], rss[best+1]; l+r-2*c > 0 {
		d += time.Duration(0.5 * (l - r) / (l + r - 2*c) * float64(gridStep))
	}
	return d, nil
}

// setUncertainty sets the residuals' spread and lag-1 autocorrelation and the standard errors of gain and offset,
// widened where neighbouring residuals are positively correlated.
func (res *Result) setUncertainty(f olsFit) {
	n := float64(res.Points)
	s2 := f.rss / (n - 2)
	var num, den float64
	for i := range f.res {
		den += f.res[i] * f.res[i]
		if i > 0 {
			num += f.res[i] * f.res[i-1]
		}
	}
	infl := 1.0
	if den > 0 {
		res.Lag1 = num / den
		if rho := min(res.Lag1, 0.95); rho > 0 {
			infl = (1 + rho) / (1 - rho)
		}
	}
	res.ResidualSDW = math.Sqrt(s2)
	v := s2 * infl
	res.GainSE = math.Sqrt(v / f.sxx)
	res.OffsetSE = math.Sqrt(v * (1/n + f.xbar*f.xbar/f.sxx))
	res.CovW = -f.xbar * v / f.sxx
}

// olsFit is a least-squares line y = gain·x + offset.
type olsFit struct {
	gain, offset, rss, sxx, xbar float64
	res                          []float64
}

// ols fits y = gain·x + offset, centred (two passes) so a near-perfect fit does not cancel.
func ols(xs, ys []float64) (olsFit, error) {
	n := float64(len(xs))
	var xm, ym float64
	for i := range xs {
		xm += xs[i]
		ym += ys[i]
	}
	xm, ym = xm/n, ym/n
	var sxx, sxy float64
	for i := range xs {
		dx := xs[i] - xm
		sxx += dx * dx
		sxy += dx * (ys[i] - ym)
	}
	if !(sxx > 0) {
		return olsFit{}, errors.New("lem's power is constant over the meter's readings")
	}
	f := olsFit{gain: sxy / sxx, sxx: sxx, xbar: xm, res: make([]float64, len(xs))}
	f.offset = ym - f.gain*xm
	for i := range xs {
		r := ys[i] - (f.gain*xs[i] + f.offset)
		f.res[i] = r
		f.rss += r * r
	}
	return f, nil
}

// running is lem's energy from `from` at every gridStep, for O(1) energy between any two instants.
type running struct {
	from time.Time
	cum  []float64
}

func runningEnergy(m EnergyMeter, from, to time.Time) running {
	n := int(to.Sub(from)/gridStep) + 1
	r := running{from: from, cum: make([]float64, n)}
	for k := 1; k < n; k++ {
		e := m.Energy(from.Add(time.Duration(k-1)*gridStep), from.Add(time.Duration(k)*gridStep))
		if math.IsNaN(e) {
			e = 0
		}
		r.cum[k] = r.cum[k-1] + e
	}
	return r
}

// x is t in grid units from the start.
func (r running) x(t time.Time) float64 { return float64(t.Sub(r.from)) / float64(gridStep) }

// atX interpolates the running energy linearly at x grid units (clamped to its span).
func (r running) atX(x float64) float64 {
	if x <= 0 {
		return r.cum[0]
	}
	k := int(x)
	if k >= len(r.cum)-1 {
		return r.cum[len(r.cum)-1]
	}
	f := x - float64(k)
	return r.cum[k] + f*(r.cum[k+1]-r.cum[k])
}
