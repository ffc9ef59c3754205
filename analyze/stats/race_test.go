//go:build race

package stats

// raceEnabled: the race detector slows these single-goroutine simulations tenfold and has nothing to find in them.
const raceEnabled = true
