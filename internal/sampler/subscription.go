package sampler

import (
	"sync"
	"sync/atomic"
)

// A subscription holds records that find its queue full in an overflow list, in order, within bounds: markers
// (phases, results) are never dropped for a burst — 100,000 phase markers in a fraction of a second all reach the
// recorder — and neither are the sample batches queued behind them, but a consumer that stops reading cannot take
// the host's memory.
// Events wait up to MaxPendingEvents; other records (sample batches, counter reads, telemetry) up to the
// subscription's queue size again.
const MaxPendingEvents = 1 << 20

// Subscription is one consumer's bounded queue. The sampler never waits on it: when the queue is full a record
// waits in a bounded overflow list (in order), and beyond that bound it is dropped and counted, so a slow
// consumer loses its own data but never stalls sampling or other consumers.
type Subscription struct {
	Name    string
	ch      chan Record
	dropped atomic.Uint64
	s       *Sampler

	mu      sync.Mutex
	pending []Record // records waiting for room in ch, oldest first
	data    int      // of which not events
	wake    chan struct{}
	closing bool
}

// Subscribe registers a consumer with a queue of the given size.
func (s *Sampler) Subscribe(name string, size int) *Subscription {
	if size < 1 {
		size = 1
	}
	sub := &Subscription{Name: name, ch: make(chan Record, size), s: s, wake: make(chan struct{}, 1)}
	go sub.forward()
	s.mu.Lock()
	s.subs[sub] = struct{}{}
	s.mu.Unlock()
	return sub
}

// C delivers the records. It is closed by Close.
func (sub *Subscription) C() <-chan Record { return sub.ch }

// Dropped is how many records were dropped because the queue was full.
func (sub *Subscription) Dropped() uint64 { return sub.dropped.Load() }

// Close unsubscribes; the channel closes once the records still pending have been queued, so a consumer that
// reads until the channel closes gets every record sent before Close.
func (sub *Subscription) Close() {
	sub.s.mu.Lock()
	_, ok := sub.s.subs[sub]
	delete(sub.s.subs, sub) // no send after this: sends run under the sampler's read lock
	sub.s.mu.Unlock()
	if !ok {
		return
	}
	sub.mu.Lock()
	sub.closing = true
	sub.mu.Unlock()
	sub.signal()
}

func (sub *Subscription) signal() {
	select {
	case sub.wake <- struct{}{}:
	default:
	}
}

func (sub *Subscription) send(r Record) {
	sub.mu.Lock()
	if len(sub.pending) == 0 {
		select {
		case sub.ch <- r:
			sub.mu.Unlock()
			return
		default:
		}
	}
	event := r.Kind == KindEvent
	if (event && len(sub.pending)-sub.data >= MaxPendingEvents) || (!event && sub.data >= cap(sub.ch)) {
		sub.mu.Unlock()
		sub.dropped.Add(1)
		return
	}
	sub.pending = append(sub.pending, r)
	if !event {
		sub.data++
	}
	sub.mu.Unlock()
	sub.signal()
}

// forward moves pending records into the queue as room appears, and closes the queue after Close once nothing
// is pending.
func (sub *Subscription) forward() {
	defer close(sub.ch)
	for range sub.wake {
		for {
			sub.mu.Lock()
			if len(sub.pending) == 0 {
				closing := sub.closing
				sub.mu.Unlock()
				if closing {
					return
				}
				break
			}
			r := sub.pending[0]
			sub.mu.Unlock()
			sub.ch <- r // may wait: the consumer reads until the channel closes
			sub.mu.Lock()
			if r.Kind != KindEvent {
				sub.data--
			}
			sub.pending = sub.pending[1:]
			if len(sub.pending) == 0 {
				sub.pending = nil // let the burst's backing array go
			}
			sub.mu.Unlock()
		}
	}
}

// Subscriptions lists the current subscribers' names and drop counts.
func (s *Sampler) Subscriptions() map[string]uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make(map[string]uint64, len(s.subs))
	for sub := range s.subs {
		out[sub.Name] += sub.Dropped()
	}
	return out
}
