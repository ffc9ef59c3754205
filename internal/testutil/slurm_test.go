package testutil

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// record is a job's script line: it writes text to dir/name whole (temporary name, then mv), so WaitFile never
// reads half a file.
func record(dir, name, text string) string {
	p := filepath.Join(dir, name)
	return fmt.Sprintf(`echo "%s" > "%s.tmp" && mv "%s.tmp" "%s"`, text, p, p, p)
}

// alive reports whether process pid exists (and is not a zombie).
func alive(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(stat), ')')
	return i < 0 || !strings.HasPrefix(string(stat[i+1:]), " Z")
}

// jobComp reads the jobcomp/filetxt log: one map of KEY=value fields per finished job attempt, in order.
func jobComp(t *testing.T, s *Slurm) []map[string]string {
	t.Helper()
	b, err := os.ReadFile(s.JobComp)
	if err != nil {
		t.Fatal(err)
	}
	var recs []map[string]string
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		rec := map[string]string{}
		for _, f := range strings.Fields(line) {
			k, v, _ := strings.Cut(f, "=")
			rec[k] = v
		}
		recs = append(recs, rec)
	}
	return recs
}

// statesOf returns the JobState of each jobcomp record of job id, in order.
func statesOf(recs []map[string]string, id string) []string {
	var states []string
	for _, r := range recs {
		if r["JobId"] == id {
			states = append(states, r["JobState"])
		}
	}
	return states
}

func TestSlurmJobOnEachNode(t *testing.T) {
	t.Parallel()
	start := time.Now()
	s := StartSlurm(t)
	t.Logf("cluster of %d nodes up in %v", len(s.Nodes), time.Since(start))
	if want := []string{"n1", "n2"}; !slices.Equal(s.Nodes, want) {
		t.Fatalf("nodes %v, want %v", s.Nodes, want)
	}
	shared := t.TempDir()
	ids := map[string]string{}
	start = time.Now()
	for _, n := range s.Nodes {
		ids[n] = s.Sbatch(record(shared, n, "$SLURM_JOB_ID $SLURMD_NODENAME"), "--nodelist="+n)
	}
	if ids["n1"] == ids["n2"] {
		t.Fatalf("both jobs got id %s", ids["n1"])
	}
	for _, n := range s.Nodes {
		j := s.WaitJob(ids[n])
		if j.State != "COMPLETED" || j.ExitCode != 0 || j.Nodes != n {
			t.Errorf("job %s: %+v, want COMPLETED with exit code 0 on %s", ids[n], j, n)
		}
		if got, want := strings.TrimSpace(s.WaitFile(filepath.Join(shared, n))), ids[n]+" "+n; got != want {
			t.Errorf("job on %s wrote %q, want %q", n, got, want)
		}
	}
	t.Logf("two jobs submitted and completed in %v", time.Since(start))

	// Without slurmdbd, sacct refuses; sacct --completion reads the jobcomp file.
	out, err := s.Command("sacct", "-j", ids["n1"]).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "accounting storage is disabled") {
		t.Errorf("sacct without slurmdbd: err %v, output %q; want a failure saying accounting storage is disabled", err, out)
	}
	out, err = s.Command("sacct", "--completion", "--parsable2", "--noheader", "--format=JobID,State,NodeList",
		"-j", ids["n2"]).Output()
	if got, want := strings.TrimSpace(string(out)), ids["n2"]+"|COMPLETED|n2"; err != nil || got != want {
		t.Errorf("sacct --completion: %q (%v), want %q", got, err, want)
	}
	recs := jobComp(t, s)
	for n, id := range ids {
		if got := statesOf(recs, id); !slices.Equal(got, []string{"COMPLETED"}) {
			t.Errorf("jobcomp states of job %s on %s: %v, want [COMPLETED]", id, n, got)
		}
	}
}

func TestSlurmJobArray(t *testing.T) {
	t.Parallel()
	s := StartSlurm(t)
	shared := t.TempDir()
	id := s.Sbatch(record(shared, "task$SLURM_ARRAY_TASK_ID",
		"$SLURM_ARRAY_JOB_ID $SLURM_ARRAY_TASK_ID $SLURM_JOB_ID $SLURMD_NODENAME"), "--array=0-3")
	tasks := s.WaitArray(id)
	if len(tasks) != 4 {
		t.Fatalf("array %s: %d tasks, want 4: %+v", id, len(tasks), tasks)
	}
	jobIDs := map[int]bool{}
	arrayID, _ := strconv.Atoi(id)
	for task := range 4 {
		j, ok := tasks[task]
		if !ok || j.State != "COMPLETED" || j.ArrayJobID != arrayID || j.ID != fmt.Sprintf("%s_%d", id, task) {
			t.Errorf("task %d: %+v (found %v), want COMPLETED, array job %s", task, j, ok, id)
			continue
		}
		jobIDs[j.JobID] = true
		got := strings.Fields(s.WaitFile(filepath.Join(shared, fmt.Sprintf("task%d", task))))
		if want := []string{id, strconv.Itoa(task), strconv.Itoa(j.JobID), j.Nodes}; !slices.Equal(got, want) {
			t.Errorf("task %d wrote %q, want %q (array id, task id, its job id, its node)", task, got, want)
		}
	}
	if len(jobIDs) != 4 {
		t.Errorf("tasks' job ids %v: want 4 distinct", jobIDs)
	}
}

func TestSlurmScancelRunningJob(t *testing.T) {
	t.Parallel()
	s := StartSlurm(t)
	shared := t.TempDir()
	id := s.Sbatch(record(shared, "pid", "$$")+"\nexec sleep 300", "--nodelist=n2")
	s.WaitJob(id, "RUNNING")
	pid, err := strconv.Atoi(strings.TrimSpace(s.WaitFile(filepath.Join(shared, "pid"))))
	if err != nil || !alive(pid) {
		t.Fatalf("job's process %d (%v) is not running", pid, err)
	}
	s.Scancel(id)
	j := s.WaitJob(id)
	if j.State != "CANCELLED" || j.Signal != int(syscall.SIGTERM) {
		t.Errorf("cancelled job: %+v, want CANCELLED by signal %d", j, syscall.SIGTERM)
	}
	s.poll("the cancelled job's process to end", func() (bool, string) { return !alive(pid), "alive" })
	if got := statesOf(jobComp(t, s), id); !slices.Equal(got, []string{"CANCELLED"}) {
		t.Errorf("jobcomp states: %v, want [CANCELLED]", got)
	}
}

func TestSlurmDependencies(t *testing.T) {
	t.Parallel()
	s := StartSlurm(t)
	shared := t.TempDir()
	first := s.Sbatch("sleep 2\n"+record(shared, "first.end", "$(date +%s.%N)")+"\nexit 3", "--nodelist=n1")
	anyID := s.Sbatch(record(shared, "any.start", "$(date +%s.%N)"), "--dependency=afterany:"+first)
	okID := s.Sbatch("true", "--dependency=afterok:"+first)
	if j := s.Job(anyID); j.State != "PENDING" || j.Reason != "Dependency" {
		t.Errorf("afterany job while the first runs: %+v, want PENDING (Dependency)", j)
	}
	if j := s.WaitJob(first); j.State != "FAILED" || j.ExitCode != 3 {
		t.Errorf("first job: %+v, want FAILED with exit code 3", j)
	}
	if j := s.WaitJob(anyID); j.State != "COMPLETED" {
		t.Errorf("afterany job: %+v, want COMPLETED after a failed first job", j)
	}
	end, err1 := strconv.ParseFloat(strings.TrimSpace(s.WaitFile(filepath.Join(shared, "first.end"))), 64)
	begin, err2 := strconv.ParseFloat(strings.TrimSpace(s.WaitFile(filepath.Join(shared, "any.start"))), 64)
	if err1 != nil || err2 != nil || begin < end {
		t.Errorf("afterany job started at %f, first job ended at %f (%v %v): want after", begin, end, err1, err2)
	}
	// afterok on a failed job never runs: it stays pending, with a reason that says so.
	j := s.WaitJobWhere(okID, "DependencyNeverSatisfied", func(j SlurmJob) bool {
		return j.Reason == "DependencyNeverSatisfied"
	})
	if j.State != "PENDING" {
		t.Errorf("afterok job of a failed job: %+v, want PENDING", j)
	}
}

func TestSlurmRestartSlurmctldKeepsQueue(t *testing.T) {
	t.Parallel()
	s := StartSlurm(t)
	shared := t.TempDir()
	release := filepath.Join(shared, "release")
	running := s.Sbatch(record(shared, "running", "up")+"\nwhile [ ! -e "+release+" ]; do sleep 0.1; done",
		"--nodelist=n1")
	held := s.Sbatch("true", "--hold")
	dependent := s.Sbatch("true", "--dependency=afterok:"+running)
	s.WaitJob(running, "RUNNING")
	s.WaitFile(filepath.Join(shared, "running"))

	start := time.Now()
	s.RestartSlurmctld()
	t.Logf("slurmctld restarted in %v", time.Since(start))
	for id, want := range map[string][2]string{
		running: {"RUNNING", "None"}, held: {"PENDING", "JobHeldUser"}, dependent: {"PENDING", "Dependency"},
	} {
		if j := s.Job(id); j.State != want[0] || j.Reason != want[1] {
			t.Errorf("after restart, job %s: %+v, want %s (%s)", id, j, want[0], want[1])
		}
	}
	if err := os.WriteFile(release, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	s.Run("scontrol", "release", held)
	for _, id := range []string{running, held, dependent} {
		if j := s.WaitJob(id); j.State != "COMPLETED" {
			t.Errorf("job %s: %+v, want COMPLETED", id, j)
		}
	}
	next, _ := strconv.Atoi(s.Sbatch("true"))
	if last, _ := strconv.Atoi(dependent); next <= last {
		t.Errorf("job id after restart %d, want above %d: ids must not be reused", next, last)
	}
}

// TestSlurmNodeFailure kills one node's slurmd (its jobs live on) and crashes the other (its jobs die with it):
// both nodes go DOWN; --no-requeue jobs end NODE_FAIL, requeued ones run again once their node is back.
func TestSlurmNodeFailure(t *testing.T) {
	if testing.Short() {
		t.Skip("node failure detection takes about 15 s")
	}
	t.Parallel()
	s := StartSlurm(t)
	shared := t.TempDir()
	// The first attempt writes its pid and sleeps; a requeued attempt writes its restart count and ends.
	script := func(name string) string {
		return `if [ -z "$SLURM_RESTART_COUNT" ]; then ` + record(shared, name+".pid", "$$") + `; exec sleep 300; fi
` + record(shared, name+".rerun", "$SLURM_RESTART_COUNT $SLURMD_NODENAME")
	}
	requeue := s.Sbatch(script("requeue"), "--nodelist=n1", "--requeue")
	noRequeue := s.Sbatch(script("norequeue"), "--nodelist=n1", "--no-requeue")
	crashed := s.Sbatch(script("crashed"), "--nodelist=n2", "--requeue")
	pids := map[string]int{}
	for name, id := range map[string]string{"requeue": requeue, "norequeue": noRequeue, "crashed": crashed} {
		s.WaitJob(id, "RUNNING")
		pids[name], _ = strconv.Atoi(strings.TrimSpace(s.WaitFile(filepath.Join(shared, name+".pid"))))
	}

	start := time.Now()
	s.KillSlurmd("n1")
	s.CrashNode("n2")
	if alive(pids["crashed"]) {
		t.Errorf("job process %d of crashed node n2 is alive", pids["crashed"])
	}
	s.WaitNode("n1", "DOWN")
	s.WaitNode("n2", "DOWN")
	t.Logf("both nodes DOWN %v after their slurmd died", time.Since(start))
	if j := s.WaitJob(noRequeue); j.State != "NODE_FAIL" || j.Reason != "NodeDown" {
		t.Errorf("--no-requeue job: %+v, want NODE_FAIL (NodeDown)", j)
	}
	for _, id := range []string{requeue, crashed} {
		if j := s.WaitJobWhere(id, "requeued", func(j SlurmJob) bool { return j.Restarts == 1 }); j.State != "PENDING" {
			t.Errorf("--requeue job %s: %+v, want PENDING again", id, j)
		}
	}
	// A dead slurmd leaves its jobs' processes running, even once the job is requeued.
	if !alive(pids["requeue"]) || !alive(pids["norequeue"]) {
		t.Errorf("job processes of n1 (pids %v) died with its slurmd; want them running", pids)
	}

	start = time.Now()
	s.StartSlurmd("n1")
	s.StartSlurmd("n2")
	// The new slurmd learns that those jobs are gone and kills what is left of them.
	s.poll("n1's stale job processes to end", func() (bool, string) {
		return !alive(pids["requeue"]) && !alive(pids["norequeue"]), fmt.Sprint(pids)
	})
	for name, id := range map[string]string{"requeue": requeue, "crashed": crashed} {
		if j := s.WaitJob(id); j.State != "COMPLETED" || j.Restarts != 1 {
			t.Errorf("requeued job %s: %+v, want COMPLETED after 1 restart", id, j)
		}
		node := map[string]string{"requeue": "n1", "crashed": "n2"}[name]
		if got, want := strings.TrimSpace(s.WaitFile(filepath.Join(shared, name+".rerun"))), "1 "+node; got != want {
			t.Errorf("rerun of %s wrote %q, want %q", name, got, want)
		}
	}
	t.Logf("requeued jobs completed %v after the slurmd restarts", time.Since(start))
	// Each attempt is a jobcomp record under the same job id: the last one is the job's final state.
	recs := jobComp(t, s)
	for id, want := range map[string][]string{
		requeue: {"NODE_FAIL", "COMPLETED"}, crashed: {"NODE_FAIL", "COMPLETED"}, noRequeue: {"NODE_FAIL"},
	} {
		if got := statesOf(recs, id); !slices.Equal(got, want) {
			t.Errorf("jobcomp states of job %s: %v, want %v", id, got, want)
		}
	}
}

// TestSlurmPrologEpilog records where and how the node and controller scripts run, with two fake GPUs (GRES on
// /dev/null and /dev/zero: Slurm wants character devices and never opens them without a device cgroup) so that
// the GPU variables show.
func TestSlurmPrologEpilog(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	script := filepath.Join(dir, "dump.sh")
	// No PATH in these scripts' environment: absolute paths only.
	dump := "#!/bin/sh\n{ /usr/bin/id -u; /bin/pwd; /usr/bin/env; } > " + dir + "/$SLURM_SCRIPT_CONTEXT.$SLURM_JOB_ID\n"
	if err := os.WriteFile(script, []byte(dump), 0o755); err != nil {
		t.Fatal(err)
	}
	s := SlurmConfig{
		NodeOptions: "Gres=gpu:2",
		Files:       map[string]string{"gres.conf": "Name=gpu File=/dev/null\nName=gpu File=/dev/zero\n"},
		Extra: []string{"GresTypes=gpu", "Prolog=" + script, "Epilog=" + script,
			"PrologSlurmctld=" + script, "EpilogSlurmctld=" + script},
	}.Start(t)
	// Two one-GPU jobs on one node at once (the first waits for the second) get one GPU each.
	both := filepath.Join(dir, "second.up")
	first := s.Sbatch("/usr/bin/env > "+dir+"/job.$SLURM_JOB_ID\nwhile [ ! -e "+both+" ]; do sleep 0.1; done",
		"--nodelist=n1", "--gpus=1", "--account=lemacct")
	s.WaitJob(first, "RUNNING")
	second := s.Sbatch("/usr/bin/env > "+dir+"/job.$SLURM_JOB_ID\ntouch "+both, "--nodelist=n1", "--gpus=1")
	gpus := map[string]bool{}
	for _, id := range []string{first, second} {
		if j := s.WaitJob(id); j.State != "COMPLETED" {
			t.Fatalf("job %s: %+v", id, j)
		}
		job := parseEnv(s.WaitFile(filepath.Join(dir, "job."+id)))
		gpus[job["SLURM_JOB_GPUS"]] = true
		if job["CUDA_VISIBLE_DEVICES"] != job["SLURM_JOB_GPUS"] {
			t.Errorf("job %s: CUDA_VISIBLE_DEVICES %q, SLURM_JOB_GPUS %q: want equal", id,
				job["CUDA_VISIBLE_DEVICES"], job["SLURM_JOB_GPUS"])
		}
		account := map[string]string{first: "lemacct", second: ""}[id]
		for _, ctx := range []string{"prolog_slurmd", "epilog_slurmd", "prolog_slurmctld", "epilog_slurmctld"} {
			out := s.WaitFile(filepath.Join(dir, ctx+"."+id))
			uid, _, _ := strings.Cut(out, "\n")
			env := parseEnv(out)
			t.Logf("%s of job %s: uid %s, environment %v", ctx, id, uid, env)
			want := map[string]string{"SLURM_JOB_ID": id, "SLURM_JOB_USER": "root", "SLURM_JOB_UID": "0",
				"SLURM_JOB_PARTITION": "debug", "SLURM_SCRIPT_CONTEXT": ctx}
			onNode := strings.HasSuffix(ctx, "_slurmd")
			if onNode {
				want["SLURMD_NODENAME"] = "n1"
				want["SLURM_JOB_GPUS"] = job["SLURM_JOB_GPUS"]
				want["CUDA_VISIBLE_DEVICES"] = job["SLURM_JOB_GPUS"]
			} else {
				want["SLURM_JOB_NODELIST"] = "n1"
			}
			if account != "" {
				want["SLURM_JOB_ACCOUNT"] = account
			}
			if uid != "0" {
				t.Errorf("%s of job %s ran as uid %s, want 0", ctx, id, uid)
			}
			for k, v := range want {
				if env[k] != v {
					t.Errorf("%s of job %s: %s=%q, want %q", ctx, id, k, env[k], v)
				}
			}
			if !onNode && env["SLURM_JOB_GPUS"]+env["CUDA_VISIBLE_DEVICES"] != "" {
				t.Errorf("%s of job %s: SLURM_JOB_GPUS=%q CUDA_VISIBLE_DEVICES=%q; the controller's scripts get no GPUs",
					ctx, id, env["SLURM_JOB_GPUS"], env["CUDA_VISIBLE_DEVICES"])
			}
			if onNode && account == "" && env["SLURM_JOB_ACCOUNT"] != "" {
				t.Errorf("%s of a job without --account: SLURM_JOB_ACCOUNT=%q, want unset", ctx, env["SLURM_JOB_ACCOUNT"])
			}
			if _, ok := env["PATH"]; ok {
				t.Errorf("%s has PATH=%s; Slurm 22.05 gives none", ctx, env["PATH"])
			}
		}
	}
	if want := map[string]bool{"0": true, "1": true}; !reflect.DeepEqual(gpus, want) {
		t.Errorf("GPUs of two concurrent one-GPU jobs: %v, want 0 and 1", gpus)
	}
}

func parseEnv(out string) map[string]string {
	env := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(line, "="); ok && k != "" && !strings.ContainsAny(k, " /") {
			env[k] = v
		}
	}
	return env
}

func TestSlurmStopLeavesNothing(t *testing.T) {
	t.Parallel()
	s := StartSlurm(t)
	shared := t.TempDir()
	id := s.Sbatch(record(shared, "pid", "$$")+"\nexec sleep 300", "--nodelist=n1")
	s.WaitJob(id, "RUNNING")
	pid, _ := strconv.Atoi(strings.TrimSpace(s.WaitFile(filepath.Join(shared, "pid"))))
	s.KillSlurmd("n2") // a stopped daemon is no trouble
	ctld := fmt.Sprintf("127.0.0.1:%d", s.ctldPort)
	s.Stop()
	if left := markedProcesses(slurmClusterEnv+"="+s.marker, ""); len(left) > 0 {
		t.Errorf("processes left after Stop: %v", left)
	}
	if alive(pid) {
		t.Errorf("the running job's process %d outlived Stop", pid)
	}
	if c, err := net.Dial("tcp", ctld); err == nil {
		c.Close()
		t.Errorf("something still listens on slurmctld's %s", ctld)
	}
	if _, err := os.Stat(s.Dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("cluster directory %s: %v, want removed", s.Dir, err)
	}
	s.Stop() // twice is fine
}

// TestStartSlurmWithoutSlurm runs a cluster-starting test in a child process whose PATH holds no Slurm: it must
// skip by default and fail under LEM_REQUIRE_SERVICES=1.
func TestStartSlurmWithoutSlurm(t *testing.T) {
	if os.Getenv("LEM_TEST_SLURM_CHILD") == "1" {
		StartSlurm(t)
		t.Fatal("StartSlurm returned without Slurm")
	}
	t.Parallel()
	for _, tc := range []struct {
		require string
		fails   bool
		output  string
	}{
		{"", false, "SKIPPED (service unavailable; make test requires it): Slurm test cluster: munged not installed"},
		{"1", true, "required service unavailable: Slurm test cluster: munged not installed"},
	} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestStartSlurmWithoutSlurm$", "-test.v")
		cmd.Env = append(os.Environ(), "LEM_TEST_SLURM_CHILD=1", "PATH="+t.TempDir(), "LEM_REQUIRE_SERVICES="+tc.require)
		out, err := cmd.CombinedOutput()
		if (err != nil) != tc.fails || !strings.Contains(string(out), tc.output) {
			t.Errorf("LEM_REQUIRE_SERVICES=%q: exit %v, output:\n%s\nwant failure %v and %q", tc.require, err, out,
				tc.fails, tc.output)
		}
	}
}

func TestParseSqueueJSON(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("testdata", "slurm", "squeue-22.05.json"))
	if err != nil {
		t.Fatal(err)
	}
	jobs, err := parseSqueueJSON(b)
	if err != nil {
		t.Fatal(err)
	}
	// The sample: a job that completed, one that exited 3, one cancelled while running, array job 4 (tasks 0-2,
	// one at a time: task 0 running, 1-2 pending as one record) and a held --no-requeue job.
	want := []SlurmJob{
		{ID: "1", JobID: 1, ArrayTaskID: -1, State: "COMPLETED", Reason: "None", Nodes: "n1", Requeue: true},
		{ID: "2", JobID: 2, ArrayTaskID: -1, State: "FAILED", Reason: "NonZeroExitCode", Nodes: "n1", ExitCode: 3, Requeue: true},
		{ID: "3", JobID: 3, ArrayTaskID: -1, State: "CANCELLED", Reason: "None", Nodes: "n2", Signal: 15, Requeue: true},
		{ID: "4_0", JobID: 5, ArrayJobID: 4, ArrayTaskID: 0, State: "RUNNING", Reason: "None", Nodes: "n1", Requeue: true},
		{ID: "4_[1-2%1]", JobID: 4, ArrayJobID: 4, ArrayTaskID: -1, State: "PENDING", Reason: "JobArrayTaskLimit", Requeue: true},
		{ID: "6", JobID: 6, ArrayTaskID: -1, State: "PENDING", Reason: "JobHeldUser"},
	}
	if !reflect.DeepEqual(jobs, want) {
		t.Fatalf("parsed:\n%+v\nwant:\n%+v", jobs, want)
	}
	for _, tc := range []struct {
		id   string
		want []string
	}{
		{"1", []string{"1"}},
		{"4", []string{"4_0", "4_[1-2%1]"}},
		{"4_0", []string{"4_0"}},
		{"5", []string{"4_0"}}, // a task by its own job id
		{"7", nil},
	} {
		var got []string
		for _, j := range selectJobs(slices.Clone(jobs), tc.id) {
			got = append(got, j.ID)
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("selectJobs(%s) = %v, want %v", tc.id, got, tc.want)
		}
	}
	if _, err := parseSqueueJSON([]byte("squeue: error: Unable to contact slurm controller")); err == nil {
		t.Error("parseSqueueJSON accepted text that is not JSON")
	}
}
