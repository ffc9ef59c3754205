package trace

import (
	"fmt"
	"slices"
	"strconv"
	"time"
)

// WriteTiled writes a large trace built from a real recording, for benchmarks and load tests: copies of src's
// first GPU back to back, on gpus GPUs, each copy marked as one run (run_start/run_end, its phases, an
// output_tokens result) of one of three experiments. It returns the number of power samples written.
func WriteTiled(w *Writer, src *Trace, copies, gpus int) (int, error) {
	idx := src.GPUIndices()
	if len(idx) == 0 {
		return 0, fmt.Errorf("source trace has no GPU data")
	}
	s := src.GPUs[idx[0]]
	first, last := s.Common()
	if !last.After(first) {
		return 0, fmt.Errorf("source trace has no span with both samples and counter readings")
	}
	period := last.Sub(first) + time.Second
	phases := Phases(src.Events, last)
	gapMJ := bridgeMJ(s, first, last, period)
	var (
		n     int
		ss    []PowerSample
		cs    []CounterReading
		tel   []Telemetry
		total = make([]uint64, gpus) // counters keep increasing across copies
	)
	for k := range copies {
		shift := time.Duration(k) * period
		run := "run-" + strconv.Itoa(k)
		exp := "exp-" + strconv.Itoa(k%3)
		for g := range gpus {
			ss, cs, tel = ss[:0], cs[:0], tel[:0]
			for _, x := range s.Samples {
				if !x.Time.Before(first) && !x.Time.After(last) {
					ss = append(ss, PowerSample{Time: x.Time.Add(shift), PowerW: x.PowerW})
				}
			}
			var base, lastE uint64
			for i, c := range s.Counters {
				if c.Time.Before(first) || c.Time.After(last) {
					continue
				}
				if i == 0 || base == 0 {
					base = c.EnergyMJ
				}
				lastE = c.EnergyMJ - base
				cs = append(cs, CounterReading{Time: c.Time.Add(shift), EnergyMJ: total[g] + lastE, ReadDuration: c.ReadDuration})
			}
			total[g] += lastE + gapMJ
			for _, t := range s.Telemetry {
				if !t.Time.Before(first) && !t.Time.After(last) {
					t.Time = t.Time.Add(shift)
					tel = append(tel, t)
				}
			}
			if err := w.WriteSamples(g, ss); err != nil {
				return n, err
			}
			for _, c := range cs {
				if err := w.WriteCounter(g, c); err != nil {
					return n, err
				}
			}
			for _, t := range tel {
				if err := w.WriteTelemetry(g, t); err != nil {
					return n, err
				}
			}
			n += len(ss)
		}
		start, end := first.Add(shift+100*time.Millisecond), last.Add(shift-100*time.Millisecond)
		evs := []Event{{Time: start, GPU: NoGPU, Type: EventRunStart, RunID: run, Name: exp}}
		for _, p := range phases {
			if p.Start.After(first) && p.Start.Before(last) {
				evs = append(evs, Event{Time: p.Start.Add(shift), GPU: NoGPU, Type: EventPhase, RunID: run, Name: p.Name})
			}
		}
		evs = append(evs, Event{Time: end, GPU: NoGPU, Type: EventResult, RunID: run,
			Attrs: map[string]string{"output_tokens": "1000"}},
			Event{Time: end, GPU: NoGPU, Type: EventRunEnd, RunID: run, Name: exp, Attrs: map[string]string{"status": "ok"}})
		for _, e := range evs {
			if err := w.WriteEvent(e); err != nil {
				return n, err
			}
		}
	}
	return n, nil
}

// bridgeMJ is the energy, by the samples, from the last counter reading of one copy to the first of the next: the
// copies' counters continue as the samples do (a reader interpolates the samples linearly across the second
// between copies), so every counter interval of the tiled trace agrees with its samples as in the recording.
func bridgeMJ(s *Series, first, last time.Time, period time.Duration) uint64 {
	var c0, c1 time.Time
	for _, c := range s.Counters {
		if c.Time.Before(first) || c.Time.After(last) {
			continue
		}
		if c0.IsZero() {
			c0 = c.Time
		}
		c1 = c.Time
	}
	var ss []PowerSample
	for _, x := range s.Samples {
		if !x.Time.Before(first) && !x.Time.After(last) {
			ss = append(ss, x)
		}
	}
	if len(ss) < 2 || c0.IsZero() {
		return 1
	}
	// The samples from c1 to the end of the copy, the bridge, and the next copy's from its start to c0.
	ext := append(slices.Clone(ss), PowerSample{Time: ss[0].Time.Add(period), PowerW: ss[0].PowerW})
	j := integrate(ext, c1, last) + integrate(ext, last, ss[0].Time.Add(period)) + integrate(ss, first, c0)
	return uint64(max(j*1000, 1))
}

// integrate is the trapezoid integral of ss over [a, b] (within their span), in joules.
func integrate(ss []PowerSample, a, b time.Time) float64 {
	var j float64
	for i := 1; i < len(ss); i++ {
		t0, t1 := ss[i-1].Time, ss[i].Time
		lo, hi := t0, t1
		if lo.Before(a) {
			lo = a
		}
		if hi.After(b) {
			hi = b
		}
		if !hi.After(lo) {
			continue
		}
		at := func(t time.Time) float64 {
			f := float64(t.Sub(t0)) / float64(t1.Sub(t0))
			return ss[i-1].PowerW + f*(ss[i].PowerW-ss[i-1].PowerW)
		}
		j += (at(lo) + at(hi)) / 2 * hi.Sub(lo).Seconds()
	}
	return j
}
