// Package parallel runs the iterations of a loop on several goroutines: the one loop the analyzer's parallel
// steps (run accounting, the running integral's blocks, the lag fit's intervals and candidates) share.
package parallel

import (
	"sync"
	"sync/atomic"
)

// For calls fn(0..n-1) on up to workers goroutines, each taking the next index as it finishes one (indices are
// handed out in order, their calls overlap); inline for one worker or one index. fn must be safe to run
// concurrently for different indices.
func For(n, workers int, fn func(i int)) {
	workers = min(workers, n)
	if workers <= 1 {
		for i := range n {
			fn(i)
		}
		return
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := int(next.Add(1)) - 1; i < n; i = int(next.Add(1)) - 1 {
				fn(i)
			}
		})
	}
	wg.Wait()
}
