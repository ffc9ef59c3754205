// Command lem-exporter exports high-rate NVIDIA GPU power and energy metrics and experiment phase markers to
// Prometheus.
package main

import (
	"os"
	"strconv"

	"github.com/lem-energy/lem/exporter"
	"github.com/lem-energy/lem/internal/cli"
	"github.com/lem-energy/lem/internal/marker"
	"github.com/lem-energy/lem/internal/recorder"
)

type app struct {
	cli.Globals
	Serve  serveCmd       `cmd:"" default:"withargs" help:"Sample the GPUs and serve metrics (the default)."`
	Health healthcheckCmd `cmd:"" name:"healthcheck" help:"Exit 0 if a running exporter is ready (for container health checks)."`
}

func main() {
	var a app
	vars := cli.SamplerVars("2s", "1s")
	vars["max_active_runs"] = strconv.Itoa(marker.DefaultMaxActive)
	vars["max_ended_runs"] = strconv.Itoa(marker.DefaultMaxEnded)
	vars["run_grace"] = marker.DefaultGrace.String()
	vars["max_phase_names"] = strconv.Itoa(marker.DefaultMaxPhaseNames)
	vars["max_result_keys"] = strconv.Itoa(marker.DefaultMaxResultKeys)
	vars["record_flush"] = recorder.DefaultFlushEvery.String()
	vars["max_requests"] = strconv.Itoa(exporter.DefaultMaxRequestsInFlight)
	vars["max_sample_requests"] = strconv.Itoa(exporter.DefaultMaxSampleRequests)
	vars["max_samples_per_response"] = strconv.Itoa(exporter.DefaultMaxSamplesPerResponse)
	vars["sample_write_timeout"] = exporter.DefaultSampleWriteTimeout.String()
	vars["remote_write_queue"] = strconv.Itoa(exporter.DefaultRemoteWriteQueueSamples)
	os.Exit(cli.Main(&a, &a.Globals, "lem-exporter",
		"Prometheus exporter of high-rate NVIDIA GPU power, energy and experiment phase markers.", vars, nil))
}
