package campaign

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"time"

	"github.com/lem-energy/lem/internal/manifest"
)

// An Executor carries out a campaign's runs. Run holds the campaign directory's lock, reads what the directory
// holds into the state (a run whose manifest says ok is done; earlier attempts are counted by the analyzer's
// rule) and summarises at the end; the executor brings the runs still to do to an end and saves the state as
// they change. Local runs them one after another in this process; Slurm submits each as a job that runs
// `lem-run campaign --run-one` on the node the scheduler chose, and follows the jobs. Any other scheduler is a
// third implementation of these two methods (docs/CAMPAIGNS.md: Kubernetes).
type Executor interface {
	// Name is what campaign.json records as the executor (local, slurm).
	Name() string
	// Execute carries out the runs of x.State not ok. It returns ctx's error when interrupted and another error
	// when it cannot go on; runs that end badly are recorded in their state, not returned.
	Execute(ctx context.Context, x *Execution) error
	// Reconcile brings the state's runs up to date with what the executor knows of them (a cluster's queue)
	// without running or submitting anything (lem-run campaign --status).
	Reconcile(ctx context.Context, x *Execution) error
}

// Run statuses besides the manifest's: a run not measured yet, and a run with a cluster (submitted and waiting,
// or its job running).
const (
	StatusPending = "pending"
	StatusQueued  = "queued"
	StatusRunning = "running"
	// StatusSubmitted is a campaign's status when its executor left runs queued or running in a cluster.
	StatusSubmitted = "submitted"
)

// Execution is one execution of a prepared campaign: what an executor reads and updates.
type Execution struct {
	Prepared *Prepared
	State    *State
	Options  Options
	Began    time.Time // when this execution began
	// Stopped is the run an interrupt or failure stopped the execution in, for the message.
	Stopped *Planned

	readOnly bool // another lem-run holds the campaign directory: look, never write
}

// Save rewrites campaign.json atomically (unless another lem-run holds the campaign); a failure is logged and
// the next save tries again.
func (x *Execution) Save() {
	if x.readOnly {
		return
	}
	if err := writeState(x.Prepared.out, x.State); err != nil {
		x.Options.Log.Error("campaign state", "err", err)
	}
}

// Dir is the campaign directory.
func (x *Execution) Dir() string { return x.Prepared.out }

// Job is one submission of a run to a cluster's scheduler.
type Job struct {
	ID string `json:"id"`
	// Submission is lem's own name for it (campaign instance, run id, submission number), which the job carries
	// (its comment under Slurm) and writes into the run's manifest: a job id alone does not identify a job across
	// a controller crash, which may give the id again.
	Submission string    `json:"submission"`
	Submitted  time.Time `json:"submitted"`
	// State is the scheduler's last word on it (PENDING, RUNNING, COMPLETED, FAILED, CANCELLED, NODE_FAIL,
	// PREEMPTED, …), LOST when the scheduler no longer knows the job and no manifest says what became of it.
	State  string `json:"state,omitempty"`
	Reason string `json:"reason,omitempty"`
	Node   string `json:"node,omitempty"`
	// Dependency is the dependency it was submitted with (afterany:ID:…), if any.
	Dependency string `json:"dependency,omitempty"`
}

// inCluster lists the runs a cluster executor left queued or running.
func (s *State) inCluster() []string {
	var out []string
	for _, r := range s.Runs {
		if r.Status == StatusQueued || r.Status == StatusRunning && len(r.Jobs) > 0 {
			out = append(out, r.RunID)
		}
	}
	return out
}

func newInstance() string {
	var b [6]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Local runs the plan in this process, one run after another, with gaps, warm-ups and backend containers.
type Local struct{}

var _ Executor = Local{}

// Name is "local".
func (Local) Name() string { return "local" }

// Reconcile has nothing to add: the run directories are all a local execution leaves.
func (Local) Reconcile(context.Context, *Execution) error { return nil }

// Execute runs every run not ok in plan order, saving the state after each.
func (Local) Execute(ctx context.Context, x *Execution) error {
	p, st, opts := x.Prepared, x.State, x.Options
	f := p.File
	remaining := map[*Config]bool{}
	done := 0
	for i, r := range st.Runs {
		if r.Status == manifest.StatusOK {
			done++
		} else {
			remaining[p.Plan[i].Config] = true
		}
	}
	ex := &executor{p: p, opts: opts, st: st, containers: map[string]*backendContainer{}}
	defer ex.closeContainers()
	err := ex.warmups(ctx, remaining)
	opts.Progress.Start(len(st.Runs), done)
	var prev *Planned
	for i := range p.Plan {
		if err != nil {
			break
		}
		pl := &p.Plan[i]
		rs := &st.Runs[i]
		if rs.Status == manifest.StatusOK {
			continue
		}
		if prev != nil {
			gap := f.Gaps.BetweenRuns.D()
			if prev.Cycle != pl.Cycle {
				gap = f.Gaps.BetweenCycles.D()
			}
			if err = sleep(ctx, gap); err != nil {
				break
			}
		}
		prev = pl
		opts.Progress.Begin(pl)
		if err = ex.run(ctx, pl, rs); err != nil {
			x.Stopped = pl
		}
		opts.Progress.End(pl, rs)
		x.Save()
	}
	return err
}
