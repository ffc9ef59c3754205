package campaign

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// slurmJob is what Slurm's commands say of one job.
type slurmJob struct {
	ID       string // the job id (numeric; lem submits no arrays)
	State    string // PENDING, RUNNING, COMPLETED, FAILED, CANCELLED, NODE_FAIL, …
	Reason   string
	Node     string // node list of the allocation
	Name     string // the job name: the run id
	Comment  string // the comment: the submission (squeue only)
	ExitCode string // code:signal (sacct only)
}

// slurmActive says whether a job state is one a job can still run from (it is not over).
func slurmActive(state string) bool {
	switch state {
	case "PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD",
		"RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED", "RESV_DEL_HOLD":
		return true
	}
	return false
}

// squeueFormat is the squeue output lem reads: fields separated by '|', the name and the comment (which a job's
// owner chooses and may contain anything but a newline) last.
const squeueFormat = "%A|%T|%r|%N|%j|%k"

// parseSqueue reads `squeue --noheader --format=squeueFormat`: one job per line. A line it cannot read is an
// error naming the line.
func parseSqueue(b []byte) ([]slurmJob, error) {
	var out []slurmJob
	for i, line := range strings.Split(string(b), "\n") {
		line = strings.TrimRight(line, "\r")
		if strings.TrimSpace(line) == "" {
			continue
		}
		f := strings.SplitN(line, "|", 6)
		if len(f) < 6 || !jobID(f[0]) || f[1] == "" {
			return nil, fmt.Errorf("squeue output line %d %q: want JOBID|STATE|REASON|NODES|NAME|COMMENT", i+1, clip(line))
		}
		comment := f[5]
		if comment == "(null)" {
			comment = ""
		}
		out = append(out, slurmJob{ID: f[0], State: f[1], Reason: f[2], Node: f[3], Name: f[4], Comment: comment})
	}
	return out, nil
}

// sacctFormat is the sacct output lem reads (--parsable2: fields separated by '|').
const sacctFormat = "JobIDRaw,JobName,State,NodeList,ExitCode"

// parseSacct reads `sacct --parsable2 --noheader --format=sacctFormat`, from slurmdbd or (with --completion)
// from the jobcomp log: job steps (17.batch) are skipped, and of several records of one job (one per attempt in
// the jobcomp log) the last counts. States read "CANCELLED by 0": the first word is the state.
func parseSacct(b []byte) ([]slurmJob, error) {
	var out []slurmJob
	at := map[string]int{}
	for i, line := range strings.Split(string(b), "\n") {
		line = strings.TrimRight(line, "\r")
		if strings.TrimSpace(line) == "" {
			continue
		}
		f := strings.Split(line, "|")
		if len(f) != 5 {
			return nil, fmt.Errorf("sacct output line %d %q: want JOBID|NAME|STATE|NODES|EXITCODE", i+1, clip(line))
		}
		if strings.Contains(f[0], ".") { // a step of a job
			continue
		}
		state, _, _ := strings.Cut(strings.TrimSpace(f[2]), " ")
		if !jobID(f[0]) || state == "" {
			return nil, fmt.Errorf("sacct output line %d %q: want JOBID|NAME|STATE|NODES|EXITCODE", i+1, clip(line))
		}
		j := slurmJob{ID: f[0], Name: f[1], State: state, Node: f[3], ExitCode: f[4]}
		if j.Node == "None assigned" {
			j.Node = ""
		}
		if k, ok := at[j.ID]; ok {
			out[k] = j
			continue
		}
		at[j.ID] = len(out)
		out = append(out, j)
	}
	return out, nil
}

func jobID(s string) bool {
	n, err := strconv.ParseUint(s, 10, 64)
	return err == nil && n > 0 && strconv.FormatUint(n, 10) == s
}

func clip(s string) string {
	if len(s) > 120 {
		return s[:120] + "…"
	}
	return s
}

// slurmCLI runs Slurm's client commands (sbatch, squeue, sacct, scancel) as a user would.
type slurmCLI struct {
	Env     []string      // nil: this process's
	Timeout time.Duration // per command
}

func (c slurmCLI) run(ctx context.Context, name string, args ...string) ([]byte, error) {
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = c.Env
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		msg := strings.Join(strings.Fields(stderr.String()), " ")
		if errors.Is(err, exec.ErrNotFound) {
			msg = "not installed (Slurm's client commands are needed where lem-run campaign --executor slurm runs)"
		}
		return out, fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, clip(msg))
	}
	return out, nil
}

// sbatch submits script with options and returns the job id.
func (c slurmCLI) sbatch(ctx context.Context, options []string, script string) (string, error) {
	out, err := c.run(ctx, "sbatch", append(append([]string{"--parsable"}, options...), script)...)
	if err != nil {
		return "", err
	}
	id, _, _ := strings.Cut(strings.TrimSpace(string(out)), ";") // ID or ID;CLUSTER
	if !jobID(id) {
		return "", fmt.Errorf("sbatch printed %q, not a job id", clip(string(out)))
	}
	return id, nil
}

// squeue returns what the controller knows of the jobs ids (finished ones for MinJobAge, 300 s by default).
func (c slurmCLI) squeue(ctx context.Context, ids []string) ([]slurmJob, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	out, err := c.run(ctx, "squeue", "--noheader", "--states=all", "--format="+squeueFormat, "--jobs="+strings.Join(ids, ","))
	if err != nil {
		return nil, err
	}
	return parseSqueue(out)
}

// sacct returns what the accounting (slurmdbd), or else the jobcomp log (sacct --completion), keeps of jobs the
// controller forgot. Neither may be configured: then it says so with an error.
func (c slurmCLI) sacct(ctx context.Context, ids []string) ([]slurmJob, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	args := []string{"--parsable2", "--noheader", "--format=" + sacctFormat, "--jobs=" + strings.Join(ids, ",")}
	out, err := c.run(ctx, "sacct", args...)
	if err != nil {
		var cerr error
		if out, cerr = c.run(ctx, "sacct", append([]string{"--completion"}, args...)...); cerr != nil {
			return nil, errors.Join(err, cerr)
		}
	}
	return parseSacct(out)
}

// scancel cancels jobs.
func (c slurmCLI) scancel(ctx context.Context, ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	_, err := c.run(ctx, "scancel", ids...)
	return err
}
