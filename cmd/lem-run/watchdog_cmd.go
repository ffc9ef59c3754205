package main

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/lem-energy/lem/runner/backend"
)

// watchdogCmd is started by lem-run beside a workload: it stops the workload if lem-run dies (hidden: not for
// people to run).
type watchdogCmd struct {
	PGID      int           `name:"pgid" help:"Process group of a process workload."`
	Container string        `help:"Container of a container workload."`
	RunDir    string        `name:"run-dir" help:"Run directory to mark crashed."`
	Grace     time.Duration `default:"10s" help:"Grace period between SIGTERM and SIGKILL."`
}

func (c *watchdogCmd) Run(ctx context.Context, log *slog.Logger) error {
	// Interrupts are lem-run's to handle: the watchdog only acts when lem-run is gone.
	signal.Ignore(os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	parent := os.NewFile(3, "lem-run")
	defer parent.Close()
	return backend.RunWatchdog(context.Background(), backend.WatchOptions{Parent: parent, PGID: c.PGID,
		Container: c.Container, RunDir: c.RunDir, Grace: c.Grace, Log: log})
}

// watchdog is the watchdog every workload lem-run starts gets: this executable, run with the hidden watchdog
// command.
func watchdog(grace time.Duration) backend.Watchdog {
	exe, err := os.Executable()
	if err != nil {
		return backend.Watchdog{} // PR_SET_PDEATHSIG still ends the workload's own process
	}
	return backend.Watchdog{Exe: exe, Grace: grace}
}
