package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/alecthomas/kong"

	"github.com/lem-energy/lem/internal/meta"
)

// Usage marks an error found before anything was done (bad input): wrapped at the end of a message
// (fmt.Errorf("…%w", cli.Usage)) it adds nothing to the text and makes the exit status 2.
var Usage error = usageErr{}

type usageErr struct{}

func (usageErr) Error() string { return "" }

// Main parses the command line into app (whose Globals are g), binds a context cancelled by SIGINT/SIGTERM and
// the logger the flags ask for, runs the chosen command (through around, if given) and returns the process's
// exit status, having printed any error as one line naming what failed.
func Main(app any, g *Globals, name, description string, vars kong.Vars, around func(run func() error) error) int {
	if vars == nil {
		vars = kong.Vars{}
	}
	vars["version"] = name + " " + meta.LemVersion()
	// kong exits 80 on a flag it cannot parse; every lem tool says "bad usage" with 2, whoever caught it.
	exit := kong.Exit(func(code int) {
		if code == 80 {
			code = 2
		}
		os.Exit(code)
	})
	parser, err := kong.New(app, kong.Name(name), kong.Description(description), kong.UsageOnError(),
		kong.DefaultEnvars("LEM"), vars, exit)
	if err != nil {
		panic(err) // a malformed app struct is a programming error
	}
	kctx, err := parser.Parse(os.Args[1:])
	parser.FatalIfErrorf(err)
	log := g.Logger(os.Stderr)
	slog.SetDefault(log)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	kctx.BindTo(ctx, (*context.Context)(nil))
	kctx.Bind(log)
	run := func() error { return kctx.Run() }
	if around != nil {
		return ExitStatus(name, around(run), os.Stderr)
	}
	return ExitStatus(name, run(), os.Stderr)
}

// ExitStatus prints err (if any) as one line "name: error" on w and returns the exit status: an ExitError's code,
// 2 for usage errors, 1 for anything else.
func ExitStatus(name string, err error, w io.Writer) int {
	if err == nil {
		return 0
	}
	code := 1
	var ee *ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.Code
	case errors.Is(err, Usage):
		code = 2
	}
	fmt.Fprintf(w, "%s: %v\n", name, err)
	return code
}
