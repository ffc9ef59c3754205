package sampler

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/lem-energy/lem/internal/gpu"
	"github.com/lem-energy/lem/internal/trace"
)

// CallStats describes one kind of device call.
type CallStats struct {
	Count        uint64
	Errors       uint64 // failures other than "not supported"
	NotSupported uint64
	Total        time.Duration
	Max          time.Duration
	Last         time.Duration
}

// Device call names in Stats.Calls.
const (
	CallEnergy    = "energy"
	CallSamples   = "power_samples"
	CallTelemetry = "telemetry"
)

// Stats is one GPU's capture accounting.
type Stats struct {
	GPU int
	// SamplesCaptured counts driver power samples received; FirstSample and LastSample bound them.
	SamplesCaptured uint64
	FirstSample     trace.Stamp
	LastSample      trace.Stamp
	// Gaps counts intervals between consecutive samples over twice the sample period; MissedSamples estimates
	// the samples those gaps should have held. DrainGaps is the part of Gaps that fell between two drains
	// (samples lem may have lost); the rest lay inside one drained batch, i.e. the driver never produced them.
	Gaps          uint64
	DrainGaps     uint64
	GapTime       time.Duration
	MissedSamples uint64
	// Overruns counts drains that came too late and found the buffer had dropped samples.
	Overruns uint64
	// CounterReads and CounterResets count energy-counter reads and detected resets (driver reload, wrap).
	CounterReads  uint64
	CounterResets uint64
	// EnergyJ is the counter energy accumulated since the sampler started, reset-safe and never decreasing.
	EnergyJ float64
	// SampledEnergyJ is the trapezoid integral of the captured samples since the first one.
	SampledEnergyJ float64
	LatestCounter  trace.CounterReading
	HasCounter     bool
	LatestTelem    trace.Telemetry
	HasTelemetry   bool
	LatestSample   trace.PowerSample
	// ClockReasonSeconds accumulates, per clock-event reason bit, the time the reason was active (between
	// consecutive telemetry snapshots that showed it).
	ClockReasonSeconds map[uint64]float64
	// Calls has latency and error counts per device call.
	Calls map[string]CallStats
	// Lag is how late the last loop iteration of each kind ran after its tick, and MaxLag the worst seen.
	Lag    map[string]time.Duration
	MaxLag map[string]time.Duration
	// ProcessPolls counts polls of the GPU's processes, ProcessSamples the per-process utilization samples they
	// returned; Processes is how many processes the latest poll found.
	ProcessPolls   uint64
	ProcessSamples uint64
	Processes      int
	// Lost is true while the GPU reports itself lost; LastError is the latest failure.
	Lost      bool
	LastError string
}

// CaptureRatio is captured over expected samples across the captured span (1 = lossless).
func (st Stats) CaptureRatio(period time.Duration) float64 {
	if st.SamplesCaptured < 2 {
		return 0
	}
	expected := float64(st.LastSample.Sub(st.FirstSample))/float64(period) + 1
	return float64(st.SamplesCaptured) / expected
}

type counterReq struct {
	aligned bool // read half an update period after an update, like the phase-locked periodic reads
	reply   chan counterReply
}

type counterReply struct {
	c   trace.CounterReading
	err error
}

type device struct {
	s    *Sampler
	dev  gpu.Device
	idx  int
	reqs chan counterReq

	mu        sync.Mutex
	st        Stats
	samples   []trace.PowerSample
	counters  []trace.CounterReading
	telemetry []trace.Telemetry
	lastDrain time.Time
	lostBy    map[string]bool
}

func newDevice(s *Sampler, d gpu.Device) *device {
	idx := d.Info().Index
	return &device{s: s, dev: d, idx: idx, reqs: make(chan counterReq), lostBy: map[string]bool{},
		st: Stats{GPU: idx, Calls: map[string]CallStats{}, Lag: map[string]time.Duration{}, MaxLag: map[string]time.Duration{},
			ClockReasonSeconds: map[uint64]float64{}}}
}

// call times fn and accounts its outcome; it logs transitions into and out of failure.
func (d *device) call(name string, fn func() error) error {
	t0 := time.Now()
	err := fn()
	dur := time.Since(t0)
	d.mu.Lock()
	cs := d.st.Calls[name]
	cs.Count++
	cs.Total += dur
	cs.Last = dur
	cs.Max = max(cs.Max, dur)
	wasLost := d.st.Lost
	switch {
	case err == nil:
	case errors.Is(err, gpu.ErrNotSupported):
		cs.NotSupported++
	default:
		cs.Errors++
		d.st.LastError = err.Error()
	}
	// Lost clears only when a call that reported it succeeds again: one call kind still answering (from a
	// driver cache, say) does not make a lost GPU healthy.
	if errors.Is(err, gpu.ErrGPULost) {
		d.lostBy[name] = true
	} else if err == nil {
		delete(d.lostBy, name)
	}
	d.st.Lost = len(d.lostBy) > 0
	lost := d.st.Lost
	d.st.Calls[name] = cs
	d.mu.Unlock()
	switch {
	case lost && !wasLost:
		d.s.log.Error("GPU lost; other GPUs keep sampling", "gpu", d.idx, "err", err)
		d.s.Emit(trace.Event{GPU: d.idx, Type: trace.EventDeviceError, Name: "gpu_lost", Attrs: map[string]string{"error": err.Error()}})
	case !lost && wasLost:
		d.s.log.Info("GPU answers again", "gpu", d.idx)
	case err != nil && errors.Is(err, gpu.ErrNotSupported) && cs.NotSupported == 1:
		d.s.log.Debug("not supported", "gpu", d.idx, "call", name, "err", err)
	case err != nil && !errors.Is(err, gpu.ErrNotSupported) && !lost && cs.Errors == 1:
		d.s.log.Warn("GPU call failed", "gpu", d.idx, "call", name, "err", err)
	}
	return err
}

// noteLag records how late a loop ran; lag is measured on the clock that scheduled it.
func (d *device) noteLag(loop string, lag time.Duration) {
	lag = max(lag, 0)
	d.mu.Lock()
	d.st.Lag[loop] = lag
	d.st.MaxLag[loop] = max(d.st.MaxLag[loop], lag)
	d.mu.Unlock()
}

// counterLoop reads the energy counter every CounterInterval and answers on-demand reads.
//
// The counter only changes every ~100 ms, on a steady grid, so a read returns a value up to one update old. Read
// at arbitrary instants that staleness is random (0–100 ms) and blurs where energy falls between sparse reads.
// When the interval is a multiple of the update period, the loop phase-locks instead: it finds an update by
// reading every 10 ms until the value changes, then schedules every read half a period after an update, so every
// reading is equally stale (the counter-lag estimate absorbs the constant) and no read meets an update in
// progress: on H100 a read 15 ms after an update took 10 ms instead of 3.
func (d *device) counterLoop(ctx context.Context) {
	cfg := d.s.cfg
	clock := d.s.clock
	upd := cfg.CounterUpdatePeriod
	lockable := !cfg.NoPhaseLock && cfg.CounterInterval >= 2*upd && cfg.CounterInterval%upd == 0
	var next, lockedAt time.Time
	start := func() {
		if lockable {
			lockedAt = clock.Now() // also on failure: retry at the next relock, not at every read
			if _, u, ok := d.lock(ctx); ok {
				// The first stored reading comes half a period after the update, like all the others.
				next = u.Add(upd / 2)
				for !next.After(clock.Now()) {
					next = next.Add(upd)
				}
				return
			}
		} else {
			d.readCounter() // a reading at start anchors every window
		}
		next = clock.Now().Add(cfg.CounterInterval)
	}
	start()
	for {
		select {
		case <-ctx.Done():
			return
		case <-clock.After(max(next.Sub(clock.Now()), 0)):
			d.noteLag("counter", clock.Since(next))
			d.readCounter()
			now := clock.Now()
			for next = next.Add(cfg.CounterInterval); !next.After(now); next = next.Add(cfg.CounterInterval) {
			}
			if lockable && now.Sub(lockedAt) >= cfg.RelockEvery {
				start()
			}
		case req := <-d.reqs:
			var c trace.CounterReading
			var err error
			if req.aligned {
				c, err = d.readAligned(ctx)
			} else {
				c, err = d.readCounter()
			}
			req.reply <- counterReply{c, err}
		}
	}
}

// readAligned finds the next counter update and reads half a period after it, so the reading is exactly as stale
// as the phase-locked periodic ones: a run bracketed by such reads has no edge bias between its ends and the
// readings in between. It falls back to a plain read where no update is seen.
func (d *device) readAligned(ctx context.Context) (trace.CounterReading, error) {
	if _, u, ok := d.lock(ctx); ok {
		select {
		case <-ctx.Done():
		case <-d.s.clock.After(u.Add(d.s.cfg.CounterUpdatePeriod / 2).Sub(d.s.clock.Now())):
		}
	}
	return d.readCounter()
}

// peekCounter reads the counter for the phase lock: timed and counted like any call, but neither stored nor
// published. Its staleness differs from the aligned reads', so keeping it would bias the hybrid's edges.
func (d *device) peekCounter() (trace.CounterReading, error) {
	var c trace.CounterReading
	done := d.energyTurn()
	err := d.call(CallEnergy, func() (err error) { c, err = d.dev.ReadEnergy(); return err })
	done()
	return c, err
}

// lock reads the counter every 10 ms until its value changes and returns the first reading of the new value and
// the estimated update instant (midway between the last read of the old value and the first of the new). ok is
// false if no change was seen within two update periods (counter unsupported, or the GPU stopped updating it).
func (d *device) lock(ctx context.Context) (trace.CounterReading, time.Time, bool) {
	clock := d.s.clock
	prev, err := d.peekCounter()
	if err != nil {
		return prev, time.Time{}, false
	}
	deadline := clock.Now().Add(2 * d.s.cfg.CounterUpdatePeriod) // on the clock's own reading: no wall-clock step moves it
	for clock.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return prev, time.Time{}, false
		case <-clock.After(10 * time.Millisecond):
		}
		c, err := d.peekCounter()
		if err != nil {
			return prev, time.Time{}, false
		}
		if c.EnergyMJ != prev.EnergyMJ {
			// Midway between the two reads, which are stamped on the wall clock; handed over relative to the
			// clock's own now, so that the schedule built on it keeps the clock's monotonic reading.
			mid := prev.Time.Add(c.Time.Sub(prev.Time) / 2)
			now := clock.Now()
			return c, now.Add(mid.Sub(trace.StampOf(now))), true
		}
		prev = c
	}
	return prev, time.Time{}, false
}

// energyTurn waits for this GPU's turn to read its counter when the sampler serialises the reads, and returns the
// function that ends the turn. The wait is outside the call's timing: CallEnergy times the read itself.
func (d *device) energyTurn() (done func()) {
	if !d.s.cfg.SerialCounterReads {
		return func() {}
	}
	d.s.energyTurn <- struct{}{} // a channel, not a mutex: a wait on it is one the test clock can see
	return func() { <-d.s.energyTurn }
}

func (d *device) readCounter() (trace.CounterReading, error) {
	var c trace.CounterReading
	done := d.energyTurn()
	err := d.call(CallEnergy, func() (err error) { c, err = d.dev.ReadEnergy(); return err })
	done()
	if err != nil {
		return c, err
	}
	var reset bool
	d.mu.Lock()
	if d.st.HasCounter {
		prev := d.st.LatestCounter.EnergyMJ
		if c.EnergyMJ < prev {
			// Driver reload or wrap: the counter restarted from zero, so the new value is what was spent since.
			reset = true
			d.st.CounterResets++
			d.st.EnergyJ += c.Joules()
		} else {
			d.st.EnergyJ += float64(c.EnergyMJ-prev) / 1000
		}
	}
	d.st.CounterReads++
	d.st.LatestCounter, d.st.HasCounter = c, true
	d.counters = append(d.counters, c)
	d.counters = trimCounters(d.counters, c.Time.Add(-d.s.cfg.RingSpan))
	d.mu.Unlock()
	if reset {
		d.s.log.Warn("energy counter reset (driver reload?)", "gpu", d.idx)
		d.s.Emit(trace.Event{Time: c.Time.Time(), GPU: d.idx, Type: trace.EventCounterReset})
	}
	d.s.publish(Record{GPU: d.idx, Kind: KindCounter, Counter: c})
	return c, nil
}

func (d *device) drainLoop(ctx context.Context) {
	tk := d.s.clock.NewTicker(d.s.cfg.DrainInterval)
	defer tk.Stop()
	d.drain()
	for {
		select {
		case <-ctx.Done():
			d.drain() // collect what the driver holds since the last drain
			return
		case tick := <-tk.C():
			d.noteLag("drain", time.Since(tick))
			d.drain()
		}
	}
}

func (d *device) drain() {
	var since time.Time // zero before the first sample: everything the driver holds
	d.mu.Lock()
	if d.st.SamplesCaptured > 0 {
		since = d.st.LastSample.Time()
	}
	d.mu.Unlock()
	var ss []trace.PowerSample
	if err := d.call(CallSamples, func() (err error) { ss, err = d.dev.PowerSamples(since); return err }); err != nil {
		return
	}
	now := d.s.clock.Now()
	period := d.s.cfg.SamplePeriod
	var events []trace.Event
	d.mu.Lock()
	late := !d.lastDrain.IsZero() && now.Sub(d.lastDrain) > d.s.cfg.BufferDepth
	d.lastDrain = now
	for i, smp := range ss {
		if d.st.SamplesCaptured == 0 {
			d.st.FirstSample = smp.Time
		} else {
			prev := d.st.LastSample
			gap := smp.Time.Sub(prev)
			if gap > 2*period {
				d.st.Gaps++
				d.st.GapTime += gap - period
				d.st.MissedSamples += uint64((gap+period/2)/period) - 1
				typ, where := trace.EventGap, trace.GapInBatch
				if i == 0 {
					d.st.DrainGaps++
					where = trace.GapAtDrain
					if late {
						d.st.Overruns++
						typ = trace.EventOverrun
					}
				}
				events = append(events, trace.Event{Time: prev.Time(), GPU: d.idx, Type: typ, Attrs: map[string]string{
					"duration_ms": strconv.FormatFloat(float64(gap)/1e6, 'f', 1, 64), "where": where}})
			}
			if prevW, ok := lastPower(d.samples); ok {
				d.st.SampledEnergyJ += (prevW + smp.PowerW) / 2 * gap.Seconds()
			}
		}
		d.st.SamplesCaptured++
		d.st.LastSample = smp.Time
		d.samples = append(d.samples, smp)
	}
	if len(ss) > 0 {
		d.st.LatestSample = ss[len(ss)-1]
		d.samples = trimSamples(d.samples, ss[len(ss)-1].Time.Add(-d.s.cfg.RingSpan))
	}
	d.mu.Unlock()
	for _, ev := range events {
		lvl := slog.LevelWarn
		if ev.Attrs["where"] == trace.GapInBatch { // the driver's own hiccup, seen ~1 in 250 samples under load
			lvl = slog.LevelDebug
		}
		d.s.log.Log(context.Background(), lvl, "power-sample gap", "gpu", d.idx, "type", ev.Type, "where", ev.Attrs["where"],
			"at", ev.Time, "duration_ms", ev.Attrs["duration_ms"])
		d.s.Emit(ev)
	}
	if len(ss) > 0 {
		d.s.publish(Record{GPU: d.idx, Kind: KindSamples, Samples: ss})
	}
}

func lastPower(ss []trace.PowerSample) (float64, bool) {
	if len(ss) == 0 {
		return 0, false
	}
	return ss[len(ss)-1].PowerW, true
}

func (d *device) telemetryLoop(ctx context.Context) {
	tk := d.s.clock.NewTicker(d.s.cfg.TelemetryInterval)
	defer tk.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case tick := <-tk.C():
			d.noteLag("telemetry", time.Since(tick))
			var t trace.Telemetry
			if err := d.call(CallTelemetry, func() (err error) { t, err = d.dev.Telemetry(); return err }); err != nil {
				continue
			}
			d.mu.Lock()
			if prev := d.st.LatestTelem; d.st.HasTelemetry && prev.ClockReasonsValid {
				dt := t.Time.Sub(prev.Time).Seconds()
				for bit := uint64(1); bit != 0 && bit <= prev.ClockReasons; bit <<= 1 {
					if prev.ClockReasons&bit != 0 {
						d.st.ClockReasonSeconds[bit] += dt
					}
				}
			}
			d.st.LatestTelem, d.st.HasTelemetry = t, true
			d.telemetry = append(d.telemetry, t)
			d.telemetry = trimTelemetry(d.telemetry, t.Time.Add(-d.s.cfg.RingSpan))
			d.mu.Unlock()
			d.s.publish(Record{GPU: d.idx, Kind: KindTelemetry, Telemetry: t})
		}
	}
}

func (d *device) snapshot() Stats {
	d.mu.Lock()
	defer d.mu.Unlock()
	st := d.st
	st.Calls = maps.Clone(d.st.Calls)
	st.Lag = maps.Clone(d.st.Lag)
	st.MaxLag = maps.Clone(d.st.MaxLag)
	st.ClockReasonSeconds = maps.Clone(d.st.ClockReasonSeconds)
	return st
}

func (d *device) window(t0, t1 time.Time) trace.Series {
	a, b := trace.StampOf(t0), trace.StampOf(t1)
	d.mu.Lock()
	defer d.mu.Unlock()
	return trace.Series{
		Samples:   between(d.samples, a, b, func(s trace.PowerSample) trace.Stamp { return s.Time }),
		Counters:  between(d.counters, a, b, func(c trace.CounterReading) trace.Stamp { return c.Time }),
		Telemetry: between(d.telemetry, a, b, func(t trace.Telemetry) trace.Stamp { return t.Time }),
	}
}

// between copies the elements of a time-ordered slice stamped within [t0, t1].
func between[T any](xs []T, t0, t1 trace.Stamp, ts func(T) trace.Stamp) []T {
	i := sort.Search(len(xs), func(i int) bool { return !ts(xs[i]).Before(t0) })
	j := sort.Search(len(xs), func(i int) bool { return ts(xs[i]).After(t1) })
	if i >= j {
		return nil
	}
	return append([]T(nil), xs[i:j]...)
}

// trimFront drops elements older than cut. It reslices, and copies once the dead prefix dominates so the
// backing array does not grow without bound.
func trimFront[T any](xs []T, cut trace.Stamp, ts func(T) trace.Stamp) []T {
	i := sort.Search(len(xs), func(i int) bool { return !ts(xs[i]).Before(cut) })
	if i == 0 {
		return xs
	}
	if i > len(xs)/2 {
		return append(make([]T, 0, 2*(len(xs)-i)+16), xs[i:]...)
	}
	return xs[i:]
}

func trimSamples(xs []trace.PowerSample, cut trace.Stamp) []trace.PowerSample {
	return trimFront(xs, cut, func(s trace.PowerSample) trace.Stamp { return s.Time })
}

func trimCounters(xs []trace.CounterReading, cut trace.Stamp) []trace.CounterReading {
	return trimFront(xs, cut, func(c trace.CounterReading) trace.Stamp { return c.Time })
}

func trimTelemetry(xs []trace.Telemetry, cut trace.Stamp) []trace.Telemetry {
	return trimFront(xs, cut, func(t trace.Telemetry) trace.Stamp { return t.Time })
}
