package campaign

import (
	"strings"
	"testing"
)

// FuzzParseSqueue: whatever squeue prints, the parser returns jobs with numeric ids and a state, or an error
// naming a line; what it accepts, written back in squeue's format, reads the same.
func FuzzParseSqueue(f *testing.F) {
	f.Add([]byte("5|RUNNING|None|n1|sl-w-10-c1|lem:1b95c880f827:sl-w-10-c1:1\n10|PENDING|Dependency||r|x|y\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		jobs, err := parseSqueue(b)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "squeue output line ") {
				t.Fatalf("error %q names no line", err)
			}
			return
		}
		var out strings.Builder
		for _, j := range jobs {
			if !jobID(j.ID) || j.State == "" {
				t.Fatalf("accepted job %+v", j)
			}
			if strings.Contains(j.State+j.Reason+j.Node+j.Name, "|") || strings.ContainsAny(j.Name+j.Comment, "\n") {
				return // the name may hold the separator only where the comment follows it; nothing to compare
			}
			comment := j.Comment
			if comment == "" {
				comment = "(null)"
			}
			out.WriteString(strings.Join([]string{j.ID, j.State, j.Reason, j.Node, j.Name, comment}, "|") + "\n")
		}
		again, err := parseSqueue([]byte(out.String()))
		if err != nil || len(again) != len(jobs) {
			t.Fatalf("written back: %v, %d jobs for %d", err, len(again), len(jobs))
		}
		for i := range jobs {
			if again[i] != jobs[i] {
				t.Fatalf("written back: %+v, was %+v", again[i], jobs[i])
			}
		}
	})
}

// FuzzParseSacct: sacct's records (slurmdbd's or the jobcomp log's) give each job once, never a step.
func FuzzParseSacct(f *testing.F) {
	f.Add([]byte("7|sl-a-c1|NODE_FAIL|n2|0:0\n7.batch|batch|CANCELLED|n2|0:15\n7|sl-a-c1|COMPLETED|n1|0:0\n9|b|CANCELLED by 0|None assigned|0:0\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		jobs, err := parseSacct(b)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "sacct output line ") {
				t.Fatalf("error %q names no line", err)
			}
			return
		}
		seen := map[string]bool{}
		for _, j := range jobs {
			if !jobID(j.ID) || j.State == "" || strings.Contains(j.State, " ") || seen[j.ID] {
				t.Fatalf("accepted job %+v (seen before: %v)", j, seen[j.ID])
			}
			seen[j.ID] = true
		}
	})
}

// FuzzParseGresConf: a node's gres.conf expands to a bounded list of device files, or an error naming the line.
func FuzzParseGresConf(f *testing.F) {
	f.Add([]byte("NodeName=gpu[01-02] Name=gpu Type=h200 File=/dev/nvidia[0-1]\nName=mps Count=100\nAutoDetect=nvml\n"), "gpu02")
	f.Fuzz(func(t *testing.T, b []byte, node string) {
		files, err := parseGresConf(b, node)
		if err != nil {
			if !strings.Contains(err.Error(), "line ") {
				t.Fatalf("error %q names no line", err)
			}
			return
		}
		if len(files) > maxExpand*(1+strings.Count(string(b), "\n")) {
			t.Fatalf("%d files from %d bytes", len(files), len(b))
		}
		for _, f := range files {
			if f == "" {
				t.Fatal("an empty device file")
			}
		}
	})
}
