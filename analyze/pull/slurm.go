package pull

import (
	"regexp"
	"strconv"
	"strings"
)

// Runs of Slurm jobs. A node's Prolog and Epilog (deploy/slurm) mark every job as a run on the node's
// lem-exporter, its id slurm-<cluster>-<job id>, with -r<n> after a requeue (the n-th restart of the job): the
// id is the same on every node of a multi-node job, and each node's exporter has its own run of it.

// SlurmRunID is the run id of a Slurm job's attempt (restart 0 for the first).
func SlurmRunID(cluster, jobID string, restart int) string {
	id := "slurm-" + clean(cluster) + "-" + jobID
	if cluster == "" {
		id = "slurm-" + jobID
	}
	if restart > 0 {
		id += "-r" + strconv.Itoa(restart)
	}
	return id
}

// clean keeps a cluster name within the run id grammar (letters, digits, '_', '.', '-').
func clean(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-' {
			return r
		}
		return '_'
	}, s)
}

var slurmRunRE = regexp.MustCompile(`^slurm-(?:.+-)?([0-9]+)(?:-r[0-9]+)?$`)

// SlurmJobOf is the Slurm job id a run id names ("" when it names none).
func SlurmJobOf(runID string) string {
	if m := slurmRunRE.FindStringSubmatch(runID); m != nil {
		return m[1]
	}
	return ""
}

// SelectSlurmJob keeps the runs of Slurm job id (every attempt, on every node).
func SelectSlurmJob(runs []RunInfo, id string) []RunInfo {
	var out []RunInfo
	for _, r := range runs {
		if SlurmJobOf(r.RunID) == id {
			out = append(out, r)
		}
	}
	return out
}
