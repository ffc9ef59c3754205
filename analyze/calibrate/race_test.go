//go:build race

package calibrate_test

// raceEnabled: the race detector slows the single-goroutine coverage simulations fivefold and has nothing to find
// in them; under it they run fewer trials.
const raceEnabled = true
