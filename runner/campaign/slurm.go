package campaign

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/lem-energy/lem/analyze/report"
	"github.com/lem-energy/lem/internal/fileutil"
	"github.com/lem-energy/lem/internal/manifest"
	"github.com/lem-energy/lem/internal/meta"
)

// Slurm carries out a campaign as Slurm jobs, Slurm being the scheduler: each run is one job (sbatch) that runs
// `lem-run campaign --run-one RUN` on the node Slurm chose, on the GPUs it granted, writing the run's directory
// into the campaign directory (which every node must see at the same path). The jobs carry the run id as their
// name and lem's own name for the submission as their comment; campaign.json records every submission. Runs
// whose job fails for the cluster's reasons (node failure, preemption, a job the controller lost, a runner
// that died) are submitted again, up to executor.max_attempts times in one execution; a run's own failure and a
// job someone cancelled wait for the next execution, as the local executor redoes failed runs when run again.
type Slurm struct {
	// LemRun is the lem-run the jobs execute (default: executor.lem_run, else this executable's path).
	LemRun string
	// Args are options of lem-run campaign every job gets before its own (the GPU source, the sampler's cadence,
	// the exporter to mirror markers to).
	Args []string
	// Env is the environment of Slurm's commands (nil: this process's); jobs inherit it through sbatch.
	Env []string
	// Detach returns once the runs to submit are submitted, without following the jobs.
	Detach bool
	// Cancel cancels the campaign's queued and running jobs (scancel) instead of submitting.
	Cancel bool
	// Poll overrides executor.poll.
	Poll time.Duration
}

var _ Executor = (*Slurm)(nil)

// Name is "slurm".
func (*Slurm) Name() string { return "slurm" }

// slurmRun is the follower's view of one run.
type slurmRun struct {
	i     int
	pl    *Planned
	rs    *RunState
	mine  bool // the run directory's manifest is from one of the run's submissions
	retry bool // the last submission failed for the cluster's reasons: submit again
}

// follower is one execution's state of the Slurm executor.
type follower struct {
	s        *Slurm
	x        *Execution
	cli      slurmCLI
	out      string // the campaign directory, absolute
	file     string // the campaign file, absolute
	lemRun   string
	poll     time.Duration
	progress *Progress
	shown    map[string]string // run → the status last shown
	summary  string
	began    map[string]time.Time // run → when it was first seen running
	walls    []time.Duration      // runs seen from running to their end: wall time per run
}

func (s *Slurm) follower(x *Execution) (*follower, error) {
	f := x.Prepared.File
	fw := &follower{s: s, x: x, cli: slurmCLI{Env: s.Env}, poll: s.Poll, progress: x.Options.Progress,
		shown: map[string]string{}, began: map[string]time.Time{}}
	if fw.poll <= 0 {
		fw.poll = f.Executor.poll()
	}
	if fw.progress == nil {
		fw.progress = NewProgress(io.Discard, false)
	}
	var err error
	if fw.out, err = filepath.Abs(x.Prepared.out); err != nil {
		return nil, err
	}
	if fw.file, err = filepath.Abs(f.path); err != nil {
		return nil, err
	}
	fw.lemRun = s.LemRun
	if fw.lemRun == "" {
		fw.lemRun = f.Executor.LemRun
	}
	if fw.lemRun == "" {
		if fw.lemRun, err = os.Executable(); err != nil {
			return nil, fmt.Errorf("lem-run's own path (set executor.lem_run): %w", err)
		}
	}
	return fw, nil
}

// slurmDir in the campaign directory holds the job scripts (scripts/RUN.N.sh) and the jobs' own output
// (logs/RUN.JOBID.out: lem-run's log on the node; the workload's output is in the run directory).
const slurmDir = ".slurm"

// Reconcile reads the jobs' states from Slurm and the run directories, submitting nothing.
func (s *Slurm) Reconcile(ctx context.Context, x *Execution) error {
	fw, err := s.follower(x)
	if err != nil {
		return err
	}
	_, err = fw.reconcile(ctx)
	return err
}

// Execute submits every run not ok (in plan order, with the dependencies executor.order asks for) and follows
// the jobs until every run has ended, submitting again those lost to the cluster. It returns ctx's error when
// interrupted; the jobs stay with Slurm, and running lem-run campaign again follows them.
func (s *Slurm) Execute(ctx context.Context, x *Execution) error {
	fw, err := s.follower(x)
	if err != nil {
		return err
	}
	if s.Cancel {
		return fw.cancel(ctx)
	}
	fw.progress.Note("executor slurm: runs are jobs of lem-run %s on the nodes; campaign directory %s", fw.lemRun, fw.out)
	for {
		runs, err := fw.reconcile(ctx)
		if err != nil {
			// The controller may be restarting: keep what is known, submit nothing, ask again.
			x.Options.Log.Warn("reading the jobs' states from Slurm failed; trying again", "err", err, "in", fw.poll)
		} else {
			fw.show(runs)
			left, err := fw.submit(ctx, runs)
			x.Save()
			fw.show(runs)
			if err != nil {
				return err
			}
			if !left && (!fw.busy(runs) || s.Detach) {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			n := len(x.State.inCluster())
			x.Options.Log.Warn(fmt.Sprintf("no longer following: %d run(s) stay with Slurm; lem-run campaign again follows them, --cancel cancels them", n))
			return ctx.Err()
		case <-time.After(fw.poll):
		}
	}
}

// busy says whether a run is queued or running, or its job has not ended yet (lem-run writes the manifest
// before it exits).
func (fw *follower) busy(runs []*slurmRun) bool {
	for _, r := range runs {
		if j := last(r.rs); r.rs.Status == StatusQueued || r.rs.Status == StatusRunning || j != nil && slurmActive(j.State) {
			return true
		}
	}
	return false
}

// last is a run's latest submission.
func last(rs *RunState) *Job {
	if len(rs.Jobs) == 0 {
		return nil
	}
	return &rs.Jobs[len(rs.Jobs)-1]
}

// reconcile updates every submitted run's jobs from squeue (and sacct, or the jobcomp log, for jobs the
// controller has forgotten) and its status from its run directory: the manifest is the truth about what was
// measured, Slurm about where a job is.
func (fw *follower) reconcile(ctx context.Context) ([]*slurmRun, error) {
	st := fw.x.State
	var ids []string
	for i := range st.Runs {
		for _, j := range st.Runs[i].Jobs {
			if j.State == "" || slurmActive(j.State) { // an ended job's state is final
				ids = append(ids, j.ID)
			}
		}
	}
	known := map[string]slurmJob{}
	if len(ids) > 0 {
		q, err := fw.cli.squeue(ctx, ids)
		if err != nil {
			return nil, err
		}
		for _, j := range q {
			known[j.ID] = j
		}
		var gone []string
		for i := range st.Runs {
			for _, j := range st.Runs[i].Jobs {
				// A job id names our job only with our run id and submission: after a controller crash the id
				// may be another job's.
				if k, ok := known[j.ID]; !ok || k.Name != st.Runs[i].RunID || k.Comment != j.Submission {
					delete(known, j.ID)
					if !ok && slices.Contains(ids, j.ID) {
						gone = append(gone, j.ID)
					}
				}
			}
		}
		if len(gone) > 0 {
			acc, err := fw.cli.sacct(ctx, gone)
			if err != nil {
				fw.x.Options.Log.Debug("sacct (and sacct --completion) have no record", "err", err)
			}
			for _, j := range acc {
				known[j.ID] = j
			}
		}
	}
	runs := make([]*slurmRun, len(st.Runs))
	for i := range st.Runs {
		r := &slurmRun{i: i, pl: &fw.x.Prepared.Plan[i], rs: &st.Runs[i]}
		runs[i] = r
		for k := range r.rs.Jobs {
			j := &r.rs.Jobs[k]
			if sj, ok := known[j.ID]; ok && sj.Name == r.rs.RunID {
				j.State, j.Reason = sj.State, sj.Reason
				if sj.Node != "" && sj.Node != "(null)" {
					j.Node = sj.Node
				}
			} else if j.State == "" || slurmActive(j.State) {
				j.State, j.Reason = "LOST", "the controller has no record of it"
			}
		}
		if j := last(r.rs); j != nil {
			fw.status(r, j)
		}
	}
	return runs, nil
}

// status sets a submitted run's status from its run directory and its latest job.
func (fw *follower) status(r *slurmRun, j *Job) {
	rs := r.rs
	dir := filepath.Join(fw.out, rs.RunID)
	rs.Attempts = report.Attempts(fw.out, rs.RunID, nil)
	m, _ := manifest.Read(dir)
	if m != nil && m.Job != nil {
		r.mine = slices.ContainsFunc(rs.Jobs, func(jj Job) bool { return jj.Submission == m.Job.Submission })
	}
	fromLast := r.mine && m.Job.Submission == j.Submission
	rs.Node = j.Node
	if r.mine {
		rs.Node = m.Job.Node
	}
	switch {
	case slurmActive(j.State) && !fromLast:
		rs.Status, rs.Error, rs.DurationS = StatusRunning, "", 0
		if j.State == "PENDING" || strings.HasPrefix(j.State, "REQUEUE") {
			rs.Status = StatusQueued
			if j.Reason != "" && j.Reason != "None" {
				rs.Error = "waiting: " + j.Reason
			}
		}
	case r.mine && m.Status == manifest.StatusRunning:
		rs.Status, rs.Error, rs.DurationS = StatusRunning, "", 0
		// A runner that outlived its job (its node's slurmd died) may still finish; one known gone crashed.
		if !slurmActive(j.State) && !alive(m.Runner) {
			rs.Status = manifest.StatusCrashed
			rs.Error = fmt.Sprintf("job %s ended %s while lem-run measured the run on %s (its node failed, or it was killed)",
				jobOf(m, j), j.State, m.Job.Node)
		}
	case r.mine:
		rs.Status, rs.Error, rs.DurationS = m.Status, m.Error, m.Times.DurationS
		note := ""
		switch {
		case j.State == "TIMEOUT" && fromLast:
			note = "job " + j.ID + " reached its Slurm time limit: raise executor.time_limit"
		case j.State == "CANCELLED" && fromLast:
			note = "job " + j.ID + " was cancelled"
		}
		switch {
		case note == "":
		case rs.Error == "":
			rs.Error = note
		default:
			rs.Error += " (" + note + ")"
		}
	default:
		rs.Status, rs.DurationS = manifest.StatusError, 0
		rs.Error = fmt.Sprintf("job %s ended %s", j.ID, j.State)
		if j.Reason != "" && j.Reason != "None" {
			rs.Error += " (" + j.Reason + ")"
		}
		rs.Error += " before lem-run measured the run"
		if tail := logTail(filepath.Join(fw.out, slurmDir, "logs", rs.RunID+"."+j.ID+".out")); tail != "" {
			rs.Error += ": " + tail
		}
	}
	// What the cluster did to the job is worth another submission; what the run did, or a person, is not.
	switch {
	case slurmActive(j.State), rs.Status == manifest.StatusOK:
		r.retry = false
	case j.State == "CANCELLED":
		r.retry = false
	case j.State == "NODE_FAIL", j.State == "PREEMPTED", j.State == "BOOT_FAIL", j.State == "LOST",
		rs.Status == manifest.StatusCrashed:
		r.retry = true
	default:
		r.retry = !fromLast // the job failed before measuring (it never wrote its manifest)
	}
}

// alive says whether a runner is known to be running: on this host, with its process still there.
func alive(p *meta.Process) bool {
	if p == nil {
		return false
	}
	h, _ := os.Hostname()
	return p.Host == h && !p.Gone()
}

func jobOf(m *manifest.Manifest, j *Job) string {
	if m.Job != nil && m.Job.ID != "" {
		return m.Job.ID
	}
	return j.ID
}

// logTail is the last non-empty line of a job's output, for errors.
func logTail(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return ""
	}
	const tail = 4096
	off := max(0, st.Size()-tail)
	b := make([]byte, st.Size()-off)
	if _, err := f.ReadAt(b, off); err != nil && !errors.Is(err, io.EOF) {
		return ""
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return clip(strings.TrimSpace(lines[len(lines)-1]))
}

// submit submits the runs that need a job: those not ok without one in this execution, and those whose latest
// job the cluster lost while submissions remain. left says whether some could not be submitted now (the
// controller did not answer) and wait for the next poll.
func (fw *follower) submit(ctx context.Context, runs []*slurmRun) (left bool, err error) {
	spec := fw.x.Prepared.File.Executor
	for _, r := range runs {
		rs := r.rs
		if rs.Status == manifest.StatusOK || rs.Status == StatusQueued || rs.Status == StatusRunning {
			continue
		}
		n := 0
		for _, j := range rs.Jobs {
			if !j.Submitted.Before(fw.x.Began) {
				n++
			}
		}
		switch {
		case n > 0 && !r.retry:
			continue // its outcome stands until the campaign is executed again
		case n >= spec.maxAttempts():
			if r.retry {
				rs.Error = strings.TrimSuffix(rs.Error, ".") + fmt.Sprintf("; not submitted again: %d submissions (executor.max_attempts)", n)
				r.retry = false
			}
			continue
		}
		if err := fw.sbatch(ctx, r); err != nil {
			if transient(err) {
				fw.x.Options.Log.Warn("sbatch failed; trying again", "run", rs.RunID, "err", err, "in", fw.poll)
				return true, nil
			}
			fw.x.Stopped = r.pl
			return false, err
		}
	}
	return false, nil
}

// transient says whether a Slurm command failed because the controller did not answer (restarting, busy).
func transient(err error) bool {
	s := err.Error()
	for _, t := range []string{"Unable to contact slurm controller", "Socket timed out", "Connection refused",
		"Zero Bytes were transmitted", "Transport endpoint", "Resource temporarily unavailable"} {
		if strings.Contains(s, t) {
			return true
		}
	}
	return false
}

// sbatch writes the run's job script and submits it.
func (fw *follower) sbatch(ctx context.Context, r *slurmRun) error {
	spec, rs := fw.x.Prepared.File.Executor, r.rs
	n := len(rs.Jobs) + 1
	sub := fmt.Sprintf("lem:%s:%s:%d", fw.x.State.Instance, rs.RunID, n)
	args := []string{"campaign", "--out", fw.out, "--run-one", rs.RunID, "--submission", sub}
	args = append(args, fw.s.Args...)
	args = append(args, fw.file)
	for _, d := range []string{"scripts", "logs"} {
		if err := os.MkdirAll(filepath.Join(fw.out, slurmDir, d), 0o755); err != nil {
			return fmt.Errorf("campaign directory: %w", err)
		}
	}
	script := filepath.Join(fw.out, slurmDir, "scripts", fmt.Sprintf("%s.%d.sh", rs.RunID, n))
	body := fmt.Sprintf("#!/bin/sh\n# lem campaign %s, run %s (cycle %d), submission %d: measured on the node Slurm chose,\n# on the GPUs it granted; the run directory is %s.\nexec %s\n",
		fw.x.Prepared.File.Name, rs.RunID, rs.Cycle, n, filepath.Join(fw.out, rs.RunID), shellJoin(append([]string{fw.lemRun}, args...)))
	if err := fileutil.WriteAtomic(script, []byte(body)); err != nil {
		return fmt.Errorf("job script of run %s: %w", rs.RunID, err)
	}
	if err := os.Chmod(script, 0o755); err != nil {
		return fmt.Errorf("job script of run %s: %w", rs.RunID, err)
	}
	opts := []string{"--job-name=" + rs.RunID, "--comment=" + sub, "--no-requeue", "--chdir=" + fw.out,
		"--output=" + filepath.Join(fw.out, slurmDir, "logs", rs.RunID+".%j.out"), spec.gpuRequest()}
	for _, o := range []struct{ flag, v string }{{"--partition", spec.Partition}, {"--account", spec.Account},
		{"--qos", spec.QoS}} {
		if o.v != "" {
			opts = append(opts, o.flag+"="+o.v)
		}
	}
	if t := fw.x.Prepared.File.jobTimeLimit(); t > 0 {
		opts = append(opts, "--time="+slurmTime(t))
	}
	if spec.Exclusive {
		opts = append(opts, "--exclusive")
	}
	dep := fw.dependency(r)
	if dep != "" {
		opts = append(opts, "--dependency="+dep)
	}
	opts = append(opts, spec.Sbatch...)
	id, err := fw.cli.sbatch(ctx, opts, script)
	if err != nil {
		return fmt.Errorf("submitting run %s: %w", rs.RunID, err)
	}
	rs.Jobs = append(rs.Jobs, Job{ID: id, Submission: sub, Submitted: time.Now().UTC(), State: "PENDING", Dependency: dep})
	rs.Status, rs.Error, rs.Node, rs.DurationS = StatusQueued, "", "", 0
	r.retry = false
	return nil
}

// dependency is the --dependency a run's job gets: serial waits for the job submitted last that is still queued
// or running (which waits for those before it), cycles for every such job of an earlier cycle.
func (fw *follower) dependency(r *slurmRun) string {
	var ids []string
	var latest *Job
	for i := range fw.x.State.Runs {
		o := &fw.x.State.Runs[i]
		j := last(o)
		if o == r.rs || j == nil || !slurmActive(j.State) {
			continue
		}
		switch fw.x.Prepared.File.Executor.order() {
		case "serial":
			if latest == nil || j.Submitted.After(latest.Submitted) || j.Submitted.Equal(latest.Submitted) && jobLess(latest.ID, j.ID) {
				latest = j
			}
		case "cycles":
			if o.Cycle < r.rs.Cycle {
				ids = append(ids, j.ID)
			}
		}
	}
	if latest != nil {
		ids = []string{latest.ID}
	}
	if len(ids) == 0 {
		return ""
	}
	return "afterany:" + strings.Join(ids, ":")
}

func jobLess(a, b string) bool {
	x, _ := strconv.ParseUint(a, 10, 64)
	y, _ := strconv.ParseUint(b, 10, 64)
	return x < y
}

// shellJoin quotes words for sh.
func shellJoin(words []string) string {
	q := make([]string, len(words))
	for i, w := range words {
		q[i] = "'" + strings.ReplaceAll(w, "'", `'\''`) + "'"
	}
	return strings.Join(q, " ")
}

// cancel cancels every queued or running job of the campaign and waits until Slurm has ended them.
func (fw *follower) cancel(ctx context.Context) error {
	runs, err := fw.reconcile(ctx)
	if err != nil {
		return err
	}
	var ids []string
	for _, r := range runs {
		if j := last(r.rs); j != nil && slurmActive(j.State) {
			ids = append(ids, j.ID)
		}
	}
	if err := fw.cli.scancel(ctx, ids); err != nil {
		return err
	}
	fw.progress.Note("cancelled %d job(s) of campaign %s", len(ids), fw.x.Prepared.File.Name)
	for deadline := time.Now().Add(time.Minute); ; {
		if runs, err = fw.reconcile(ctx); err == nil && !fw.busyJobs(runs) || time.Now().After(deadline) {
			break
		}
		if err := sleep(ctx, min(fw.poll, time.Second)); err != nil {
			return err
		}
	}
	fw.x.Save()
	fw.show(runs)
	return err
}

func (fw *follower) busyJobs(runs []*slurmRun) bool {
	for _, r := range runs {
		if j := last(r.rs); j != nil && slurmActive(j.State) {
			return true
		}
	}
	return false
}

// show prints each run's change of status once, and the campaign's counts with an ETA when they change.
func (fw *follower) show(runs []*slurmRun) {
	now := time.Now()
	for _, r := range runs {
		rs := r.rs
		t0, seen := fw.began[rs.RunID]
		switch {
		case rs.Status == StatusRunning && !seen:
			fw.began[rs.RunID] = now
		case rs.Status != StatusRunning && rs.Status != StatusQueued && seen:
			fw.walls = append(fw.walls, now.Sub(t0))
			delete(fw.began, rs.RunID)
		}
		was := fw.shown[rs.RunID]
		key := rs.Status
		if j := last(rs); j != nil {
			key += " " + j.ID
		}
		if was == key || (was == "" && len(rs.Jobs) == 0) {
			continue
		}
		fw.shown[rs.RunID] = key
		j := last(rs)
		if j == nil {
			continue
		}
		where := ""
		if rs.Node != "" {
			where = " on " + rs.Node
		}
		msg := rs.Status
		switch rs.Status {
		case StatusQueued:
			msg = "queued"
		case StatusRunning:
		default:
			if rs.DurationS > 0 {
				where += fmt.Sprintf(", %.1f s workload", rs.DurationS)
			}
		}
		if rs.Error != "" && rs.Status != manifest.StatusOK {
			msg += ": " + rs.Error
		}
		fw.progress.Note("run %s (cycle %d, job %s%s): %s", rs.RunID, rs.Cycle, j.ID, where, msg)
	}
	var per time.Duration
	for _, w := range fw.walls {
		per += w / time.Duration(len(fw.walls))
	}
	if s := Summary(fw.x.State, per); s != fw.summary {
		fw.summary = s
		fw.progress.Note("%s", s)
	}
}

// Counts are a campaign's runs by where they stand.
type Counts struct {
	Pending, Queued, Running, OK, NotOK, Total int
	ETA                                        time.Duration // 0: unknown
}

// Count counts the runs of a campaign's state and estimates the time left from how long a run takes (per; 0:
// the workload durations of the runs done, which leave out baselines and cool-downs) and how many run at once.
func Count(st *State, per time.Duration) Counts {
	var c Counts
	var spent time.Duration
	done := 0
	for _, r := range st.Runs {
		c.Total++
		switch r.Status {
		case StatusPending:
			c.Pending++
		case StatusQueued:
			c.Queued++
		case StatusRunning:
			c.Running++
		case manifest.StatusOK:
			c.OK++
		default:
			c.NotOK++
		}
		if r.Status == manifest.StatusOK && r.DurationS > 0 {
			spent += time.Duration(r.DurationS * float64(time.Second))
			done++
		}
	}
	if per == 0 && done > 0 {
		per = spent / time.Duration(done)
	}
	if left := c.Pending + c.Queued + c.Running; per > 0 && left > 0 {
		c.ETA = time.Duration((left+max(c.Running, 1)-1)/max(c.Running, 1)) * per
	}
	return c
}

// Summary is one line of a campaign's counts: queued, running, done, not ok and the ETA (per as for Count).
func Summary(st *State, per time.Duration) string {
	c := Count(st, per)
	s := fmt.Sprintf("%d queued, %d running, %d ok, %d not ok", c.Queued, c.Running, c.OK, c.NotOK)
	if c.Pending > 0 {
		s += fmt.Sprintf(", %d not submitted", c.Pending)
	}
	s += fmt.Sprintf(" of %d runs", c.Total)
	if c.ETA > 0 {
		s += "; ETA ~" + c.ETA.Round(time.Second).String()
	}
	return s
}

// WriteStatus writes a campaign's state as a table: each run's status, latest job, its state and node, and the
// attempts, then the summary line.
func WriteStatus(w io.Writer, st *State) {
	fmt.Fprintf(w, "%-4s %-40s %-11s %-9s %-12s %-10s %s\n", "#", "RUN", "STATUS", "JOB", "JOB STATE", "NODE", "ATTEMPTS")
	for _, r := range st.Runs {
		id, state := "-", "-"
		if j := last(&r); j != nil {
			id, state = j.ID, j.State
		}
		node := r.Node
		if node == "" {
			node = "-"
		}
		fmt.Fprintf(w, "%-4d %-40s %-11s %-9s %-12s %-10s %d", r.Position, r.RunID, r.Status, id, state, node, r.Attempts)
		if r.Error != "" && r.Status != manifest.StatusOK {
			fmt.Fprintf(w, "  %s", strings.ReplaceAll(r.Error, "\n", "; "))
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "campaign %s (%s, %s): %s\n", st.Campaign, st.Executor, st.Status, Summary(st, 0))
}
