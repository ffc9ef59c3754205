package energy

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/lem-energy/lem/internal/trace"
)

// TestOrderStatsEqualSorting checks the selection against sorting for every k of arrays with and without ties,
// sorted, reversed and constant ones (quickselect's classic bad cases among them), and QuantileOf against
// Quantile of the sorted values, bit for bit.
func TestOrderStatsEqualSorting(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var inputs [][]float64
	for n := 1; n <= 70; n++ {
		for _, distinct := range []int{1, 3, 1000} {
			xs := make([]float64, n)
			for i := range xs {
				xs[i] = float64(rng.IntN(distinct)) + 0.25
			}
			inputs = append(inputs, xs)
		}
		asc := make([]float64, n)
		for i := range asc {
			asc[i] = float64(i) * 1.5
		}
		desc := slices.Clone(asc)
		slices.Reverse(desc)
		inputs = append(inputs, asc, desc)
	}
	big := make([]float64, 5000)
	for i := range big {
		big[i] = 300 + 50*rng.NormFloat64()
	}
	inputs = append(inputs, big)
	for _, xs := range inputs {
		sorted := slices.Clone(xs)
		slices.Sort(sorted)
		for k := range xs {
			a, b := OrderStats(slices.Clone(xs), k)
			wantB := math.NaN()
			if k+1 < len(sorted) {
				wantB = sorted[k+1]
			}
			if a != sorted[k] || (b != wantB && !(math.IsNaN(b) && math.IsNaN(wantB))) {
				t.Fatalf("n=%d k=%d: got %v, %v; sorted has %v, %v", len(xs), k, a, b, sorted[k], wantB)
			}
		}
		for _, q := range []float64{0, 0.05, 0.25, 0.5, 0.75, 0.95, 1} {
			if got, want := QuantileOf(slices.Clone(xs), q), Quantile(sorted, q); got != want {
				t.Fatalf("n=%d q=%v: %v, sorted gives %v", len(xs), q, got, want)
			}
		}
	}
	if !math.IsNaN(QuantileOf(nil, 0.5)) {
		t.Fatal("no values: want NaN")
	}
}

// TestQuantilesEqualPlainType7 checks Quantile and QuantileOf, bit for bit, against type 7 written out over the
// sorted values (h = q(n-1), the order statistic below h and the next, weighted by h's fraction; the largest from
// the last), for every hundredth q, and QuantileOf by hand on four values.
func TestQuantilesEqualPlainType7(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 5))
	for trial := range 200 {
		xs := make([]float64, 1+rng.IntN(30))
		for i := range xs {
			xs[i] = float64(rng.IntN(8)) + rng.Float64()
		}
		sorted := slices.Clone(xs)
		slices.Sort(sorted)
		n := len(sorted)
		for c := 0; c <= 100; c++ {
			q := float64(c) / 100
			h := q * float64(n-1)
			lo := int(math.Floor(h))
			want := sorted[n-1]
			if lo < n-1 {
				want = sorted[lo] + (h-float64(lo))*(sorted[lo+1]-sorted[lo])
			}
			if got := Quantile(sorted, q); math.Float64bits(got) != math.Float64bits(want) {
				t.Fatalf("trial %d n=%d q=%v: Quantile %v, want %v", trial, n, q, got, want)
			}
			if got := QuantileOf(slices.Clone(xs), q); math.Float64bits(got) != math.Float64bits(want) {
				t.Fatalf("trial %d n=%d q=%v: QuantileOf %v, want %v", trial, n, q, got, want)
			}
		}
	}
	for q, want := range map[float64]float64{0: 1, 0.1: 1.3, 0.5: 2.5, 0.9: 3.7, 1: 4} {
		if got := QuantileOf([]float64{4, 1, 3, 2}, q); math.Abs(got-want) > 1e-12 {
			t.Errorf("q=%v of 4, 1, 3, 2: %v, want %v", q, got, want)
		}
	}
}

// TestDistinctPointsEqualDedupeNormalize checks the one-pass points against deduplicating then normalizing, on
// readings with repeats, resets (a driver reload) and repeats across a reset.
func TestDistinctPointsEqualDedupeNormalize(t *testing.T) {
	t0 := time.Unix(1795735590, 0)
	for _, mjs := range [][]uint64{
		nil,
		{5},
		{5, 5, 5},
		{1000, 1000, 2500, 2500, 2500, 4000, 300, 300, 900, 900, 100, 100, 100, 1700},
		{7, 9, 9, 2, 2, 2, 2, 8, 1, 1, 3},
	} {
		cs := make([]trace.CounterReading, len(mjs))
		for i, mj := range mjs {
			cs[i] = trace.CounterReading{Time: trace.StampOf(t0.Add(time.Duration(i) * 100 * time.Millisecond)), EnergyMJ: mj}
		}
		got, gotResets := distinctPoints(cs)
		want, wantResets := normalize(dedupe(cs))
		if !slices.Equal(got, want) || gotResets != wantResets || cap(got) != len(got) {
			t.Fatalf("%v: got %v (%d resets, cap %d), want %v (%d resets)", mjs, got, gotResets, cap(got), want, wantResets)
		}
	}
}

// TestCounterPointsValues states one case's points by hand: with repeats cut (distinctPoints) the first of each
// repeat, and with every reading kept (normalize) all of them, continued across resets by the value read before.
func TestCounterPointsValues(t *testing.T) {
	t0 := time.Unix(1795735590, 0)
	mjs := []uint64{1000, 1000, 2500, 2500, 2500, 4000, 300, 300, 900, 900, 100, 100, 100, 1700}
	cs := make([]trace.CounterReading, len(mjs))
	for i, mj := range mjs {
		cs[i] = trace.CounterReading{Time: trace.StampOf(t0.Add(time.Duration(i) * 100 * time.Millisecond)), EnergyMJ: mj}
	}
	for _, c := range []struct {
		name   string
		points func([]trace.CounterReading) ([]point, int)
		at     []int // the readings kept
		joules []float64
	}{
		{"distinctPoints", distinctPoints, []int{0, 2, 5, 6, 8, 10, 13},
			[]float64{1, 2.5, 4, 4 + 0.3, 4 + 0.9, 4 + 0.9 + 0.1, 4 + 0.9 + 1.7}},
		{"normalize", normalize, []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13},
			[]float64{1, 1, 2.5, 2.5, 2.5, 4, 4.3, 4.3, 4.9, 4.9, 5, 5, 5, 6.6}},
	} {
		pts, resets := c.points(cs)
		if resets != 2 || len(pts) != len(c.at) || cap(pts) != len(pts) {
			t.Fatalf("%s: %d resets, %d points (cap %d); want 2 and %d", c.name, resets, len(pts), cap(pts), len(c.at))
		}
		for i, p := range pts {
			if !p.t.Equal(cs[c.at[i]].Time) || math.Abs(p.j-c.joules[i]) > 1e-12 {
				t.Errorf("%s point %d: %v %v J, want %v %v J", c.name, i, p.t, p.j, cs[c.at[i]].Time, c.joules[i])
			}
		}
	}
}

// TestCounterPointsEqualPlain checks both scales, bit for bit, against a plain loop that offsets each reset by the
// last reading it kept, on random readings with repeats (runs of them across resets too) and resets.
func TestCounterPointsEqualPlain(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	t0 := time.Unix(1795735590, 0)
	for trial := range 300 {
		cs := make([]trace.CounterReading, rng.IntN(60))
		e := uint64(rng.Int64N(1e9))
		for i := range cs {
			switch r := rng.IntN(10); {
			case r == 0:
				e = uint64(rng.Int64N(1e6)) // reset
			case r < 4: // repeat
			default:
				e += uint64(1 + rng.Int64N(5e5))
			}
			cs[i] = trace.CounterReading{Time: trace.StampOf(t0.Add(time.Duration(i) * 100 * time.Millisecond)), EnergyMJ: e}
		}
		for _, distinct := range []bool{false, true} {
			var want []point
			wantResets := 0
			var offset float64
			last := -1
			for i, c := range cs {
				if distinct && last >= 0 && c.EnergyMJ == cs[last].EnergyMJ {
					continue
				}
				if last >= 0 && c.EnergyMJ < cs[last].EnergyMJ {
					wantResets++
					offset += cs[last].Joules()
				}
				want = append(want, point{c.Time, c.Joules() + offset})
				last = i
			}
			got, gotResets := normalize(cs)
			if distinct {
				got, gotResets = distinctPoints(cs)
			}
			if len(got) != len(want) || gotResets != wantResets || cap(got) != len(got) {
				t.Fatalf("trial %d distinct %v: %d points (cap %d), %d resets; want %d, %d", trial, distinct,
					len(got), cap(got), gotResets, len(want), wantResets)
			}
			for i := range want {
				if !got[i].t.Equal(want[i].t) || math.Float64bits(got[i].j) != math.Float64bits(want[i].j) {
					t.Fatalf("trial %d distinct %v point %d: %v, want %v", trial, distinct, i, got[i], want[i])
				}
			}
		}
	}
}

// dedupe keeps, of each run of equal readings, the first: the plain two-step path distinctPoints replaces.
func dedupe(cs []trace.CounterReading) []trace.CounterReading {
	out := make([]trace.CounterReading, 0, len(cs))
	for i, c := range cs {
		if i > 0 && c.EnergyMJ == cs[i-1].EnergyMJ {
			continue
		}
		out = append(out, c)
	}
	return out
}

// BenchmarkCounterPoints: the continuous joule scale of a GPU-hour of counter reads at 10 Hz (the counter updates
// about every 100 ms, so a read in five repeats its predecessor), with a reset, every reading kept and repeats cut.
func BenchmarkCounterPoints(b *testing.B) {
	t0 := time.Unix(1795735590, 0)
	cs := make([]trace.CounterReading, 36_000)
	var e uint64
	for i := range cs {
		switch {
		case i == len(cs)/2:
			e = 1000 // a driver reload
		case i%5 != 4:
			e += 40_000 + uint64(i%7)*1000
		}
		cs[i] = trace.CounterReading{Time: trace.StampOf(t0.Add(time.Duration(i) * 100 * time.Millisecond)), EnergyMJ: e}
	}
	b.Run("all", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if pts, resets := normalize(cs); len(pts) != len(cs) || resets != 1 {
				b.Fatalf("%d points, %d resets", len(pts), resets)
			}
		}
	})
	b.Run("distinct", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if pts, resets := distinctPoints(cs); len(pts) != len(cs)-len(cs)/5 || resets != 1 {
				b.Fatalf("%d points, %d resets", len(pts), resets)
			}
		}
	})
}
