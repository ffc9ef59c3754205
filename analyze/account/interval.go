package account

import (
	"context"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/lem-energy/lem/internal/manifest"
	"github.com/lem-energy/lem/internal/marker"
	"github.com/lem-energy/lem/internal/meta"
	"github.com/lem-energy/lem/internal/sampler"
	"github.com/lem-energy/lem/internal/trace"
)

// Recent is the recent data of a running sampler (lem-exporter's ring buffer, lem-run's own sampler).
type Recent interface {
	Environment() meta.Environment
	Window(g int, t0, t1 time.Time) (trace.Series, error)
	Stats(g int) (sampler.Stats, bool)
}

// IntervalMeter answers the energy of any recent interval (a window while the program runs) with the one
// accounting, from a sampler's recent data.
type IntervalMeter struct {
	Src Recent
	// Context is how much data before the interval the hybrid's lag fit sees (default 30 s: thirty 1 s reads).
	Context time.Duration
	// Fallback returns lags kept for the GPUs (Input.FallbackLags), used where the context cannot resolve its own;
	// nil: none.
	Fallback func() map[string]LagRecord
}

var _ marker.Meter = (*IntervalMeter)(nil)

// settle is how far past the interval's end a counter reading must be for the interval to be counter-exact: the
// counter's lag (tens of ms, up to ~120 ms seen) and a phase-locked read half an update after an update.
const settle = 250 * time.Millisecond

// Energy accounts [q.Start, q.End] on q.GPUs (nil: every sampled GPU). It first waits (at most q.Wait) until every
// GPU has a counter reading settle past the end and samples up to settle past that reading: then the interval is
// counter-exact (Final).
// Waiting costs no NVML call: the periodic reads come anyway (lem-run reads the counter every second,
// lem-exporter every two by default). Past the wait the answer extrapolates the end from the samples.
func (im *IntervalMeter) Energy(ctx context.Context, q marker.EnergyQuery) (marker.EnergyAnswer, error) {
	if !q.End.After(q.Start) {
		return marker.EnergyAnswer{}, fmt.Errorf("%w: interval %s .. %s is empty", marker.ErrInvalid,
			q.Start.Format(time.RFC3339Nano), q.End.Format(time.RFC3339Nano))
	}
	env := im.Src.Environment()
	gpus := q.GPUs
	if len(gpus) == 0 {
		for _, d := range env.Devices {
			gpus = append(gpus, d.Index)
		}
	}
	for _, g := range gpus {
		if _, ok := env.Device(g); !ok {
			return marker.EnergyAnswer{}, fmt.Errorf("%w: GPU %d is not sampled here", marker.ErrInvalid, g)
		}
	}
	final := im.wait(ctx, gpus, q.End, q.Wait)
	ctxLen := im.Context
	if ctxLen <= 0 {
		ctxLen = 30 * time.Second
	}
	tr := trace.New(env)
	for _, g := range gpus {
		s, err := im.Src.Window(g, q.Start.Add(-ctxLen), q.End.Add(5*time.Second))
		if err != nil {
			return marker.EnergyAnswer{}, err
		}
		*tr.Series(g) = s
	}
	baselines := map[int]*manifest.Baseline{}
	var roles []GPU
	for _, g := range gpus {
		if b, ok := q.Baselines[g]; ok {
			baselines[g] = &b
		}
		roles = append(roles, GPU{Index: g, Role: manifest.RoleWorkload})
	}
	m := &manifest.Manifest{Environment: env}
	var kept map[string]LagRecord
	if im.Fallback != nil {
		kept = im.Fallback()
	}
	Fill(m, Input{Trace: tr, Start: q.Start, End: q.End, GPUs: roles, Baselines: baselines, FallbackLags: kept})
	ans := marker.EnergyAnswer{Start: q.Start, End: q.End, DurationS: q.End.Sub(q.Start).Seconds(),
		EnergyJ: m.Energy.HybridJ, AdjustedJ: m.Energy.AdjustedJ, SampledJ: m.Energy.SampledJ, Final: final}
	for _, g := range m.GPUs {
		ans.GPUs = append(ans.GPUs, marker.GPUEnergy{Index: g.Index, UUID: g.UUID, EnergyJ: g.Energy.HybridJ,
			AdjustedJ: g.Energy.AdjustedJ, Method: g.Method})
	}
	for _, w := range m.Warnings {
		if w.Code != "short_window" && w.Code != "no_baseline" {
			ans.Warnings = append(ans.Warnings, w.Code)
		}
	}
	slices.Sort(ans.Warnings)
	ans.Warnings = slices.Compact(ans.Warnings)
	return ans, nil
}

// wait waits until every GPU's data covers end (a counter reading settle after it, and samples settle past the
// first such reading), for at most d; it reports whether they do. The hybrid splits the counter's step across end by the
// samples' shape up to the next reading: samples drained only up to end would put that step's energy on the wrong
// side (a few percent of a 0.5 s window, seen with the exporter's 2 s reads and 1 s drains).
func (im *IntervalMeter) wait(ctx context.Context, gpus []int, end time.Time, d time.Duration) bool {
	covered := func() bool {
		for _, g := range gpus {
			st, ok := im.Src.Stats(g)
			if !ok || !st.HasCounter || st.LatestCounter.Time.Before(trace.StampOf(end.Add(settle))) {
				return false
			}
			next := st.LatestCounter.Time // the first reading settle past end, when the ring still has it
			if s, err := im.Src.Window(g, end.Add(settle), next.Time()); err == nil && len(s.Counters) > 0 {
				next = s.Counters[0].Time
			}
			if st.LatestSample.Time.Before(next.Add(settle)) {
				return false
			}
		}
		return true
	}
	deadline := time.Now().Add(d)
	for !covered() {
		if !time.Now().Before(deadline) {
			return false
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(min(50*time.Millisecond, time.Until(deadline))):
		}
	}
	return true
}

// WindowStats summarises ended windows of one name: their count, total duration and energy, and the
// distribution of energy per window (the Python client's J per generate() call, per request).
func windowStats(js []float64) (median, p90 float64) {
	if len(js) == 0 {
		return math.NaN(), math.NaN()
	}
	s := slices.Clone(js)
	slices.Sort(s)
	q := func(p float64) float64 {
		h := p * float64(len(s)-1)
		lo := int(h)
		if lo >= len(s)-1 {
			return s[len(s)-1]
		}
		return s[lo] + (h-float64(lo))*(s[lo+1]-s[lo])
	}
	return q(0.5), q(0.9)
}
