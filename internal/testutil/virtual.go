package testutil

import (
	"runtime"
	"testing"
	"testing/synctest"
)

// VirtualTime runs f in a synctest bubble. Inside it time.Now, time.Sleep, timers and tickers, and so every
// gpu.Clock (the wall clock, the replay's scaled clock, the go-nvml mock's stamps), run on a fake clock that moves
// only when every goroutine of the bubble is blocked: a test's time.Sleep(d) advances exactly d, after everything
// due before has run, and synctest.Wait returns once the goroutines it woke are waiting again. No assertion then
// depends on how busy the host is. f must stop every goroutine it starts (the bubble waits for them).
//
// Afterwards the sync.Pools are emptied: parquet-go keeps its zstd coders in a package-level pool, and a coder
// made inside a bubble holds channels of that bubble, which the runtime refuses (a fatal error, not a panic) to
// use from outside it. Two collections drop every pooled object. For the same reason a test using VirtualTime must
// not run in parallel (t.Parallel) with one that reads or writes traces.
func VirtualTime(t *testing.T, f func(t *testing.T)) {
	t.Helper()
	synctest.Test(t, f)
	runtime.GC()
	runtime.GC()
}
