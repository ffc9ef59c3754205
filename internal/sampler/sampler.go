// Package sampler drives the GPUs of a source: per device, a counter reader, a drain of the driver's 50 Hz
// power-sample buffer and a telemetry poller, each on its own goroutine so a slow (blocking) NVML call never delays
// another device or a consumer. What it reads goes to a ring buffer of recent data and is fanned out to any number
// of subscribers through bounded queues that drop (and count) rather than block.
package sampler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/lem-energy/lem/internal/gpu"
	"github.com/lem-energy/lem/internal/meta"
	"github.com/lem-energy/lem/internal/trace"
)

// Config sets the sampler's cadence.
type Config struct {
	// CounterInterval is how often the energy counter is read. Each read costs 3–4 ms of CPU on H200, so the
	// default is once a second; below the counter's ~100 ms update period reads only repeat values.
	CounterInterval time.Duration
	// DrainInterval is how often the driver's power-sample buffer is drained. It must stay well inside the
	// buffer's depth (~2.4 s on H200) or samples are lost.
	DrainInterval time.Duration
	// TelemetryInterval is how often temperature, clocks, utilization etc. are read.
	TelemetryInterval time.Duration
	// RingSpan is how much recent data the ring buffer keeps per GPU.
	RingSpan time.Duration
	// SamplePeriod is the driver's power-sample period; intervals over twice this are gaps.
	SamplePeriod time.Duration
	// BufferDepth is the driver buffer's depth: a drain later than this after the previous one that finds a
	// gap at its start has overrun the buffer.
	BufferDepth time.Duration
	// CounterUpdatePeriod is how often the GPU updates its energy counter (100 ms on Hopper, on a steady grid).
	CounterUpdatePeriod time.Duration
	// NoPhaseLock turns off phase-locking of counter reads (see counterLoop).
	NoPhaseLock bool
	// RelockEvery is how often the phase lock is renewed.
	RelockEvery time.Duration
	// SerialCounterReads makes the GPUs' counter reads take turns: no two at once. Concurrent reads on a
	// multi-GPU host each take longer (up to 14 ms with four at once on H200, against 3–4 ms alone), which
	// blurs when each value was read; taking turns keeps every read short at the cost of waiting for another
	// GPU's read (a few ms) now and then.
	SerialCounterReads bool
	// ProcessInterval is how often each GPU's per-process utilization and running processes are read. The driver
	// keeps only each process's latest utilization sample (one a second on H200), so it stays under a second.
	ProcessInterval time.Duration
	// NoProcesses turns per-process sampling off.
	NoProcesses bool
}

// Defaults for Config.
const (
	DefaultCounterInterval   = time.Second
	DefaultDrainInterval     = time.Second
	DefaultTelemetryInterval = 100 * time.Millisecond
	DefaultRingSpan          = 10 * time.Minute
	DefaultSamplePeriod      = 20 * time.Millisecond
	MinCounterInterval       = 10 * time.Millisecond
	// DefaultCounterUpdatePeriod is the energy counter's update period on H100/H200; measured on H200 the updates
	// fall on a 100.001 ms grid with ±4 ms jitter over 22 s.
	DefaultCounterUpdatePeriod = 100 * time.Millisecond
	DefaultRelockEvery         = 5 * time.Minute
	// DefaultProcessInterval reads the processes twice per driver sample period: measured on H200 (driver 580)
	// the per-process samples come once a second and a read takes about 2 ms (the process list 0.15 ms more),
	// about 4.3 ms a second per GPU.
	DefaultProcessInterval = 500 * time.Millisecond
	// MaxProcessInterval keeps per-process reads inside the driver's sample period.
	MaxProcessInterval = time.Second
)

// WithDefaults fills zero fields.
func (c Config) WithDefaults() Config {
	set := func(p *time.Duration, d time.Duration) {
		if *p == 0 {
			*p = d
		}
	}
	set(&c.CounterInterval, DefaultCounterInterval)
	set(&c.DrainInterval, DefaultDrainInterval)
	set(&c.TelemetryInterval, DefaultTelemetryInterval)
	set(&c.RingSpan, DefaultRingSpan)
	set(&c.SamplePeriod, DefaultSamplePeriod)
	set(&c.BufferDepth, gpu.DefaultBufferDepth)
	set(&c.CounterUpdatePeriod, DefaultCounterUpdatePeriod)
	set(&c.RelockEvery, DefaultRelockEvery)
	set(&c.ProcessInterval, DefaultProcessInterval)
	return c
}

// Validate rejects settings that would lose data or swamp the CPU.
func (c Config) Validate() error {
	switch {
	case c.CounterInterval < MinCounterInterval:
		return fmt.Errorf("counter interval %s is below %s (the counter only updates every ~100 ms)", c.CounterInterval, MinCounterInterval)
	case c.DrainInterval <= 0 || c.DrainInterval > c.BufferDepth*5/6:
		return fmt.Errorf("drain interval %s must be positive and well inside the driver buffer depth %s", c.DrainInterval, c.BufferDepth)
	case c.TelemetryInterval < time.Millisecond:
		return fmt.Errorf("telemetry interval %s is below 1ms", c.TelemetryInterval)
	case c.RingSpan < c.DrainInterval:
		return fmt.Errorf("ring span %s is shorter than the drain interval %s", c.RingSpan, c.DrainInterval)
	case !c.NoProcesses && (c.ProcessInterval < MinCounterInterval || c.ProcessInterval > MaxProcessInterval):
		return fmt.Errorf("process interval %s must lie within %s..%s (the driver keeps one utilization sample per process, "+
			"renewed every second)", c.ProcessInterval, MinCounterInterval, MaxProcessInterval)
	}
	return nil
}

// Kind says what a Record carries.
type Kind int

// Record kinds.
const (
	KindSamples Kind = iota
	KindCounter
	KindTelemetry
	KindEvent
	// KindProcesses is one poll of a GPU's processes: the per-process samples new since the last poll and the
	// processes running (none is a poll too: consumers learn how far the process data reaches).
	KindProcesses
)

// Record is one unit of data delivered to subscribers. Samples is shared: subscribers must not modify it.
type Record struct {
	GPU       int
	Kind      Kind
	Samples   []trace.PowerSample
	Counter   trace.CounterReading
	Telemetry trace.Telemetry
	Event     trace.Event
	// At, ProcessSamples and Processes are a KindProcesses record: the poll's time, the new samples and the
	// running processes (stamped At).
	At             time.Time
	ProcessSamples []trace.ProcessSample
	Processes      []trace.Process
}

// Sampler samples every device of a source.
type Sampler struct {
	src   gpu.Source
	clock gpu.Clock
	cfg   Config
	log   *slog.Logger
	devs  []*device
	byIdx map[int]*device

	mu   sync.RWMutex
	subs map[*Subscription]struct{}

	energyTurn chan struct{} // a token held during a counter read when Config.SerialCounterReads is set
}

// New makes a sampler for the given devices of src (nil: all).
func New(src gpu.Source, devs []gpu.Device, cfg Config, log *slog.Logger) (*Sampler, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("sampler: %w", err)
	}
	if log == nil {
		log = slog.Default()
	}
	if devs == nil {
		devs = src.Devices()
	}
	if len(devs) == 0 {
		return nil, errors.New("sampler: no GPU to sample")
	}
	s := &Sampler{src: src, clock: src.Clock(), cfg: cfg, log: log, byIdx: map[int]*device{},
		subs: map[*Subscription]struct{}{}, energyTurn: make(chan struct{}, 1)}
	for _, d := range devs {
		ds := newDevice(s, d)
		s.devs = append(s.devs, ds)
		s.byIdx[ds.idx] = ds
	}
	return s, nil
}

// Config returns the effective configuration.
func (s *Sampler) Config() Config { return s.cfg }

// Clock returns the clock the sampler stamps data with.
func (s *Sampler) Clock() gpu.Clock { return s.clock }

// Devices returns the sampled GPUs' identities.
func (s *Sampler) Devices() []meta.Device {
	out := make([]meta.Device, len(s.devs))
	for i, d := range s.devs {
		out[i] = d.dev.Info()
	}
	return out
}

// Environment is the source's environment narrowed to the sampled devices.
func (s *Sampler) Environment() meta.Environment {
	env := s.src.Environment()
	env.Devices = s.Devices()
	return env
}

// Run samples until ctx is done. It returns after every goroutine it started has ended.
func (s *Sampler) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for _, d := range s.devs {
		wg.Add(3)
		go func() { defer wg.Done(); d.counterLoop(ctx) }()
		go func() { defer wg.Done(); d.drainLoop(ctx) }()
		go func() { defer wg.Done(); d.telemetryLoop(ctx) }()
		if !s.cfg.NoProcesses {
			wg.Add(1)
			go func() { defer wg.Done(); d.processLoop(ctx) }()
		}
	}
	if er, ok := s.src.(gpu.EventReplayer); ok {
		wg.Add(1)
		go func() { defer wg.Done(); er.ReplayEvents(ctx, s.Emit) }()
	}
	wg.Wait()
	return nil
}

// ReadCounter reads GPU g's energy counter now, on that GPU's counter goroutine (so it never races a periodic
// read), and returns the reading. The sampler must be running.
func (s *Sampler) ReadCounter(ctx context.Context, g int) (trace.CounterReading, error) {
	return s.readCounter(ctx, g, false)
}

// ReadCounterAligned reads GPU g's counter half an update period after its next update, like the phase-locked
// periodic reads, so every reading of a run is equally stale (the hybrid's lag absorbs the constant). The runner
// brackets runs with these. It takes up to one and a half update periods (150 ms on Hopper).
func (s *Sampler) ReadCounterAligned(ctx context.Context, g int) (trace.CounterReading, error) {
	return s.readCounter(ctx, g, true)
}

func (s *Sampler) readCounter(ctx context.Context, g int, aligned bool) (trace.CounterReading, error) {
	d, ok := s.byIdx[g]
	if !ok {
		return trace.CounterReading{}, fmt.Errorf("GPU %d is not sampled", g)
	}
	req := counterReq{aligned: aligned, reply: make(chan counterReply, 1)}
	select {
	case d.reqs <- req:
	case <-ctx.Done():
		return trace.CounterReading{}, ctx.Err()
	}
	select {
	case r := <-req.reply:
		return r.c, r.err
	case <-ctx.Done():
		return trace.CounterReading{}, ctx.Err()
	}
}

// Window returns copies of GPU g's ring-buffered data with timestamps in [t0, t1].
func (s *Sampler) Window(g int, t0, t1 time.Time) (trace.Series, error) {
	d, ok := s.byIdx[g]
	if !ok {
		return trace.Series{}, fmt.Errorf("GPU %d is not sampled", g)
	}
	return d.window(t0, t1), nil
}

// Stats returns GPU g's capture statistics.
func (s *Sampler) Stats(g int) (Stats, bool) {
	d, ok := s.byIdx[g]
	if !ok {
		return Stats{}, false
	}
	return d.snapshot(), true
}

// Emit sends an event (e.g. a phase marker) to every subscriber, stamped now if its time is zero.
func (s *Sampler) Emit(ev trace.Event) {
	if ev.Time.IsZero() {
		ev.Time = s.clock.Now()
	}
	s.publish(Record{GPU: ev.GPU, Kind: KindEvent, Event: ev})
}

func (s *Sampler) publish(r Record) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for sub := range s.subs {
		sub.send(r)
	}
}
