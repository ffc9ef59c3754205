package account

import (
	"math"
	"slices"
	"time"

	"github.com/lem-energy/lem/internal/manifest"
	"github.com/lem-energy/lem/internal/marker"
	"github.com/lem-energy/lem/internal/trace"
)

// Request attribution (docs/METHODOLOGY.md, "Energy per request"). With continuous batching many requests share
// each decode step, so a request's energy is not the energy of its window: windows of requests overlap. The
// model splits the energy of every 20 ms interval among the requests active in it by the tokens each processed
// there — its prompt tokens in its first interval (prefill), its output tokens spread evenly over the rest of its
// lifetime (decode) — so the requests' energies sum exactly to the energy of the intervals any request was
// active in; intervals with no request active are left unattributed.

// attributionSlice is the interval the energy is split over: the driver's power-sample period.
const attributionSlice = 20 * time.Millisecond

// request is one occurrence of a window that names a request.
type request struct {
	start, end     time.Time
	prompt, output float64
}

// promptKeys and outputKeys are the counts a request's window may carry.
var (
	promptKeys = []string{"prompt_tokens", "input_tokens"}
	outputKeys = []string{"output_tokens", "completion_tokens"}
)

func count(values map[string]string, keys []string) float64 {
	for _, k := range keys {
		if v, ok := marker.Number(values[k]); ok && v > 0 {
			return v
		}
	}
	return 0
}

// attribute splits energy among requests; energy(a, b) is the workload's energy over an interval (raw or
// adjusted). It returns each request's energy, and the energy of the intervals no request was active in over
// [span0, span1].
func attribute(reqs []request, span0, span1 time.Time, energy func(a, b time.Time) float64) (per []float64, unattributed float64) {
	per = make([]float64, len(reqs))
	// Sweep the slices with the set of requests active in them (requests ordered by start).
	order := make([]int, len(reqs))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(x, y int) int { return reqs[x].start.Compare(reqs[y].start) })
	next := 0
	var active []int
	weights := make([]float64, len(reqs))
	for t := span0; t.Before(span1); t = t.Add(attributionSlice) {
		u := minTime(t.Add(attributionSlice), span1)
		for next < len(order) && reqs[order[next]].start.Before(u) {
			active = append(active, order[next])
			next++
		}
		active = slices.DeleteFunc(active, func(i int) bool { return !reqs[i].end.After(t) })
		var total float64
		for _, i := range active {
			r := reqs[i]
			w := 0.0
			if !r.start.Before(t) && r.start.Before(u) { // its first interval: prefill
				w += r.prompt
			}
			if life := r.end.Sub(r.start).Seconds(); life > 0 {
				ov := minTime(r.end, u).Sub(maxTime(r.start, t)).Seconds()
				w += r.output * ov / life
			}
			if w == 0 { // a request that reported no tokens still holds its share of the time it was active
				w = minTime(r.end, u).Sub(maxTime(r.start, t)).Seconds() * 1e-9
			}
			weights[i] = w
			total += w
		}
		e := energy(t, u)
		if math.IsNaN(e) {
			continue
		}
		if total == 0 {
			unattributed += e
			continue
		}
		for _, i := range active {
			per[i] += e * weights[i] / total
		}
	}
	return per, unattributed
}

// requestWindows attributes the run's request windows (windows with ids whose ends carry token counts), one
// attribution per such window name.
func (a *accounting) requestWindows(gpus []GPU, baselines map[int]*manifest.Baseline, events []trace.Event) {
	in := a.in
	byName := requestsByName(events, in.Start, in.End)
	raw := func(x, y time.Time) float64 {
		var e float64
		for _, g := range gpus {
			if g.Role == manifest.RoleObserved {
				continue
			}
			if m := in.Meters[g.Index]; m != nil {
				e += m.Energy(x, y)
			}
		}
		return e
	}
	adjusted := func(x, y time.Time) float64 {
		e := raw(x, y)
		for _, g := range gpus {
			if g.Role == manifest.RoleObserved {
				continue
			}
			idle, ok := a.idle[g.Index]
			if !ok || baselines[g.Index] == nil {
				return math.NaN()
			}
			e -= idle * y.Sub(x).Seconds()
		}
		return e
	}
	for i := range a.m.Windows {
		w := &a.m.Windows[i]
		if at := attribution(byName[w.Name], raw, adjusted); at != nil {
			w.Attribution = at
		}
	}
}

// requestsByName pairs the begin and end events of windows that carry an id into requests, clipped to [start,
// end], per window name; a window never ended is no request.
func requestsByName(events []trace.Event, start, end time.Time) map[string][]request {
	byName := map[string][]request{}
	open := map[string]time.Time{}
	evs := slices.Clone(events)
	slices.SortStableFunc(evs, func(x, y trace.Event) int { return x.Time.Compare(y.Time) })
	for _, e := range evs {
		id := e.Attrs[trace.AttrWindowID]
		if id == "" {
			continue
		}
		key := e.Name + "#" + id
		switch e.Type {
		case trace.EventWindowBegin:
			open[key] = e.Time
		case trace.EventWindowEnd:
			if s, ok := open[key]; ok {
				delete(open, key)
				byName[e.Name] = append(byName[e.Name], request{start: maxTime(s, start), end: minTime(e.Time, end),
					prompt: count(e.Attrs, promptKeys), output: count(e.Attrs, outputKeys)})
			}
		}
	}
	return byName
}

// attribution splits the energy of one window name's requests (raw and adjusted energy over an interval given);
// nil when there are no requests or they reported no tokens.
func attribution(reqs []request, raw, adjusted func(x, y time.Time) float64) *manifest.Attribution {
	var tokens float64
	for _, r := range reqs {
		tokens += r.prompt + r.output
	}
	if len(reqs) == 0 || tokens == 0 {
		return nil
	}
	span0, span1 := reqs[0].start, reqs[0].end
	for _, r := range reqs {
		span0, span1 = minTime(span0, r.start), maxTime(span1, r.end)
	}
	per, un := attribute(reqs, span0, span1, raw)
	perAdj, unAdj := attribute(reqs, span0, span1, adjusted)
	at := &manifest.Attribution{Method: "token-share", Requests: len(reqs)}
	var sum, sumAdj float64
	var perTok []float64
	for k, r := range reqs {
		sum += per[k]
		sumAdj += perAdj[k]
		if r.output > 0 {
			perTok = append(perTok, per[k]/r.output)
		}
	}
	at.AttributedJ, at.UnattributedJ = manifest.Num(sum), manifest.Num(un)
	at.AttributedAdjJ, at.UnattributedAdjJ = manifest.Num(sumAdj), manifest.Num(unAdj)
	med, p90 := windowStats(per)
	at.MedianJ, at.P90J, at.MeanJ = manifest.Num(med), manifest.Num(p90), manifest.Num(sum/float64(len(reqs)))
	tmed, tp90 := windowStats(perTok)
	at.MedianJPerOutputToken, at.P90JPerOutputToken = manifest.Num(tmed), manifest.Num(tp90)
	return at
}
