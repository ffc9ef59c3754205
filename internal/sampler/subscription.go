package sampler

import "sync/atomic"

// Subscription is one consumer's bounded queue. The sampler never waits on it: when the queue is full the record
// is dropped and counted, so a slow consumer loses its own data but never stalls sampling or other consumers.
type Subscription struct {
	Name    string
	ch      chan Record
	dropped atomic.Uint64
	s       *Sampler
}

// Subscribe registers a consumer with a queue of the given size.
func (s *Sampler) Subscribe(name string, size int) *Subscription {
	if size < 1 {
		size = 1
	}
	sub := &Subscription{Name: name, ch: make(chan Record, size), s: s}
	s.mu.Lock()
	s.subs[sub] = struct{}{}
	s.mu.Unlock()
	return sub
}

// C delivers the records. It is closed by Close.
func (sub *Subscription) C() <-chan Record { return sub.ch }

// Dropped is how many records were dropped because the queue was full.
func (sub *Subscription) Dropped() uint64 { return sub.dropped.Load() }

// Close unsubscribes and closes the channel; records still queued can be drained.
func (sub *Subscription) Close() {
	sub.s.mu.Lock()
	defer sub.s.mu.Unlock()
	if _, ok := sub.s.subs[sub]; ok {
		delete(sub.s.subs, sub)
		close(sub.ch)
	}
}

func (sub *Subscription) send(r Record) {
	select {
	case sub.ch <- r:
	default:
		sub.dropped.Add(1)
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
