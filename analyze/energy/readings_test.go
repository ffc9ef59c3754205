package energy

import (
	"math"
	"math/rand/v2"
	"sort"
	"testing"
	"time"

	"github.com/lem-energy/lem/internal/trace"
)

// valueAt interpolates the continuous counter linearly at t; ok is false outside the readings. The plain
// form over normalize's copy: readingsAt's reference.
func valueAt(pts []point, t time.Time) (float64, bool) {
	n := len(pts)
	if n == 0 || t.Before(pts[0].t.Time()) || t.After(pts[n-1].t.Time()) {
		return 0, false
	}
	i := sort.Search(n, func(i int) bool { return !pts[i].t.Before(trace.StampOf(t)) })
	if pts[i].t.Equal(trace.StampOf(t)) || i == 0 {
		return pts[i].j, true
	}
	a, b := pts[i-1], pts[i]
	f := float64(t.Sub(a.t.Time())) / float64(b.t.Sub(a.t))
	return a.j + f*(b.j-a.j), true
}

// readingsAt gives the continuous counter across resets: hand-computed values at, between and across them.
func TestReadingsAt(t *testing.T) {
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	cs := []trace.CounterReading{
		{Time: trace.StampOf(at(0)), EnergyMJ: 10_000}, {Time: trace.StampOf(at(100)), EnergyMJ: 12_000},
		{Time: trace.StampOf(at(200)), EnergyMJ: 500},                                                  // reset: continues from 12 J
		{Time: trace.StampOf(at(300)), EnergyMJ: 2_500}, {Time: trace.StampOf(at(400)), EnergyMJ: 100}, // second reset: from 12 + 2.5 J
	}
	cases := []struct {
		ms   int
		want float64
	}{
		{0, 10}, {50, 11}, {100, 12}, {150, 12.25}, {200, 12.5}, {250, 13.5}, {300, 14.5}, {350, 14.55}, {400, 14.6},
	}
	for _, c := range cases {
		if got := readingsAt(cs, trace.StampOf(at(c.ms))); math.Abs(got-c.want) > 1e-12 {
			t.Errorf("at %d ms: %v J, want %v", c.ms, got, c.want)
		}
	}
}

// readingsAt equals valueAt over normalize's copy bit for bit, at readings, between them and at their ends, with
// and without resets and repeated values.
func TestReadingsAtEqualsNormalized(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for trial := range 300 {
		n := 1 + rng.IntN(40)
		cs := make([]trace.CounterReading, n)
		tm, e := t0, uint64(rng.Int64N(1e9))
		for i := range cs {
			tm = tm.Add(time.Duration(1+rng.Int64N(300e6)) * time.Nanosecond)
			switch r := rng.IntN(10); {
			case r == 0:
				e = uint64(rng.Int64N(1e6)) // reset
			case r < 3: // same value
			default:
				e += uint64(rng.Int64N(5e5))
			}
			cs[i] = trace.CounterReading{Time: trace.StampOf(tm), EnergyMJ: e}
		}
		pts, _ := normalize(cs)
		var ts []time.Time
		for i, c := range cs {
			ts = append(ts, c.Time.Time())
			if i > 0 {
				d := c.Time.Sub(cs[i-1].Time)
				ts = append(ts, cs[i-1].Time.Add(time.Duration(rng.Int64N(int64(d)))).Time())
			}
		}
		for _, q := range ts {
			want, ok := valueAt(pts, q)
			if !ok {
				t.Fatalf("trial %d: reference outside the readings at %v", trial, q)
			}
			if got := readingsAt(cs, trace.StampOf(q)); math.Float64bits(got) != math.Float64bits(want) {
				t.Fatalf("trial %d at %v: %v, normalized %v", trial, q, got, want)
			}
		}
	}
}
