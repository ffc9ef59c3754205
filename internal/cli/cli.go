// Package cli holds what lem's three commands share on the command line: the main wiring (signals, logger,
// exit status), logging and version flags, GPU source and sampler flags.
package cli

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/alecthomas/kong"
)

// Globals are flags every command takes.
type Globals struct {
	LogLevel  string           `name:"log.level" default:"info" enum:"debug,info,warn,error" help:"Log level (${enum})."`
	LogFormat string           `name:"log.format" default:"text" enum:"text,json" help:"Log format (${enum})."`
	Version   kong.VersionFlag `help:"Print the version and exit."`
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

// ExitError carries a child's exit code up to main, the only place that exits.
type ExitError struct {
	Code int
	Err  error
}

func (e *ExitError) Error() string { return e.Err.Error() }
func (e *ExitError) Unwrap() error { return e.Err }

// ProcessCPU is the CPU time (user + system) this process has used so far.
func ProcessCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// ReadSecret reads a token or password file named by flag: trimmed, and an empty file is an error.
func ReadSecret(flag, path string) (string, error) {
	if path == "" {
		return "", nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("%s: %w%w", flag, err, Usage)
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", fmt.Errorf("%s %s is empty%w", flag, path, Usage)
	}
	return s, nil
}

// IsTerminal says whether f is a terminal (progress lines redraw in place there).
func IsTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
