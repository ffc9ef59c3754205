//go:build race

package exporter_test

// raceEnabled is true under the race detector, whose instrumentation slows every goroutine several times:
// tests that hold the exporter to real-time load cannot hold it there.
const raceEnabled = true
