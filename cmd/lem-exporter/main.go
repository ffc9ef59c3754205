// Command lem-exporter exports high-rate NVIDIA GPU power and energy metrics and experiment phase markers to
// Prometheus.
package main

import (
	"os"

	"github.com/alecthomas/kong"

	"github.com/lem-energy/lem/internal/cli"
)

type app struct {
	cli.Globals
	Serve   serveCmd       `cmd:"" default:"withargs" help:"Sample the GPUs and serve metrics (the default)."`
	Version cli.VersionCmd `cmd:"" help:"Print the version."`
	Health  healthcheckCmd `cmd:"" name:"healthcheck" help:"Exit 0 if a running exporter is ready (for container health checks)."`
}

func main() {
	var a app
	ctx := kong.Parse(&a, kong.Name("lem-exporter"),
		kong.Description("Prometheus exporter of high-rate NVIDIA GPU power, energy and experiment phase markers."),
		kong.UsageOnError(), kong.DefaultEnvars("LEM"), kong.Vars(cli.SamplerVars("2s", "1s")))
	ctx.FatalIfErrorf(ctx.Run(a.Globals.Logger(os.Stderr)))
}
