package energy_test

import (
	"testing"
	"time"

	"github.com/lem-energy/lem/analyze/energy"
	"github.com/lem-energy/lem/internal/trace"
)

// BenchmarkHybridPhasesHour: hybrid energy of 3,600 one-second phases over one GPU-hour (50 Hz samples,
// counter read once a second).
func BenchmarkHybridPhasesHour(b *testing.B) {
	t0 := time.Unix(1795735590, 0)
	ss := make([]trace.PowerSample, 180_000)
	for i := range ss {
		ss[i] = trace.PowerSample{Time: trace.StampOf(t0.Add(time.Duration(i) * 20 * time.Millisecond)), PowerW: 100 + float64(i%500)}
	}
	var cs []trace.CounterReading
	var e float64
	for i := 0; i < len(ss); i++ {
		if i > 0 {
			e += (ss[i-1].PowerW + ss[i].PowerW) / 2 * 0.02
		}
		if i%50 == 0 {
			cs = append(cs, trace.CounterReading{Time: ss[i].Time, EnergyMJ: uint64(e * 1000)})
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		h, err := energy.NewHybrid(cs, ss, 80*time.Millisecond)
		if err != nil {
			b.Fatal(err)
		}
		for p := 1; p < 3599; p++ {
			if _, err := h.Energy(t0.Add(time.Duration(p)*time.Second), t0.Add(time.Duration(p+1)*time.Second)); err != nil {
				b.Fatal(err)
			}
		}
	}
}

func BenchmarkEstimateLagHour(b *testing.B) {
	t0 := time.Unix(1795735590, 0)
	ss := make([]trace.PowerSample, 180_000)
	var cs []trace.CounterReading
	var e float64
	for i := range ss {
		p := 100.0
		if (i/200)%2 == 1 {
			p = 600
		}
		ss[i] = trace.PowerSample{Time: trace.StampOf(t0.Add(time.Duration(i) * 20 * time.Millisecond)), PowerW: p}
		if i > 0 {
			e += (ss[i-1].PowerW + p) / 2 * 0.02
		}
		if i%50 == 0 {
			cs = append(cs, trace.CounterReading{Time: ss[i].Time.Add(80 * time.Millisecond), EnergyMJ: uint64(e * 1000)})
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		_, est, _ := energy.FitHybrid(cs, ss)
		if !est.OK || est.Lag != 80*time.Millisecond {
			b.Fatalf("lag %v ok %v", est.Lag, est.OK)
		}
	}
}
