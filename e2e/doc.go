// Package e2e holds the tests that cross the tools: one run measured by lem-run and seen again through its run
// directory, lem-exporter's recording and a Prometheus pull. It has no code of its own.
package e2e
