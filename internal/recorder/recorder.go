// Package recorder subscribes to a sampler and keeps everything it delivers: in memory, in a Parquet trace file,
// or both. The exporter's recorder, the runner's run trace and `lem-run record` are all this.
package recorder

import (
	"errors"
	"fmt"
	"time"

	"github.com/lem-energy/lem/internal/sampler"
	"github.com/lem-energy/lem/internal/trace"
)

// QueueSize is the recorder's subscription queue: at 50 Hz drained every second a GPU sends about 11 records a
// second, so this holds minutes of backlog before anything is dropped.
const QueueSize = 8192

// Recorder consumes one subscription.
type Recorder struct {
	sub        *sampler.Subscription
	w          *trace.Writer
	mem        *trace.Trace
	flushEvery time.Duration
	done       chan struct{}
	err        error
}

// Options choose where records go.
type Options struct {
	// Writer, if set, receives every record; it is flushed every FlushEvery (default 10 s) so a crash loses at
	// most that much, and closed by Stop.
	Writer     *trace.Writer
	FlushEvery time.Duration
	// Memory keeps an in-memory trace, returned by Stop.
	Memory bool
}

// Start subscribes to s and records until Stop.
func Start(s *sampler.Sampler, opts Options) *Recorder {
	if opts.FlushEvery <= 0 {
		opts.FlushEvery = 10 * time.Second
	}
	r := &Recorder{sub: s.Subscribe("recorder", QueueSize), w: opts.Writer, flushEvery: opts.FlushEvery,
		done: make(chan struct{})}
	if opts.Memory {
		r.mem = trace.New(s.Environment())
	}
	go r.run()
	return r
}

func (r *Recorder) run() {
	defer close(r.done)
	lastFlush := time.Now()
	for rec := range r.sub.C() {
		if err := r.record(rec); err != nil && r.err == nil {
			r.err = err // keep consuming: the in-memory copy stays complete
		}
		if r.w != nil && time.Since(lastFlush) >= r.flushEvery {
			if err := r.w.Flush(); err != nil && r.err == nil {
				r.err = err
			}
			lastFlush = time.Now()
		}
	}
}

func (r *Recorder) record(rec sampler.Record) error {
	if r.mem != nil {
		switch rec.Kind {
		case sampler.KindSamples:
			s := r.mem.Series(rec.GPU)
			s.Samples = append(s.Samples, rec.Samples...)
		case sampler.KindCounter:
			s := r.mem.Series(rec.GPU)
			s.Counters = append(s.Counters, rec.Counter)
		case sampler.KindTelemetry:
			s := r.mem.Series(rec.GPU)
			s.Telemetry = append(s.Telemetry, rec.Telemetry)
		case sampler.KindEvent:
			r.mem.Events = append(r.mem.Events, rec.Event)
		}
	}
	if r.w == nil {
		return nil
	}
	return Write(r.w, rec)
}

// Write appends one sampler record to a trace file.
func Write(w *trace.Writer, rec sampler.Record) error {
	switch rec.Kind {
	case sampler.KindSamples:
		return w.WriteSamples(rec.GPU, rec.Samples)
	case sampler.KindCounter:
		return w.WriteCounter(rec.GPU, rec.Counter)
	case sampler.KindTelemetry:
		return w.WriteTelemetry(rec.GPU, rec.Telemetry)
	case sampler.KindEvent:
		return w.WriteEvent(rec.Event)
	}
	return nil
}

// Dropped is how many records the recorder's queue dropped.
func (r *Recorder) Dropped() uint64 { return r.sub.Dropped() }

// Stop unsubscribes, records what is still queued, closes the file and returns the in-memory trace (nil without
// Memory). The sampler should have stopped first so its final drain is included.
func (r *Recorder) Stop() (*trace.Trace, error) {
	r.sub.Close()
	<-r.done
	err := r.err
	if d := r.sub.Dropped(); d > 0 {
		err = errors.Join(err, fmt.Errorf("recorder dropped %d records (queue full)", d))
	}
	if r.w != nil {
		if err != nil {
			r.w.SetMetadata("lem.recorder_error", err.Error())
		}
		if cerr := r.w.Close(); cerr != nil {
			err = errors.Join(err, cerr)
		}
	}
	if r.mem != nil {
		for _, s := range r.mem.GPUs {
			s.Sort()
		}
	}
	return r.mem, err
}
