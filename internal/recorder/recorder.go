// Package recorder subscribes to a sampler and keeps everything it delivers: in memory, in a crash-safe trace
// file of closed segments, or both. The exporter's recording directory, the runner's run trace and
// `lem-run record` are all this.
package recorder

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/lem-energy/lem/internal/sampler"
	"github.com/lem-energy/lem/internal/trace"
)

// QueueSize is the recorder's subscription queue: at 50 Hz drained every second a GPU sends about 11 records a
// second, so this holds minutes of backlog before anything is dropped.
const QueueSize = 8192

// DefaultFlushEvery is how often a recording closes its current segment: a crash loses at most this much (plus
// the sampler's drain interval, the age of the newest samples it has not yet delivered).
const DefaultFlushEvery = 5 * time.Second

// Options choose where records go.
type Options struct {
	// Path, if set, is the trace file (.parquet) to write. Records go into segments beside it, each closed every
	// FlushEvery; Stop merges them into Path. A crash leaves the closed segments (ReadSegments reads them).
	Path       string
	FlushEvery time.Duration
	// Metadata is written into every segment's key-value metadata.
	Metadata map[string]string
	// Memory keeps an in-memory trace, returned by Stop.
	Memory bool
}

// Recorder consumes one subscription.
type Recorder struct {
	sub  *sampler.Subscription
	seg  *segmentWriter
	mem  *trace.Trace
	done chan struct{}
	err  error
}

// Start subscribes to s and records until Stop.
func Start(s *sampler.Sampler, opts Options) (*Recorder, error) {
	if opts.FlushEvery <= 0 {
		opts.FlushEvery = DefaultFlushEvery
	}
	r := &Recorder{done: make(chan struct{})}
	if opts.Path != "" {
		name := strings.TrimSuffix(filepath.Base(opts.Path), ".parquet")
		w, err := newSegmentWriter(filepath.Dir(opts.Path), name, s.Environment(), opts.Metadata, opts.FlushEvery)
		if err != nil {
			return nil, err
		}
		r.seg = w
	}
	if opts.Memory {
		r.mem = trace.New(s.Environment())
	}
	r.sub = s.Subscribe("recorder", QueueSize)
	go r.run(tickEvery(opts.FlushEvery))
	return r, nil
}

// tickEvery is how often a recording checks its segment's age: often enough that a segment closes within its
// flush interval.
func tickEvery(flush time.Duration) time.Duration { return min(flush/10, time.Second) }

func (r *Recorder) run(tick time.Duration) {
	defer close(r.done)
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case rec, ok := <-r.sub.C():
			if !ok {
				return
			}
			if err := r.record(rec); err != nil && r.err == nil {
				r.err = err // keep consuming: the in-memory copy stays complete
			}
		case now := <-t.C:
			if r.seg != nil {
				// Close early by one tick, so no segment stays open longer than the flush interval.
				if err := r.seg.tick(now.Add(tick)); err != nil && r.err == nil {
					r.err = err
				}
			}
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
		case sampler.KindProcesses:
			if len(rec.ProcessSamples)+len(rec.Processes) > 0 {
				s := r.mem.Series(rec.GPU)
				s.ProcessSamples = append(s.ProcessSamples, rec.ProcessSamples...)
				s.Processes = append(s.Processes, rec.Processes...)
			}
		}
	}
	if r.seg == nil {
		return nil
	}
	return r.seg.write(rec, time.Now())
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
	case sampler.KindProcesses:
		// A poll that found nothing writes nothing: a process is on the GPU from its first row to its last.
		if err := w.WriteProcessSamples(rec.GPU, rec.ProcessSamples); err != nil {
			return err
		}
		return w.WriteProcesses(rec.GPU, rec.Processes)
	}
	return nil
}

// Stop unsubscribes, records what is still queued, merges the trace file and returns the in-memory trace (nil
// without Memory). The sampler should have stopped first so its final drain is included.
func (r *Recorder) Stop() (*trace.Trace, error) {
	r.sub.Close()
	<-r.done
	err := r.err
	if d := r.sub.Dropped(); d > 0 {
		err = errors.Join(err, fmt.Errorf("recorder dropped %d records (queue full)", d))
	}
	if r.seg != nil {
		if ferr := r.seg.finish(); ferr != nil {
			err = errors.Join(err, ferr)
		}
	}
	if r.mem != nil {
		for _, s := range r.mem.GPUs {
			s.Sort()
		}
	}
	return r.mem, err
}
