package report

import (
	"sort"
	"time"

	"github.com/lem-energy/lem/analyze/account"
	"github.com/lem-energy/lem/analyze/energy"
	"github.com/lem-energy/lem/internal/trace"
)

// A run of a recording is accounted on its window: the part of each GPU's series the accounting and the report
// read for it, found by the rules below. The window gives the numbers the whole trace gives (a test holds them to
// it) and costs what the run costs: a recording of a thousand runs is a thousand small accountings, whether the
// trace is in memory or streamed (stream.go).

// edgeMargin is how far around a run's edges its samples are read (edgePower looks one sample period out).
const edgeMargin = energy.DefaultSamplePeriod

// processMargin is how far around a run's edges its process rows are read: the split takes the processes listed
// up to ProcessSlack around the run, and the utilization samples up to ProcessSamplePeriod after it (each reaches
// back that far) and, to tell whether the driver gives any, before it.
const processMargin = max(account.ProcessSlack, account.ProcessSamplePeriod)

// shifts is how far a GPU's hybrids move its counter readings back (its lag, and the lag ± its uncertainty the
// report's budget recomputes with), widened to include 0 (the counter and the samples at their own times).
type shifts struct{ lo, hi time.Duration }

func shiftsOf(lag energy.LagEstimate, hybrid bool) shifts {
	if !hybrid {
		return shifts{}
	}
	return shifts{lo: min(0, lag.Lag-lag.U), hi: max(0, lag.Lag+lag.U)}
}

// span is a window's bounds in a series: counters [c0, c1], samples [s0, s1], telemetry [t0, t1], process
// samples [p0, p1], processes [q0, q1] (inclusive indices; c1 < c0 when there are none).
type span struct{ c0, c1, s0, s1, t0, t1, p0, p1, q0, q1 int }

// changeAtOrBefore is the last reading at or before t that first showed its value (the hybrid takes each value at
// the read that first showed it, so a window must begin at one), or 0.
func changeAtOrBefore(cs []trace.CounterReading, t trace.Stamp) int {
	return changeAt(cs, sort.Search(len(cs), func(i int) bool { return cs[i].Time.After(t) })-1)
}

// changeAt is the reading that first showed reading i's value (0 for i < 0).
func changeAt(cs []trace.CounterReading, i int) int {
	for i > 0 && cs[i].EnergyMJ == cs[i-1].EnergyMJ {
		i--
	}
	return max(i, 0)
}

// changeAfter is the first reading after t that first showed its value; len(cs) when none.
func changeAfter(cs []trace.CounterReading, t trace.Stamp) int {
	i := sort.Search(len(cs), func(i int) bool { return cs[i].Time.After(t) })
	for i > 0 && i < len(cs) && cs[i].EnergyMJ == cs[i-1].EnergyMJ {
		i++
	}
	return i
}

// spanOf finds the part of s that [start, end] reads:
//   - counter readings from the last change at or before start+sh.lo to the first change after end+sh.hi (every
//     reading to the end when there is none), and at least two distinct values where the series has them: the
//     interpolation, the hybrid's readings around every edge at every shift, its extrapolation at the series' end;
//   - samples from the last at or before the earliest time those readings reach (moved back by up to sh.hi) or
//     start−edgeMargin, to the first at or after the latest (sh.lo) or end+edgeMargin;
//   - telemetry from the last record at or before start to the first at or after end (throttling intervals that
//     straddle the edges);
//   - process samples and processes from start−processMargin to end+processMargin, both included.
//
// complete says whether s holds all of it: false when the series may continue past its last row (a stream not yet
// read to the end, before), and the window's end lies beyond what it holds. more(kind) says whether rows of a kind
// may still come; for process rows, ones at or before end+processMargin (a window of fixed times: no row after it
// need come first, so a GPU whose processes are gone keeps nothing waiting).
func spanOf(s *trace.Series, start, end time.Time, sh shifts, more func(kind int) bool) (sp span, complete bool) {
	complete = true
	cs := s.Counters
	st, en := trace.StampOf(start), trace.StampOf(end)
	sp.c0 = changeAtOrBefore(cs, st.Add(sh.lo))
	hi := changeAfter(cs, en.Add(sh.hi))
	if hi >= len(cs) {
		if more(kindCounter) {
			complete = false
		}
		hi = len(cs) - 1
		if sp.c0 > 0 && changeAt(cs, hi) == sp.c0 {
			sp.c0 = changeAt(cs, sp.c0-1) // a single value left: the one before too, for the hybrid's two
		}
	}
	sp.c1 = hi
	from, to := st.Add(-edgeMargin), en.Add(edgeMargin)
	if sp.c1 >= sp.c0 && len(cs) > 0 {
		from = min(from, cs[sp.c0].Time.Add(-sh.hi))
		to = max(to, cs[sp.c1].Time.Add(-sh.lo))
	}
	ss := s.Samples
	sp.s0 = max(sort.Search(len(ss), func(i int) bool { return ss[i].Time.After(from) })-1, 0)
	sp.s1 = sort.Search(len(ss), func(i int) bool { return !ss[i].Time.Before(to) })
	if sp.s1 >= len(ss) {
		complete = complete && !more(kindSamples)
		sp.s1 = len(ss) - 1
	}
	tel := s.Telemetry
	sp.t0 = max(sort.Search(len(tel), func(i int) bool { return tel[i].Time.After(st) })-1, 0)
	sp.t1 = sort.Search(len(tel), func(i int) bool { return !tel[i].Time.Before(en) })
	if sp.t1 >= len(tel) {
		complete = complete && !more(kindTelemetry)
		sp.t1 = len(tel) - 1
	}
	pfrom, pto := start.Add(-processMargin), end.Add(processMargin)
	ps := s.ProcessSamples
	sp.p0 = sort.Search(len(ps), func(i int) bool { return !ps[i].Time.Before(pfrom) })
	sp.p1 = sort.Search(len(ps), func(i int) bool { return ps[i].Time.After(pto) }) - 1
	qs := s.Processes
	sp.q0 = sort.Search(len(qs), func(i int) bool { return !qs[i].Time.Before(pfrom) })
	sp.q1 = sort.Search(len(qs), func(i int) bool { return qs[i].Time.After(pto) }) - 1
	complete = complete && !more(kindProcessSamples) && !more(kindProcesses)
	return sp, complete
}

// Kinds of rows for spanOf's more.
const (
	kindCounter = iota
	kindSamples
	kindTelemetry
	kindProcessSamples
	kindProcesses
)

// cut is s's part in sp: views of its slices, capped so that appending to s never writes into them.
func cut(s *trace.Series, sp span) *trace.Series {
	return &trace.Series{
		Samples:        sub(s.Samples, sp.s0, sp.s1),
		Counters:       sub(s.Counters, sp.c0, sp.c1),
		Telemetry:      sub(s.Telemetry, sp.t0, sp.t1),
		ProcessSamples: sub(s.ProcessSamples, sp.p0, sp.p1),
		Processes:      sub(s.Processes, sp.q0, sp.q1),
	}
}

func sub[T any](xs []T, i, j int) []T {
	if j < i || len(xs) == 0 {
		return nil
	}
	return xs[i : j+1 : j+1]
}

// runEvents are the events a run's accounting and report read: its own and the unattributed ones inside it, or
// every event for a recording accounted as one run.
func runEvents(evs []trace.Event, sp Span) []trace.Event {
	if sp.AllPhases {
		return evs
	}
	var out []trace.Event
	for _, e := range evs {
		if e.RunID == sp.ID || e.RunID == "" && !e.Time.Before(sp.Start) && !e.Time.After(sp.End) {
			out = append(out, e)
		}
	}
	return out
}

func maxT(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
