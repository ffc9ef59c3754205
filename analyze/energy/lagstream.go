package energy

import (
	"fmt"
	"sort"
	"time"

	"github.com/lem-energy/lem/internal/trace"
)

// A trace too large to hold is read in windows (a run and its margins), but the hybrid's lag and its gain at the
// ends belong to the whole series: LagStream fits them in one pass over the series, exactly as FitHybrid does on
// the whole series, and NewHybridsFitted builds a window's hybrids with them.

// MinShift and MaxShift bound how far any hybrid moves the counter readings back: the lag's range widened by the largest
// uncertainty the jackknife can give (ten lags inside [MinLag, MaxLag] spread at most √(0.9·10·0.25²) s = 0.75 s),
// for the hybrids at lag ± u. A window of a series holds the readings and samples this far around its edges.
const (
	MinShift = MinLag - 800*time.Millisecond
	MaxShift = MaxLag + 800*time.Millisecond
)

// sampleAt is a sample with the running integral of every sample of the series up to it.
type sampleAt struct {
	ns      int64
	pw, cum float64
	seq     int
}

// keeper keeps stretches of contiguous samples around chosen times, with the running integral of the whole series:
// at any time inside a stretch, its Integral gives the whole series' integral (the same numbers, not a
// recomputation).
type keeper struct {
	in      Integral
	lastSeq int
	until   int64 // samples join until one at or after this time
}

// newKeeper's integral holds the whole values (one block, base 0: 0 + x is x).
func newKeeper() keeper { return keeper{lastSeq: -1, in: Integral{base: []float64{0}, shift: 62}} }

func (k *keeper) add(x sampleAt) {
	k.in.ss = append(k.in.ss, trace.PowerSample{Time: trace.Stamp(x.ns), PowerW: x.pw})
	k.in.own = append(k.in.own, x.cum)
	k.lastSeq = x.seq
}

// around keeps the samples from two before from (taken from hist, the newest samples) to the first at or after
// until (as they arrive, through offer). Two before: an integral's first sample reads as zero, so every time asked
// for must lie after it.
func (k *keeper) around(hist []sampleAt, from, until int64) {
	j := sort.Search(len(hist), func(i int) bool { return hist[i].ns > from }) - 2
	for _, x := range hist[max(j, 0):] {
		if x.seq > k.lastSeq {
			k.add(x)
		}
	}
	k.until = max(k.until, until)
}

func (k *keeper) offer(x sampleAt) {
	if n := len(k.in.ss); x.seq == k.lastSeq+1 && n > 0 && k.in.ns(n-1) < k.until {
		k.add(x)
	}
}

// dropBefore forgets the stretches' samples before the two that precede t.
func (k *keeper) dropBefore(t int64) {
	j := sort.Search(len(k.in.ss), func(i int) bool { return k.in.ns(i) >= t }) - 2
	if j > len(k.in.ss)/2 {
		k.in.ss = append(k.in.ss[:0], k.in.ss[j:]...)
		k.in.own = append(k.in.own[:0], k.in.own[j:]...)
	}
}

// indexed is a distinct counter reading and its index among them.
type indexed struct {
	p point
	i int
}

// LagStream fits one GPU's counter lag and the hybrid's gain from its series handed over in time order, a piece
// at a time (Add), given the number of distinct counter readings the whole series holds (so that it picks the
// intervals FitHybrid picks). It keeps only what the fit reads: the chosen counter intervals (at most
// maxLagIntervals), the samples around their readings with the running integral of all samples, and the readings
// and samples at the series' two ends, where the gain's sums begin and end.
type LagStream struct {
	stride int
	// Distinct counter readings so far, as FitHybrid's dedupe and normalize make them.
	n      int
	hasRaw bool
	rawMJ  uint64 // the last reading's value
	offset float64
	prev   point
	ivs    [][2]point // chosen intervals
	// Samples: every sample's running integral, the newest ones, and those around chosen readings.
	seq       int
	base, own float64 // the running integral's block base and the block's own sum (NewIntegral)
	last      sampleAt
	hist      []sampleAt // samples after the newest minus MaxShift, and the two before
	thin      keeper
	// The gain over the covered readings at lag L runs from the first reading at or after s0+L to the last at or
	// before the last sample+L. For every L a hybrid uses (MinShift..MaxShift) those are among the head (readings
	// from s0+MinShift to the first at or after s0+MaxShift) and the tail (from the last at or before the newest
	// sample+MinShift on), and the integral there among the samples kept around them.
	s0         int64 // first sample (ns)
	pre        []indexed
	head, tail []indexed
	headDone   bool
	headS      keeper
	tailS      keeper
}

// NewLagStream starts a fit over a series with distinct distinct counter values in time order (consecutive equal
// readings counted once).
func NewLagStream(distinct int) *LagStream {
	return &LagStream{stride: lagStride(distinct), thin: newKeeper(), headS: newKeeper(), tailS: newKeeper()}
}

// Add hands over the next counter readings and samples, each in time order and none before anything handed
// earlier.
func (l *LagStream) Add(cs []trace.CounterReading, ss []trace.PowerSample) {
	i, j := 0, 0
	for i < len(cs) || j < len(ss) {
		// Samples first at equal times: a reading's surroundings are then complete up to it.
		if j < len(ss) && (i == len(cs) || !ss[j].Time.After(cs[i].Time)) {
			l.sample(ss[j])
			j++
		} else {
			l.counter(cs[i])
			i++
		}
	}
}

func (l *LagStream) counter(c trace.CounterReading) {
	if l.hasRaw && c.EnergyMJ == l.rawMJ {
		return // dedupe: a value belongs to the first read that showed it
	}
	if l.hasRaw && c.EnergyMJ < l.rawMJ {
		l.offset += float64(l.rawMJ) / 1000 // normalize: after a reset the scale continues from the last value
	}
	l.hasRaw, l.rawMJ = true, c.EnergyMJ
	p := point{c.Time, c.Joules() + l.offset}
	k := l.n
	l.n++
	if k >= 1 && (k-1)%l.stride == 0 {
		l.ivs = append(l.ivs, [2]point{l.prev, p})
	}
	tp := p.t.UnixNano()
	if k%l.stride == 0 || (k-1)%l.stride == 0 {
		l.thin.around(l.hist, tp-int64(MaxLag), tp-int64(MinLag)) // every sample the fit reads around it
	}
	l.prev = p
	ip := indexed{p, k}
	if l.seq == 0 { // before any sample, which readings are the head is known at the first sample
		l.pre = append(l.pre, ip)
		if cut := p.t.Add(MinShift); l.pre[0].p.t.Before(cut) {
			j := sort.Search(len(l.pre), func(i int) bool { return !l.pre[i].p.t.Before(cut) })
			l.pre = append(l.pre[:0], l.pre[j:]...)
		}
		return
	}
	if !l.headDone {
		l.head = append(l.head, ip)
		l.headS.around(l.hist, tp-int64(MaxShift), tp-int64(MinShift))
		l.headDone = tp >= l.s0+int64(MaxShift)
	}
	l.tail = append(l.tail, ip)
	l.tailS.around(l.hist, tp-int64(MaxShift), tp-int64(MinShift))
}

func (l *LagStream) sample(s trace.PowerSample) {
	x := sampleAt{ns: s.Time.UnixNano(), pw: s.PowerW, seq: l.seq}
	if l.seq > 0 {
		// The running integral exactly as NewIntegral computes it: a block's own sum from zero on its base.
		inc := increment(trace.PowerSample{Time: trace.Stamp(l.last.ns), PowerW: l.last.pw}, s)
		if l.seq%integralBlock == 0 {
			l.base, l.own = l.base+(l.own+inc), 0
		} else {
			l.own += inc
		}
		x.cum = l.base + l.own
	}
	l.seq++
	l.last = x
	l.hist = append(l.hist, x)
	if cut := x.ns - int64(MaxShift); len(l.hist) > 256 && l.hist[2].ns <= cut {
		k := sort.Search(len(l.hist), func(i int) bool { return l.hist[i].ns > cut }) - 2
		if k > len(l.hist)/2 {
			l.hist = append(l.hist[:0], l.hist[k:]...)
		}
	}
	if x.seq == 0 {
		l.s0 = x.ns
		for _, p := range l.pre {
			if p.p.t.UnixNano() >= l.s0+int64(MinShift) {
				tp := p.p.t.UnixNano()
				l.head = append(l.head, p)
				l.tail = append(l.tail, p)
				l.headS.around(l.hist, tp-int64(MaxShift), tp-int64(MinShift))
				l.tailS.around(l.hist, tp-int64(MaxShift), tp-int64(MinShift))
				l.headDone = l.headDone || tp >= l.s0+int64(MaxShift)
			}
		}
		l.pre = nil
	}
	l.thin.offer(x)
	l.headS.offer(x)
	l.tailS.offer(x)
	if len(l.tail) > 64 || len(l.tailS.in.ss) > 512 {
		l.pruneTail()
	}
}

// pruneTail drops the tail's readings before the last one at or before the newest sample+MinShift, and the
// samples that only they needed.
func (l *LagStream) pruneTail() {
	cut := l.last.ns + int64(MinShift)
	k := sort.Search(len(l.tail), func(i int) bool { return l.tail[i].p.t.UnixNano() > cut }) - 1
	if k > 0 {
		l.tail = append(l.tail[:0], l.tail[k:]...)
	}
	if len(l.tail) > 0 {
		l.tailS.dropBefore(l.tail[0].p.t.UnixNano() - int64(MaxShift))
	}
}

// Fit is the lag FitHybrid estimates on the whole series.
func (l *LagStream) Fit() LagEstimate {
	ivs := make([]lagInterval, 0, len(l.ivs))
	for _, iv := range l.ivs {
		if lagUsable(iv[0], iv[1], &l.thin.in) {
			ivs = append(ivs, lagInterval{iv[0].t, iv[1].t, iv[1].j - iv[0].j})
		}
	}
	return fitLag(ivs, &l.thin.in)
}

// Gain is the counter-to-sample gain with which the whole series' hybrid at lag extrapolates beyond its readings;
// an error for a lag outside [MinShift, MaxShift].
func (l *LagStream) Gain(lag time.Duration) (float64, error) {
	if lag < MinShift || lag > MaxShift {
		return 0, fmt.Errorf("lag %s outside %s .. %s", lag, MinShift, MaxShift)
	}
	if l.seq < 2 {
		return 1, nil
	}
	covered := func(p indexed) bool {
		ns := p.p.t.UnixNano() - int64(lag)
		return ns >= l.s0 && ns <= l.last.ns
	}
	lo, hi := -1, -1
	for k, p := range l.head {
		if covered(p) {
			lo = k
			break
		}
	}
	for k := len(l.tail) - 1; k >= 0; k-- {
		if covered(l.tail[k]) {
			hi = k
			break
		}
	}
	if lo < 0 || hi < 0 || l.tail[hi].i <= l.head[lo].i {
		return 1, nil // fewer than two covered readings: no interval to measure the gain on
	}
	a, b := l.head[lo].p, l.tail[hi].p
	return endGain(a, b, l.headS.in.At(a.t.Add(-lag)), l.tailS.in.At(b.t.Add(-lag))), nil
}

// NewHybridsFitted prepares hybrids over a window of a series, at several lags with the gains the whole series
// gives them (LagStream), sharing the window's readings and the samples' running integral: inside the window they
// give the whole series' hybrid energies, provided the window holds the readings and samples the hybrid reads
// there (every reading from the last at or before its start+MinShift that first showed its value to the first
// after its end+MaxShift, and the samples around them).
func NewHybridsFitted(cs []trace.CounterReading, ss []trace.PowerSample, lags []time.Duration, gains []float64) ([]*Hybrid, error) {
	pts, resets := distinctPoints(cs)
	in := NewIntegral(ss)
	if len(pts) < 2 {
		return nil, fmt.Errorf("hybrid energy needs at least two distinct counter readings, have %d", len(pts))
	}
	if len(in.ss) < 2 {
		return nil, fmt.Errorf("hybrid energy needs power samples, have %d", len(in.ss))
	}
	out := make([]*Hybrid, len(lags))
	for i, lag := range lags {
		out[i] = &Hybrid{pts: pts, in: in, Lag: lag, Resets: resets, gain: gains[i]}
	}
	return out, nil
}
