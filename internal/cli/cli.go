// Package cli holds what lem's three commands share on the command line: logging flags and the version command.
package cli

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"syscall"
	"time"

	"github.com/lem-energy/lem/internal/meta"
)

// Globals are flags every command takes.
type Globals struct {
	LogLevel  string `name:"log.level" default:"info" enum:"debug,info,warn,error" help:"Log level (${enum})."`
	LogFormat string `name:"log.format" default:"text" enum:"text,json" help:"Log format (${enum})."`
}

// Logger builds the slog logger the flags ask for.
func (g Globals) Logger(w io.Writer) *slog.Logger {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(g.LogLevel))
	opts := &slog.HandlerOptions{Level: lvl}
	if g.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// VersionCmd prints the version.
type VersionCmd struct{}

// Run prints lem's version.
func (VersionCmd) Run() error {
	fmt.Println("lem", meta.LemVersion())
	return nil
}

// ExitError carries a child's exit code up to main, the only place that exits.
type ExitError struct {
	Code int
	Err  error
}

func (e *ExitError) Error() string { return e.Err.Error() }
func (e *ExitError) Unwrap() error { return e.Err }

// ExitCode returns the code of an ExitError in err's chain.
func ExitCode(err error) (int, bool) {
	var ee *ExitError
	if errors.As(err, &ee) {
		return ee.Code, true
	}
	return 0, false
}

// ProcessCPU is the CPU time (user + system) this process has used so far.
func ProcessCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
