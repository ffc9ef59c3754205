package account

import (
	"math"
	"testing"
	"time"

	"github.com/lem-energy/lem/internal/manifest"
	"github.com/lem-energy/lem/internal/trace"
)

// flatMeter is a samples meter of a GPU drawing w watts from t0 for 10 s: its energy over a span inside is w
// times the span's length, exactly (the trapezoids of a constant).
func flatMeter(t0 time.Time, w float64) *Meter {
	s := &trace.Series{}
	for i := range 501 {
		s.Samples = append(s.Samples, trace.PowerSample{Time: trace.StampOf(t0.Add(time.Duration(i) * 20 * time.Millisecond)), PowerW: w})
	}
	return &Meter{series: s, Method: MethodSamples}
}

// TestGPUEnergy states by hand what a phase or window occurrence gets from one GPU: 200 W over 2 s is 400 J;
// above a 150 W deep idle 100 J, below a 250 W one clamped to 0; above a 120 W active idle 160 J, above a 300 W
// one -200 J (not clamped); null where the meter, the baseline, the active idle or the data is missing, and 0 over
// an empty interval.
func TestGPUEnergy(t *testing.T) {
	t0 := time.Unix(1795735590, 0)
	start, end := t0.Add(time.Second), t0.Add(3*time.Second)
	null := math.NaN()
	for _, c := range []struct {
		name         string
		meter        bool
		idle, active float64 // NaN: none
		baseline     bool
		start, end   time.Time
		e, adj, act  float64
		clamped      bool
	}{
		{"no meter", false, 150, 120, true, start, end, null, null, null, false},
		{"both idles", true, 150, 120, true, start, end, 400, 100, 160, false},
		{"below deep idle", true, 250, 300, true, start, end, 400, 0, -200, true},
		{"idle without its baseline", true, 150, null, false, start, end, 400, null, null, false},
		{"no idles", true, null, null, true, start, end, 400, null, null, false},
		{"empty interval", true, 150, 120, true, start, start, 0, 0, 0, false},
		{"outside the samples", true, 150, 120, true, t0.Add(-time.Second), end, null, null, null, false},
	} {
		a := &accounting{in: Input{Meters: map[int]*Meter{}}, idle: map[int]float64{}, active: map[int]float64{}}
		baselines := map[int]*manifest.Baseline{}
		if c.meter {
			a.in.Meters[3] = flatMeter(t0, 200)
		}
		if !math.IsNaN(c.idle) {
			a.idle[3] = c.idle
		}
		if !math.IsNaN(c.active) {
			a.active[3] = c.active
		}
		if c.baseline {
			baselines[3] = &manifest.Baseline{}
		}
		e, adj, act, clamped := a.gpuEnergy(3, baselines, c.start, c.end)
		for _, v := range []struct {
			what      string
			got, want float64
		}{{"energy", float64(e), c.e}, {"adjusted", float64(adj), c.adj}, {"active-adjusted", float64(act), c.act}} {
			if math.IsNaN(v.want) != math.IsNaN(v.got) || (!math.IsNaN(v.want) && math.Abs(v.got-v.want) > 1e-9) {
				t.Errorf("%s: %s %v J, want %v J", c.name, v.what, v.got, v.want)
			}
		}
		if clamped != c.clamped {
			t.Errorf("%s: clamped %v, want %v", c.name, clamped, c.clamped)
		}
	}
}

// TestWorkloadEnergySums checks a window occurrence's energies are its workload GPUs' summed, an observed GPU left
// out, and null as soon as one workload GPU lacks the value: 200 W and 300 W over 2 s, idles 150 W and 100 W
// (adjusted 100 + 400 J), active idle on one GPU only (null).
func TestWorkloadEnergySums(t *testing.T) {
	t0 := time.Unix(1795735590, 0)
	start, end := t0.Add(time.Second), t0.Add(3*time.Second)
	a := &accounting{
		in:     Input{Meters: map[int]*Meter{0: flatMeter(t0, 200), 1: flatMeter(t0, 300), 2: flatMeter(t0, 1000)}},
		idle:   map[int]float64{0: 150, 1: 100, 2: 50},
		active: map[int]float64{0: 120},
	}
	baselines := map[int]*manifest.Baseline{0: {}, 1: {}, 2: {}}
	gpus := []GPU{{0, manifest.RoleWorkload}, {1, manifest.RoleWorkload}, {2, manifest.RoleObserved}}
	e, adj, act, clamped := a.workloadEnergy(gpus, baselines, start, end)
	if math.Abs(float64(e)-1000) > 1e-9 || math.Abs(float64(adj)-500) > 1e-9 || act.Valid() || clamped {
		t.Fatalf("energy %v J, adjusted %v J, active-adjusted %v, clamped %v; want 1000 J, 500 J, null, false", e, adj, act, clamped)
	}
}
