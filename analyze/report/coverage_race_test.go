//go:build race

package report

// raceEnabled: the race detector slows the coverage simulation about tenfold; it runs fewer recordings then.
const raceEnabled = true
