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
	why := "lem-run died while the workload ran (killed?); the workload was stopped by its watchdog"
	switch {
	case o.PGID > 0:
		return errors.Join(stopGroup(o.PGID, o.Grace), MarkCrashed(o.RunDir, why))
	case o.Container != "":
		img, c, err := stopContainer(ctx, o.Container, o.Grace)
		return errors.Join(err, markCrashed(o.RunDir, why, img, c))
	}
	return MarkCrashed(o.RunDir, why)
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

// stopContainer stops a container and returns what the run's manifest records about it.
func stopContainer(ctx context.Context, id string, grace time.Duration) (*manifest.Image, *manifest.Container, error) {
	cli, err := client.New(client.FromEnv)
	if err != nil {
		return nil, nil, fmt.Errorf("docker client: %w", err)
	}
	defer cli.Close()
	var img *manifest.Image
	c := &manifest.Container{ID: id}
	if ins, err := cli.ContainerInspect(ctx, id, client.ContainerInspectOptions{}); err == nil {
		w := dockerWorkload{id: id}
		w.record(ins.Container)
		c = &w.c
		c.ID, c.ExitCode = id, nil // stopped by the watchdog: not an exit of its own
		if ins.Container.Config != nil {
			img = &manifest.Image{Name: ins.Container.Config.Image, ID: ins.Container.Image}
		}
	}
	secs := int(grace.Seconds())
	if _, err := cli.ContainerStop(ctx, id, client.ContainerStopOptions{Timeout: &secs}); err != nil {
		return img, c, fmt.Errorf("stopping container %.12s: %w", id, err)
	}
	return img, c, nil
}

// MarkCrashed turns a run directory's provisional manifest (status running) into a crashed one, keeping all it
// holds; a manifest with another status is left as it is.
func MarkCrashed(runDir, why string) error { return markCrashed(runDir, why, nil, nil) }

// markCrashed is MarkCrashed that also records the run's image and container where the manifest has none, and
// ends the run's times when its runner's death was noticed (lem-analyze accounts it up to its last sample).
func markCrashed(runDir, why string, img *manifest.Image, c *manifest.Container) error {
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
	if m.Times.End.IsZero() && !time.Now().Before(m.Times.Start) {
		m.Times.End = time.Now().UTC()
	}
	if m.Image == nil {
		m.Image = img
	}
	if m.Container == nil {
		m.Container = c
	}
	return manifest.Write(runDir, m)
}

// pgidArgs and containerArgs name the workload for the watchdog command line.
func pgidArgs(pgid int) []string       { return []string{"--pgid", strconv.Itoa(pgid)} }
func containerArgs(id string) []string { return []string{"--container", id} }
