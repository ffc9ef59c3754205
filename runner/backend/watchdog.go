package backend

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"time"

	"github.com/moby/moby/client"

	"github.com/lem-energy/lem/internal/manifest"
)

// A watchdog makes sure a workload never outlives lem-run, even one killed with SIGKILL: a small process of its own
// (lem-run's hidden "watchdog" command, in a session of its own so terminal signals do not reach it) holds the read
// end of a pipe whose write end only lem-run holds. lem-run writes "done" when it has finished with the workload;
// if the pipe closes without it, lem-run died: the watchdog stops the workload (its process group, or its
// container) and marks the run directory crashed.

// watchdogDone is what lem-run writes when the workload is its own to end.
const watchdogDone = "done\n"

// Watchdog starts watchdogs with the lem-run executable Exe; empty Exe: no watchdog (the workload still dies with
// lem-run's thread through PR_SET_PDEATHSIG, but not its children).
type Watchdog struct {
	Exe   string
	Grace time.Duration // between SIGTERM and SIGKILL (or the container's stop timeout)
}

// guard is a started watchdog.
type guard struct {
	w   *os.File
	cmd *exec.Cmd
}

// watch starts a watchdog for the workload named by args (--pgid N or --container ID) of the run in runDir.
func (wd Watchdog) watch(runDir string, args ...string) (*guard, error) {
	if wd.Exe == "" {
		return nil, nil
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("watchdog pipe: %w", err)
	}
	grace := wd.Grace
	if grace <= 0 {
		grace = 10 * time.Second
	}
	cmd := exec.Command(wd.Exe, append([]string{"watchdog", "--run-dir", runDir, "--grace", grace.String()}, args...)...)
	cmd.ExtraFiles = []*os.File{r} // fd 3
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		r.Close()
		w.Close()
		return nil, fmt.Errorf("starting the watchdog %s: %w", wd.Exe, err)
	}
	r.Close()
	return &guard{w: w, cmd: cmd}, nil
}

// release tells the watchdog lem-run is done with the workload, and waits for it to go.
func (g *guard) release() {
	if g == nil {
		return
	}
	io.WriteString(g.w, watchdogDone)
	g.w.Close()
	done := make(chan struct{})
	go func() { g.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		g.cmd.Process.Kill()
	}
}

// WatchOptions is what a watchdog process watches.
type WatchOptions struct {
	Parent    io.Reader // the pipe from lem-run (fd 3)
	PGID      int       // a process workload's group
	Container string    // a container workload's id
	RunDir    string
	Grace     time.Duration
	Log       *slog.Logger
}

// RunWatchdog is the watchdog process: it waits for lem-run to write "done" or to die. On death it stops the
// workload and marks the run directory's manifest crashed (its energy so far is in the trace segments, which
// lem-analyze reads).
func RunWatchdog(ctx context.Context, o WatchOptions) error {
	b, _ := io.ReadAll(io.LimitReader(o.Parent, 64))
	if string(b) == watchdogDone {
		return nil
	}
	o.Log.Warn("lem-run died while its workload ran: stopping the workload", "pgid", o.PGID, "container", o.Container,
		"run_dir", o.RunDir)
	var err error
	switch {
	case o.PGID > 0:
		err = stopGroup(o.PGID, o.Grace)
	case o.Container != "":
		err = stopContainer(ctx, o.Container, o.Grace)
	}
	return errors.Join(err, MarkCrashed(o.RunDir, "lem-run died while the workload ran (killed?); the workload was stopped by its watchdog"))
}

// stopGroup sends SIGTERM to a process group, then SIGKILL once grace has passed (or at once if it is gone).
func stopGroup(pgid int, grace time.Duration) error {
	if err := syscall.Kill(-pgid, syscall.SIGTERM); err != nil {
		if errors.Is(err, syscall.ESRCH) {
			return nil
		}
		return fmt.Errorf("stopping process group %d: %w", pgid, err)
	}
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) {
		if syscall.Kill(-pgid, 0) != nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	syscall.Kill(-pgid, syscall.SIGKILL)
	return nil
}

func stopContainer(ctx context.Context, id string, grace time.Duration) error {
	cli, err := client.New(client.FromEnv)
	if err != nil {
		return fmt.Errorf("docker client: %w", err)
	}
	defer cli.Close()
	secs := int(grace.Seconds())
	if _, err := cli.ContainerStop(ctx, id, client.ContainerStopOptions{Timeout: &secs}); err != nil {
		return fmt.Errorf("stopping container %.12s: %w", id, err)
	}
	return nil
}

// MarkCrashed turns a run directory's provisional manifest (status running) into a crashed one, keeping all it
// holds; a manifest with another status is left as it is.
func MarkCrashed(runDir, why string) error {
	if runDir == "" {
		return nil
	}
	m, err := manifest.Read(runDir)
	if err != nil {
		return err
	}
	if m.Status != manifest.StatusRunning {
		return nil
	}
	m.Status, m.Error = manifest.StatusCrashed, why
	return manifest.Write(runDir, m)
}

// pgidArgs and containerArgs name the workload for the watchdog command line.
func pgidArgs(pgid int) []string       { return []string{"--pgid", strconv.Itoa(pgid)} }
func containerArgs(id string) []string { return []string{"--container", id} }
