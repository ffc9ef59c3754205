// Package precision turns a run of the GPU characterisation workload (scripts/gpu/precision.py) into its tables:
// per square-wave configuration, each method's energy against the counter; per burst length, the per-burst
// energy above idle and its spread, and the per-kernel energy against the longest bursts', at the trace's counter
// cadence and at sparser ones (the counter readings thinned). `lem-analyze precision` prints them.
package precision

import (
	"fmt"
	"math"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/lem-energy/lem/analyze/account"
	"github.com/lem-energy/lem/analyze/energy"
	"github.com/lem-energy/lem/internal/manifest"
	"github.com/lem-energy/lem/internal/trace"
)

// SquareRow is one square-wave configuration (phase sq_p<period>ms_d<duty>).
type SquareRow struct {
	Phase    string       `json:"phase"`
	PeriodMS float64      `json:"period_ms"`
	DutyPct  float64      `json:"duty_pct"`
	Seconds  float64      `json:"seconds"`
	CounterJ manifest.Num `json:"counter_j"`
	SampledJ manifest.Num `json:"sampled_j"`
	HybridJ  manifest.Num `json:"hybrid_j"`
	AverageJ manifest.Num `json:"average_j"` // the 1 s-average power integrated
	// Each method against the counter, %.
	SampledPct manifest.Num `json:"sampled_pct"`
	HybridPct  manifest.Num `json:"hybrid_pct"`
	AveragePct manifest.Num `json:"average_pct"`
	// Intervals and Suspect are the aliasing check's counter intervals inside the phase and the suspect ones.
	Intervals int `json:"intervals"`
	Suspect   int `json:"suspect"`
}

var squareName = regexp.MustCompile(`^sq_p([0-9.]+)ms_d([0-9.]+)$`)

// Squares computes the square-wave table of GPU g: every phase named sq_p<period>ms_d<duty>, in trace order.
func Squares(t *trace.Trace, g int) ([]SquareRow, error) {
	s := t.GPUs[g]
	if s == nil {
		return nil, fmt.Errorf("GPU %d: not in the trace", g)
	}
	_, last := t.Span()
	var phases []trace.Phase
	for _, p := range trace.Phases(t.Events, last) {
		if squareName.MatchString(p.Name) {
			phases = append(phases, p)
		}
	}
	pes, _ := energy.ByPhase(g, s, phases, energy.Options{})
	m := account.NewMeter(s)
	var ck account.AliasCheck
	if h := m.Hybrid(); h != nil {
		a, b := s.Common()
		ck = account.CheckAliasing(h, a, b)
	}
	var out []SquareRow
	for i, pe := range pes {
		sm := squareName.FindStringSubmatch(pe.Phase)
		period, _ := strconv.ParseFloat(sm[1], 64)
		duty, _ := strconv.ParseFloat(sm[2], 64)
		r := SquareRow{Phase: pe.Phase, PeriodMS: period, DutyPct: duty, Seconds: pe.Duration().Seconds(),
			CounterJ: manifest.Num(pe.CounterJ), SampledJ: manifest.Num(pe.SampledJ), HybridJ: manifest.Num(pe.HybridJ),
			AverageJ: manifest.Num(pe.AveragePowerJ)}
		pct := func(v manifest.Num) manifest.Num { return 100 * (v/r.CounterJ - 1) }
		r.SampledPct, r.HybridPct, r.AveragePct = pct(r.SampledJ), pct(r.HybridJ), pct(r.AverageJ)
		r.Intervals, r.Suspect, _ = ck.Inside(phases[i].Start, phases[i].End)
		out = append(out, r)
	}
	return out, nil
}

// Burst windows: burst_<length>ms with an id; the end carries kernels=<N>.
var burstName = regexp.MustCompile(`^burst_([0-9.]+)ms$`)

// Padding of a burst's energy window: from more than one counter update (~100 ms) before its begin marker to
// well after its end, so that at 100 ms reads the counter intervals holding the burst lie wholly inside the window
// (its energy is then the counter's, whatever the samples saw) and the power's tail and the markers' latency stay
// inside. At sparser reads the window's edges fall in intervals that hold the burst: what the table measures.
const (
	PadBefore = 150 * time.Millisecond
	PadAfter  = 250 * time.Millisecond
	// idleBefore is where a burst's local idle power is taken: the median sample power over this stretch,
	// ending PadBefore before the burst.
	idleBefore = 300 * time.Millisecond
)

// Burst is one burst window of the trace.
type Burst struct {
	LengthMS   float64
	ID         string
	Start, End time.Time
	Kernels    int
}

// Bursts lists the trace's burst windows in time order.
func Bursts(t *trace.Trace) []Burst {
	open := map[string]trace.Event{}
	var out []Burst
	evs := slices.Clone(t.Events)
	sort.SliceStable(evs, func(i, j int) bool { return evs[i].Time.Before(evs[j].Time) })
	for _, e := range evs {
		sm := burstName.FindStringSubmatch(e.Name)
		if sm == nil {
			continue
		}
		key := e.Name + "#" + e.Attrs[trace.AttrWindowID]
		switch e.Type {
		case trace.EventWindowBegin:
			open[key] = e
		case trace.EventWindowEnd:
			b, ok := open[key]
			if !ok {
				continue
			}
			delete(open, key)
			l, _ := strconv.ParseFloat(sm[1], 64)
			k, _ := strconv.Atoi(e.Attrs["kernels"])
			out = append(out, Burst{LengthMS: l, ID: e.Attrs[trace.AttrWindowID], Start: b.Time, End: e.Time, Kernels: k})
		}
	}
	return out
}

// Cadence is how the counter was read for a burst row: every read of the trace (Every 0), thinned to one read
// per Every, or no counter at all (SamplesOnly: the 50 Hz integral).
type Cadence struct {
	Every       time.Duration
	SamplesOnly bool
}

func (c Cadence) String() string {
	switch {
	case c.SamplesOnly:
		return "50 Hz only"
	case c.Every == 0:
		return "native"
	}
	return c.Every.String()
}

// DefaultCadences are the trace's own reads, 0.5, 1 and 2 s, and the samples alone.
var DefaultCadences = []Cadence{{}, {Every: 500 * time.Millisecond}, {Every: time.Second}, {Every: 2 * time.Second},
	{SamplesOnly: true}}

// BurstRow is one burst length at one counter cadence.
type BurstRow struct {
	LengthMS float64      `json:"length_ms"`
	Cadence  string       `json:"cadence"`
	N        int          `json:"n"`
	Kernels  manifest.Num `json:"kernels"` // mean kernels per burst
	// MeanJ, SDJ and CV are the per-burst energy above the local idle: mean, standard deviation, SD/mean.
	MeanJ manifest.Num `json:"mean_j"`
	SDJ   manifest.Num `json:"sd_j"`
	CV    manifest.Num `json:"cv"`
	// PerKernelJ is MeanJ over the mean kernel count; BiasPct its departure from the reference: the per-kernel
	// energy of the longest bursts at the native cadence.
	PerKernelJ manifest.Num `json:"per_kernel_j"`
	BiasPct    manifest.Num `json:"bias_pct"`
	// CounterMS is the median interval between the counter readings used (0 for the samples alone).
	CounterMS manifest.Num `json:"counter_ms"`
}

// BurstTable computes the burst table of GPU g at each cadence. The hybrid's lag is fitted once on the trace's own
// reads and used at every cadence: the lag is the setup's, and thinning should change only the cadence.
func BurstTable(t *trace.Trace, g int, cadences []Cadence) ([]BurstRow, error) {
	s := t.GPUs[g]
	if s == nil {
		return nil, fmt.Errorf("GPU %d: not in the trace", g)
	}
	bursts := Bursts(t)
	if len(bursts) == 0 {
		return nil, nil
	}
	full, est, err := energy.FitHybrid(s.Counters, s.Samples)
	if err != nil {
		return nil, fmt.Errorf("GPU %d: %w", g, err)
	}
	var rows []BurstRow
	for _, c := range cadences {
		meter, counterMS, err := cadenceMeter(s, full, est.Lag, c)
		if err != nil {
			return nil, fmt.Errorf("GPU %d at %s reads: %w", g, c, err)
		}
		rows = append(rows, burstRows(bursts, s.Samples, meter, c, counterMS)...)
	}
	// The reference: the longest bursts at the first cadence given (the trace's own reads by default).
	ref, refLen := manifest.Null, math.Inf(-1)
	for _, r := range rows {
		if r.Cadence == cadences[0].String() && r.LengthMS > refLen {
			ref, refLen = r.PerKernelJ, r.LengthMS
		}
	}
	for i := range rows {
		rows[i].BiasPct = 100 * (rows[i].PerKernelJ/ref - 1)
	}
	return rows, nil
}

// meterFunc is the energy over [a, b] by one method.
type meterFunc func(a, b time.Time) (float64, error)

// cadenceMeter is the meter of one cadence: the samples alone, or the hybrid on the counter reads thinned to the
// cadence (the whole series' fit when none are left out), with the counter's median interval (ms; 0 for samples).
func cadenceMeter(s *trace.Series, full *energy.Hybrid, lag time.Duration, c Cadence) (meterFunc, float64, error) {
	if c.SamplesOnly {
		return func(a, b time.Time) (float64, error) {
			r, err := energy.Sampled(s.Samples, a, b)
			return r.Joules, err
		}, 0, nil
	}
	cs := thin(s.Counters, c.Every)
	h := full
	if c.Every > 0 {
		var err error
		if h, err = energy.NewHybrid(cs, s.Samples, lag); err != nil {
			return nil, 0, err
		}
	}
	return func(a, b time.Time) (float64, error) {
		r, err := h.Energy(a, b)
		return r.Joules, err
	}, medianInterval(cs), nil
}

// burstRows measures every burst (padded, less the local idle) by one cadence's meter and summarises them per
// burst length, shortest first; bursts the meter cannot measure or without an idle before them are left out.
func burstRows(bursts []Burst, ss []trace.PowerSample, meter meterFunc, c Cadence, counterMS float64) []BurstRow {
	byLen := map[float64][]float64{}
	kernels := map[float64][]float64{}
	for _, b := range bursts {
		a, e := b.Start.Add(-PadBefore), b.End.Add(PadAfter)
		j, err := meter(a, e)
		if err != nil {
			continue
		}
		idle := localIdle(ss, a)
		if math.IsNaN(idle) {
			continue
		}
		byLen[b.LengthMS] = append(byLen[b.LengthMS], j-idle*e.Sub(a).Seconds())
		kernels[b.LengthMS] = append(kernels[b.LengthMS], float64(b.Kernels))
	}
	lens := make([]float64, 0, len(byLen))
	for l := range byLen {
		lens = append(lens, l)
	}
	slices.Sort(lens)
	rows := make([]BurstRow, 0, len(lens))
	for _, l := range lens {
		xs := byLen[l]
		mean, sd := meanSD(xs)
		k, _ := meanSD(kernels[l])
		r := BurstRow{LengthMS: l, Cadence: c.String(), N: len(xs), Kernels: manifest.Num(k), MeanJ: manifest.Num(mean),
			SDJ: manifest.Num(sd), CV: manifest.Num(sd / mean), PerKernelJ: manifest.Null, BiasPct: manifest.Null,
			CounterMS: manifest.Num(counterMS)}
		if k > 0 {
			r.PerKernelJ = manifest.Num(mean / k)
		}
		rows = append(rows, r)
	}
	return rows
}

// thin keeps one counter reading per every (the first at or after each step), all of them for every 0.
func thin(cs []trace.CounterReading, every time.Duration) []trace.CounterReading {
	if every <= 0 || len(cs) == 0 {
		return cs
	}
	out := []trace.CounterReading{cs[0]}
	for _, c := range cs[1:] {
		if c.Time.Sub(out[len(out)-1].Time) >= every-5*time.Millisecond {
			out = append(out, c)
		}
	}
	return out
}

func medianInterval(cs []trace.CounterReading) float64 {
	var ds []float64
	for i := 1; i < len(cs); i++ {
		if cs[i].EnergyMJ != cs[i-1].EnergyMJ {
			ds = append(ds, float64(cs[i].Time.Sub(cs[i-1].Time))/1e6)
		}
	}
	if len(ds) == 0 {
		return math.NaN()
	}
	slices.Sort(ds)
	return ds[len(ds)/2]
}

// localIdle is the median sample power over the idleBefore stretch ending at t.
func localIdle(ss []trace.PowerSample, t time.Time) float64 {
	at := trace.StampOf(t)
	i := sort.Search(len(ss), func(i int) bool { return !ss[i].Time.Before(at.Add(-idleBefore)) })
	var ps []float64
	for ; i < len(ss) && ss[i].Time.Before(at); i++ {
		ps = append(ps, ss[i].PowerW)
	}
	if len(ps) < 3 {
		return math.NaN()
	}
	slices.Sort(ps)
	return ps[len(ps)/2]
}

func meanSD(xs []float64) (float64, float64) {
	if len(xs) == 0 {
		return math.NaN(), math.NaN()
	}
	var m float64
	for _, x := range xs {
		m += x
	}
	m /= float64(len(xs))
	if len(xs) < 2 {
		return m, math.NaN()
	}
	var ss float64
	for _, x := range xs {
		ss += (x - m) * (x - m)
	}
	return m, math.Sqrt(ss / float64(len(xs)-1))
}

// f formats a value, — where it was not measured.
func f(v manifest.Num, format string) string {
	if !v.Valid() {
		return "—"
	}
	return fmt.Sprintf(format, float64(v))
}

// Markdown writes both tables.
func Markdown(sq []SquareRow, bs []BurstRow) string {
	var b strings.Builder
	if len(sq) > 0 {
		b.WriteString("## Square waves (energy per phase, J; each method against the counter, %)\n\n")
		b.WriteString("| phase | period ms | duty % | s | counter J | 50 Hz J | 50 Hz % | hybrid J | hybrid % | 1 s-avg J | 1 s-avg % | suspect intervals |\n")
		b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|\n")
		for _, r := range sq {
			fmt.Fprintf(&b, "| %s | %g | %g | %.2f | %s | %s | %s | %s | %s | %s | %s | %d of %d |\n", r.Phase,
				r.PeriodMS, r.DutyPct, r.Seconds, f(r.CounterJ, "%.1f"), f(r.SampledJ, "%.1f"), f(r.SampledPct, "%+.2f"),
				f(r.HybridJ, "%.1f"), f(r.HybridPct, "%+.2f"), f(r.AverageJ, "%.1f"), f(r.AveragePct, "%+.2f"), r.Suspect, r.Intervals)
		}
	}
	if len(bs) > 0 {
		b.WriteString("\n## Bursts (energy above the local idle per burst; per-kernel energy against the longest bursts' at the native cadence)\n\n")
		b.WriteString("| length ms | counter cadence | counter ms | bursts | kernels | mean J | SD J | CV % | J per kernel | bias % |\n")
		b.WriteString("|---|---|---|---|---|---|---|---|---|---|\n")
		for _, r := range bs {
			fmt.Fprintf(&b, "| %g | %s | %s | %d | %s | %s | %s | %s | %s | %s |\n", r.LengthMS, r.Cadence,
				f(r.CounterMS, "%.0f"), r.N, f(r.Kernels, "%.1f"), f(r.MeanJ, "%.3f"), f(r.SDJ, "%.3f"), f(100*r.CV, "%.2f"),
				f(r.PerKernelJ, "%.5f"), f(r.BiasPct, "%+.2f"))
		}
	}
	return b.String()
}
