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
	t, err := NewTiler(src, gpus)
	if err != nil {
		return 0, err
	}
	return t.Write(w, copies)
}

// Tiler writes the copies of WriteTiled a batch at a time, each batch to its own writer if wanted (a recording's
// segments): the copies continue one another whatever the writer.
type Tiler struct {
	s           *Series
	first, last time.Time
	period      time.Duration
	phases      []Phase
	gapMJ       uint64
	gpus, k     int
	total       []uint64 // counters keep increasing across copies
}

// NewTiler prepares copies of src's first GPU on gpus GPUs.
func NewTiler(src *Trace, gpus int) (*Tiler, error) {
	idx := src.GPUIndices()
	if len(idx) == 0 {
		return nil, fmt.Errorf("source trace has no GPU data")
	}
	s := src.GPUs[idx[0]]
	first, last := s.Common()
	if !last.After(first) {
		return nil, fmt.Errorf("source trace has no span with both samples and counter readings")
	}
	period := last.Sub(first) + time.Second
	return &Tiler{s: s, first: first, last: last, period: period, phases: Phases(src.Events, last),
		gapMJ: bridgeMJ(s, first, last, period), gpus: gpus, total: make([]uint64, gpus)}, nil
}

// Period is the time one copy takes.
func (t *Tiler) Period() time.Duration { return t.period }

// Write writes the next copies to w and returns the number of power samples written.
func (t *Tiler) Write(w *Writer, copies int) (int, error) {
	s, first, last := t.s, t.first, t.last
	fs, ls := StampOf(first), StampOf(last)
	var (
		n   int
		ss  []PowerSample
		cs  []CounterReading
		tel []Telemetry
	)
	for range copies {
		k := t.k
		t.k++
		shift := time.Duration(k) * t.period
		run := "run-" + strconv.Itoa(k)
		exp := "exp-" + strconv.Itoa(k%3)
		for g := range t.gpus {
			ss, cs, tel = ss[:0], cs[:0], tel[:0]
			for _, x := range s.Samples {
				if !x.Time.Before(fs) && !x.Time.After(ls) {
					ss = append(ss, PowerSample{Time: x.Time.Add(shift), PowerW: x.PowerW})
				}
			}
			var base, lastE uint64
			for i, c := range s.Counters {
				if c.Time.Before(fs) || c.Time.After(ls) {
					continue
				}
				if i == 0 || base == 0 {
					base = c.EnergyMJ
				}
				lastE = c.EnergyMJ - base
				cs = append(cs, CounterReading{Time: c.Time.Add(shift), EnergyMJ: t.total[g] + lastE, ReadDuration: c.ReadDuration})
			}
			t.total[g] += lastE + t.gapMJ
			for _, x := range s.Telemetry {
				if !x.Time.Before(fs) && !x.Time.After(ls) {
					x.Time = x.Time.Add(shift)
					tel = append(tel, x)
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
			for _, x := range tel {
				if err := w.WriteTelemetry(g, x); err != nil {
					return n, err
				}
			}
			n += len(ss)
		}
		start, end := first.Add(shift+100*time.Millisecond), last.Add(shift-100*time.Millisecond)
		evs := []Event{{Time: start, GPU: NoGPU, Type: EventRunStart, RunID: run, Name: exp}}
		for _, p := range t.phases {
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
func bridgeMJ(s *Series, firstT, lastT time.Time, period time.Duration) uint64 {
	first, last := StampOf(firstT), StampOf(lastT)
	var c0, c1 Stamp
	found := false
	for _, c := range s.Counters {
		if c.Time.Before(first) || c.Time.After(last) {
			continue
		}
		if !found {
			c0, found = c.Time, true
		}
		c1 = c.Time
	}
	var ss []PowerSample
	for _, x := range s.Samples {
		if !x.Time.Before(first) && !x.Time.After(last) {
			ss = append(ss, x)
		}
	}
	if len(ss) < 2 || !found {
		return 1
	}
	// The samples from c1 to the end of the copy, the bridge, and the next copy's from its start to c0.
	ext := append(slices.Clone(ss), PowerSample{Time: ss[0].Time.Add(period), PowerW: ss[0].PowerW})
	j := integrate(ext, c1, last) + integrate(ext, last, ss[0].Time.Add(period)) + integrate(ss, first, c0)
	return uint64(max(j*1000, 1))
}

// integrate is the trapezoid integral of ss over [a, b] (within their span), in joules.
func integrate(ss []PowerSample, a, b Stamp) float64 {
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
		at := func(t Stamp) float64 {
			f := float64(t.Sub(t0)) / float64(t1.Sub(t0))
			return ss[i-1].PowerW + f*(ss[i].PowerW-ss[i-1].PowerW)
		}
		j += (at(lo) + at(hi)) / 2 * hi.Sub(lo).Seconds()
	}
	return j
}
