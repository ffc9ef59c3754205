package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"

	"github.com/lem-energy/lem/runner/backend"
	"github.com/lem-energy/lem/runner/introspect"
)

type introspectCmd struct {
	Backend string   `required:"" enum:"transformers,vllm,tensorrt-llm,python" help:"Inference backend: transformers, vllm, tensorrt-llm, or python (any module:attr given with --target)."`
	Image   string   `help:"Introspect inside this image (Docker); without it, with --python on this host."`
	Python  string   `default:"python3" help:"Python interpreter (in the image, or on this host)."`
	Target  []string `help:"module:attr to catalogue (backend python; repeatable)."`
	Output  string   `short:"o" help:"Write the catalogue to this file (default: stdout)."`
}

func (c *introspectCmd) Run(ctx context.Context, log *slog.Logger) error {
	var ex introspect.Executor = introspect.Process{Python: c.Python}
	if c.Image != "" {
		d, err := backend.NewDocker(backend.DockerOptions{Image: c.Image})
		if err != nil {
			return err
		}
		defer d.Close()
		if err := d.Preflight(ctx); err != nil {
			return err
		}
		ex = d
	}
	cat, err := introspect.Capture(ctx, ex, c.Python, c.Backend, c.Target)
	if err != nil {
		return err
	}
	if c.Output != "" {
		if err := cat.Save(c.Output); err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "%s %s: %d parameters → %s\n", cat.Backend, cat.Version, len(cat.Parameters), c.Output)
		return nil
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(cat)
}
