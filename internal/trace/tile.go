package trace

import (
	"fmt"
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
			total[g] += lastE + 1
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
