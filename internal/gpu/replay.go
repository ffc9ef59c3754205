package gpu

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/lem-energy/lem/internal/meta"
	"github.com/lem-energy/lem/internal/trace"
)

// ReplayOptions tune how a recording is played back.
type ReplayOptions struct {
	// Speed plays the recording this many times faster than real time (default 1). The source's clock runs
	// at the same speed, so a sampler driven by it behaves exactly as on a GPU host.
	Speed float64
	// Loop restarts the recording at its end, with the energy counter carrying on upwards.
	Loop bool
	// BufferDepth is how much history the emulated driver sample buffer holds (default 2.4 s, as on H200).
	BufferDepth time.Duration
	// Start is the wall-clock instant the recording's first timestamp maps to (default: now).
	Start time.Time
}

// DefaultBufferDepth is the driver power-sample ring measured on H200 (~120 entries at 20 ms).
const DefaultBufferDepth = 2400 * time.Millisecond

// ReplaySource plays a recorded lem trace back in real time, timestamps shifted to now.
type ReplaySource struct {
	env    meta.Environment
	clock  *ScaledClock
	devs   []Device
	t0, t1 time.Time     // recording span
	period time.Duration // one loop
	shift  time.Duration // recording time + shift = replay time (first loop)
	opts   ReplayOptions
	events []trace.Event // recording time, sorted
	ended  chan struct{}
	once   sync.Once
	stop   chan struct{}
}

var _ Source = (*ReplaySource)(nil)

// OpenReplay opens a trace file for replay.
func OpenReplay(path string, opts ReplayOptions) (*ReplaySource, error) {
	t, err := trace.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("replay: %w", err)
	}
	return NewReplay(t, path, opts)
}

// NewReplay replays an in-memory trace; path is recorded in the environment.
func NewReplay(t *trace.Trace, path string, opts ReplayOptions) (*ReplaySource, error) {
	if opts.Speed <= 0 {
		opts.Speed = 1
	}
	if opts.BufferDepth <= 0 {
		opts.BufferDepth = DefaultBufferDepth
	}
	if opts.Start.IsZero() {
		opts.Start = time.Now()
	}
	// Play the span every GPU has both samples and counter for; samples before it still come out of the
	// emulated driver buffer at start, as they would on a real GPU.
	t0, t1 := t.Common()
	if t0.IsZero() || !t1.After(t0) {
		return nil, fmt.Errorf("replay %s: the trace holds no power samples or counter readings", path)
	}
	r := &ReplaySource{
		env:    t.Env,
		t0:     t0,
		t1:     t1,
		period: t1.Sub(t0) + 20*time.Millisecond,
		shift:  opts.Start.Truncate(time.Microsecond).Sub(t0),
		opts:   opts,
		ended:  make(chan struct{}),
		stop:   make(chan struct{}),
	}
	r.clock = &ScaledClock{Origin: opts.Start, Start: opts.Start, Speed: opts.Speed}
	r.env.Source = meta.Source{Kind: "replay", Path: path}
	r.events = slices.Clone(t.Events)
	sort.SliceStable(r.events, func(i, j int) bool { return r.events[i].Time.Before(r.events[j].Time) })
	for _, g := range t.GPUIndices() {
		info, ok := t.Env.Device(g)
		if !ok {
			info = meta.Device{Index: g, UUID: fmt.Sprintf("GPU-replay-%d", g), Name: "replayed GPU"}
			r.env.Devices = append(r.env.Devices, info)
		}
		s := t.GPUs[g]
		info.EnergyCounter = len(s.Counters) > 0
		info.PowerSamples = len(s.Samples) > 0
		info.ProcessUtilization = info.ProcessUtilization || len(s.ProcessSamples) > 0
		r.devs = append(r.devs, newReplayDevice(r, info, s))
	}
	if !opts.Loop {
		go r.watchEnd()
	}
	return r, nil
}

func (r *ReplaySource) watchEnd() {
	wait := time.Duration(float64(r.t1.Sub(r.t0))/r.opts.Speed) - time.Since(r.opts.Start)
	select {
	case <-time.After(wait):
		close(r.ended)
	case <-r.stop:
	}
}

// Environment returns the recording's environment with the source marked as replay.
func (r *ReplaySource) Environment() meta.Environment { return r.env }

// Devices returns one device per recorded GPU.
func (r *ReplaySource) Devices() []Device { return r.devs }

// Clock is the replay clock (wall clock shifted, times Speed).
func (r *ReplaySource) Clock() Clock { return r.clock }

// Ended is closed once a non-looping recording has played out.
func (r *ReplaySource) Ended() <-chan struct{} { return r.ended }

// Duration is the length of the recording in recording time.
func (r *ReplaySource) Duration() time.Duration { return r.t1.Sub(r.t0) }

// ToReplayTime maps a recording timestamp to the replay timeline (first loop).
func (r *ReplaySource) ToReplayTime(t time.Time) time.Time { return t.Add(r.shift) }

// Close stops the end watcher.
func (r *ReplaySource) Close() error {
	r.once.Do(func() { close(r.stop) })
	return nil
}

// ReplayEvents emits the recording's events (phase markers, results) as the replay clock passes them, shifted
// like the data, until ctx is done or a non-looping recording ends. The sampler runs it for sources that have it.
func (r *ReplaySource) ReplayEvents(ctx context.Context, emit func(trace.Event)) {
	if len(r.events) == 0 {
		return
	}
	for loop := int64(0); ; loop++ {
		off := r.shift + time.Duration(loop)*r.period
		for _, e := range r.events {
			at := e.Time.Add(off)
			if wait := time.Duration(float64(at.Sub(r.clock.Now())) / r.opts.Speed); wait > 0 {
				select {
				case <-ctx.Done():
					return
				case <-time.After(wait):
				}
			} else if loop == 0 && at.Before(r.opts.Start) {
				continue // before the replay started
			}
			e.Time = at
			emit(e)
		}
		if !r.opts.Loop {
			return
		}
	}
}

// at maps replay time v to the loop index and the recording time within that loop.
func (r *ReplaySource) at(v time.Time) (loop int64, rec time.Time) {
	rec = v.Add(-r.shift)
	if !r.opts.Loop || rec.Before(r.t1) {
		return 0, rec
	}
	loop = int64(rec.Sub(r.t0) / r.period)
	return loop, rec.Add(-time.Duration(loop) * r.period)
}

type replayDevice struct {
	src         *ReplaySource
	info        meta.Device
	s           *trace.Series
	energyPerLp uint64 // counter increase over one loop
}

var (
	_ Device          = (*replayDevice)(nil)
	_ ProcessUtilizer = (*replayDevice)(nil)
)

func newReplayDevice(src *ReplaySource, info meta.Device, s *trace.Series) *replayDevice {
	d := &replayDevice{src: src, info: info, s: s}
	if n := len(s.Counters); n > 1 {
		first, last := s.Counters[0], s.Counters[n-1]
		span := last.Time.Sub(first.Time)
		rate := float64(last.EnergyMJ-first.EnergyMJ) / span.Seconds() // mJ/s over the recording
		// The seam from the last reading back to the first adds the mean power over the missing time.
		seam := (src.period - span).Seconds() * rate
		d.energyPerLp = last.EnergyMJ - first.EnergyMJ + uint64(seam)
	}
	return d
}

func (d *replayDevice) Info() meta.Device { return d.info }

// ReadEnergy returns the recorded counter value in force at the replay clock's now: like the driver's, the
// counter steps at the recorded update instants.
func (d *replayDevice) ReadEnergy() (trace.CounterReading, error) {
	now := d.src.clock.Now()
	cs := d.s.Counters
	if len(cs) == 0 {
		return trace.CounterReading{Time: trace.StampOf(now)}, fmt.Errorf("replay GPU %d: %w (no counter in the recording)",
			d.info.Index, ErrNotSupported)
	}
	loop, rec := d.src.at(now)
	i := sort.Search(len(cs), func(i int) bool { return cs[i].Time.After(trace.StampOf(rec)) }) - 1
	if i < 0 {
		i = 0
	}
	return trace.CounterReading{Time: trace.StampOf(now), EnergyMJ: cs[i].EnergyMJ + uint64(loop)*d.energyPerLp,
		ReadDuration: cs[i].ReadDuration}, nil
}

// PowerSamples returns recorded samples, shifted to replay time, that are newer than since, no later than now
// and still inside the emulated driver buffer.
func (d *replayDevice) PowerSamples(since time.Time) ([]trace.PowerSample, error) {
	ss := d.s.Samples
	if len(ss) == 0 {
		return nil, fmt.Errorf("replay GPU %d: %w (no power samples in the recording)", d.info.Index, ErrNotSupported)
	}
	now := d.src.clock.Now()
	lo := now.Add(-d.src.opts.BufferDepth)
	if since.After(lo) {
		lo = since
	}
	loop, _ := d.src.at(now)
	var out []trace.PowerSample
	for k := max(loop-1, 0); k <= loop; k++ {
		off := d.src.shift + time.Duration(k)*d.src.period
		from, to := trace.StampOf(lo.Add(-off)), trace.StampOf(now.Add(-off)) // window in recording time
		i := sort.Search(len(ss), func(i int) bool { return ss[i].Time.After(from) })
		for ; i < len(ss) && !ss[i].Time.After(to); i++ {
			out = append(out, trace.PowerSample{Time: ss[i].Time.Add(off), PowerW: ss[i].PowerW})
		}
	}
	return out, nil
}

// Telemetry returns the recorded snapshot in force now, stamped now.
func (d *replayDevice) Telemetry() (trace.Telemetry, error) {
	now := d.src.clock.Now()
	ts := d.s.Telemetry
	if len(ts) == 0 {
		return trace.NewTelemetry(trace.StampOf(now)), fmt.Errorf("replay GPU %d telemetry: %w", d.info.Index, ErrNotSupported)
	}
	_, rec := d.src.at(now)
	i := sort.Search(len(ts), func(i int) bool { return ts[i].Time.After(trace.StampOf(rec)) }) - 1
	if i < 0 {
		i = 0
	}
	t := ts[i]
	t.Time = trace.StampOf(now)
	return t, nil
}

// processHold is how long a recorded poll of the running processes stays in force: the recorder writes no row for
// a poll that found none, so a poll more than this old means the processes had gone.
const processHold = 2 * time.Second

// Processes returns the processes of the recorded poll in force now, with their recorded identities (they are
// the recording host's processes, not this one's). A recording without process rows does not support it.
func (d *replayDevice) Processes() ([]Process, error) {
	ps := d.s.Processes
	if len(ps) == 0 {
		if len(d.s.ProcessSamples) == 0 {
			return nil, fmt.Errorf("replay GPU %d: %w (no processes in the recording)", d.info.Index, ErrNotSupported)
		}
		return nil, nil
	}
	now := d.src.clock.Now()
	_, rec := d.src.at(now)
	i := sort.Search(len(ps), func(i int) bool { return ps[i].Time.After(rec) }) - 1
	if i < 0 || rec.Sub(ps[i].Time) > processHold {
		return nil, nil
	}
	at := ps[i].Time
	for i > 0 && ps[i-1].Time.Equal(at) {
		i--
	}
	var out []Process
	for ; i < len(ps) && ps[i].Time.Equal(at); i++ {
		p := ps[i]
		out = append(out, Process{PID: p.PID, UsedMemoryBytes: p.MemoryBytes, GPUInstance: p.GPUInstance,
			ComputeInstance: p.ComputeInstance, Identity: p.Identity})
	}
	return out, nil
}

// ProcessUtilization returns the recorded per-process samples newer than since and no later than now, shifted to
// replay time, each process's latest only, as the driver keeps them. A recording without them does not support it.
func (d *replayDevice) ProcessUtilization(since time.Time) ([]trace.ProcessSample, error) {
	ps := d.s.ProcessSamples
	if len(ps) == 0 {
		return nil, fmt.Errorf("replay GPU %d: %w (no per-process samples in the recording)", d.info.Index, ErrNotSupported)
	}
	now := d.src.clock.Now()
	loop, _ := d.src.at(now)
	latest := map[uint32]int{} // PID → index in out
	var out []trace.ProcessSample
	for k := max(loop-1, 0); k <= loop; k++ {
		off := d.src.shift + time.Duration(k)*d.src.period
		from, to := since.Add(-off), now.Add(-off) // window in recording time
		i := sort.Search(len(ps), func(i int) bool { return ps[i].Time.After(from) })
		for ; i < len(ps) && !ps[i].Time.After(to); i++ {
			p := ps[i]
			p.Time = p.Time.Add(off)
			if j, ok := latest[p.PID]; ok {
				out[j] = p
				continue
			}
			latest[p.PID] = len(out)
			out = append(out, p)
		}
	}
	slices.SortStableFunc(out, func(a, b trace.ProcessSample) int { return a.Time.Compare(b.Time) })
	return out, nil
}
