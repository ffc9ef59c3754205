// Package ordered runs indexed work on a few goroutines and hands the results over in index order, a bounded
// number ahead of the consumer: what a pull's chunks and a trace's row groups both need (parallel decoding or
// querying, strict time order downstream, memory bounded by the consumer's pace).
package ordered

import (
	"context"
	"sync"
)

// Run calls work(ctx, i) for every i in [0, n) on up to workers goroutines and consume(i, result) in index
// order, with at most ahead results (at least 1) computed and not yet consumed. It returns consume's first error,
// or ctx's error if ctx ends first; no goroutine outlives it, and the ctx work gets is cancelled on return.
func Run[T any](ctx context.Context, n, workers, ahead int, work func(ctx context.Context, i int) T,
	consume func(i int, v T) error) error {
	workers = max(min(workers, n), 1)
	results := make([]chan T, n)
	for i := range results {
		results[i] = make(chan T, 1)
	}
	ctx, cancel := context.WithCancel(ctx)
	slots := make(chan struct{}, max(ahead, 1))
	jobs := make(chan int)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(jobs)
		for i := range n {
			select {
			case slots <- struct{}{}:
			case <-ctx.Done():
				return
			}
			select {
			case jobs <- i:
			case <-ctx.Done():
				return
			}
		}
	}()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				results[i] <- work(ctx, i)
			}
		}()
	}
	defer func() { cancel(); wg.Wait() }()
	for i := range n {
		var v T
		select {
		case v = <-results[i]:
		case <-ctx.Done():
			return ctx.Err()
		}
		if err := consume(i, v); err != nil {
			return err
		}
		<-slots
	}
	return nil
}
