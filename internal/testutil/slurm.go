package testutil

import (
	"bytes"
	"crypto/rand"
	_ "embed"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"text/template"
	"time"
)

//go:embed testdata/slurm/slurm.conf.tmpl
var slurmConfTemplate string

var slurmConf = template.Must(template.New("slurm.conf").Parse(slurmConfTemplate))

// SlurmConfig shapes a test cluster; the zero value is two nodes of two CPUs (StartSlurm).
type SlurmConfig struct {
	Nodes       int      // slurmd daemons, named n1, n2, …; default 2
	CPUs        int      // per node; default 2 (slurm.conf decides, not the host)
	Extra       []string // more slurm.conf lines, e.g. "Prolog=/path/prolog.sh"
	NodeOptions string   // appended to every NodeName line, e.g. "Gres=gpu:2"
	// Files are more configuration files written beside slurm.conf, by name (gres.conf, …).
	Files map[string]string
	// SlurmdTimeout is how long a silent slurmd keeps its node out of DOWN; default 4 s, so that node-failure
	// tests are quick. A node goes DOWN some SlurmdTimeout + 2 MessageTimeout (3 s) + 1-3 s after its slurmd
	// dies: 13 s measured with the default.
	SlurmdTimeout time.Duration
	// Timeout bounds every wait (daemon start, job and node states); default 60 s.
	Timeout time.Duration
	// KillWait is how long a cancelled job's processes have between SIGTERM and SIGKILL; default 2 s.
	KillWait time.Duration
}

// Slurm is a real single-host Slurm cluster (Debian's slurm-wlm and munge) started for one test: its own munged,
// a slurmctld and one slurmd per node, all on loopback ports, every configuration, state, spool and log file
// under Dir. The daemons and every process of their jobs are killed when the test ends.
type Slurm struct {
	Dir       string   // the cluster's directory
	Conf      string   // the generated slurm.conf (SLURM_CONF of every command run through Command)
	Work      string   // jobs' default working directory: commands run there, slurm-%j.out lands there
	JobComp   string   // the jobcomp/filetxt log: one line per finished job attempt
	Nodes     []string // node names
	Partition string   // the one (default) partition, holding every node

	t        testing.TB
	cfg      SlurmConfig
	marker   string // value of slurmClusterEnv in every process the cluster starts; finds them at cleanup
	host     string
	ctldPort int
	ports    map[string]int

	stopOnce sync.Once
	mu       sync.Mutex
	munged   *slurmDaemon
	ctld     *slurmDaemon
	slurmd   map[string]*slurmDaemon
	scripts  int
}

// The environment variables that mark the cluster's processes: daemons get both, and jobs inherit the cluster's
// through sbatch (which exports the submitter's environment), so leftovers can be found by reading
// /proc/PID/environ even after they leave the process tree (slurmstepd double-forks).
const (
	slurmClusterEnv = "LEM_TEST_SLURM_CLUSTER"
	slurmNodeEnv    = "LEM_TEST_SLURM_NODE"
)

// SlurmJob is one job (or array task) as squeue reports it.
type SlurmJob struct {
	ID          string // "17", or "17_3" for task 3 of array job 17
	JobID       int    // the job's own id (an array task has its own)
	ArrayJobID  int    // 0 outside arrays
	ArrayTaskID int    // -1 outside arrays
	State       string // PENDING, RUNNING, COMPLETED, FAILED, CANCELLED, NODE_FAIL, …
	Reason      string // why it is pending or ended (None, BeginTime, NodeDown, Dependency, …)
	Nodes       string // node list of its allocation
	Restarts    int    // how often it was requeued
	ExitCode    int    // the batch script's exit code
	Signal      int    // the signal that ended the batch script, 0 if none
	Requeue     bool   // whether Slurm may requeue it (--requeue / --no-requeue)
}

// Terminal reports whether the job is over (nothing more will run unless someone requeues it).
func (j SlurmJob) Terminal() bool { return slurmTerminal(j.State) }

func slurmTerminal(state string) bool {
	switch state {
	case "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL", "DEADLINE",
		"OUT_OF_MEMORY":
		return true
	}
	return false
}

// StartSlurm starts a two-node cluster; see SlurmConfig.Start.
func StartSlurm(t testing.TB) *Slurm {
	t.Helper()
	return SlurmConfig{}.Start(t)
}

// Start starts munged, slurmctld and the slurmd daemons and returns once every node is idle. It fails the test
// under make test when Slurm or munge is missing (Debian packages slurm-wlm and munge) and skips otherwise.
func (c SlurmConfig) Start(t testing.TB) *Slurm {
	t.Helper()
	for _, bin := range []string{"munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "scancel"} {
		if _, err := exec.LookPath(bin); err != nil {
			SkipOrFail(t, "Slurm test cluster: "+bin+" not installed (Debian packages slurm-wlm and munge)")
		}
	}
	if os.Geteuid() != 0 {
		// slurmd starts each job as its owner, which takes root.
		SkipOrFail(t, "Slurm test cluster: slurmd must run as root")
	}
	if c.Nodes <= 0 {
		c.Nodes = 2
	}
	if c.CPUs <= 0 {
		c.CPUs = 2
	}
	if c.SlurmdTimeout <= 0 {
		c.SlurmdTimeout = 4 * time.Second
	}
	if c.Timeout <= 0 {
		c.Timeout = 60 * time.Second
	}
	if c.KillWait <= 0 {
		c.KillWait = 2 * time.Second
	}
	// Not t.TempDir: munged wants every directory above its socket searchable by all, and a short path keeps
	// the socket under the 108-byte limit of a unix address.
	dir, err := os.MkdirTemp("", "lem-slurm-")
	if err != nil {
		t.Fatalf("slurm: %v", err)
	}
	host, _ := os.Hostname()
	host, _, _ = strings.Cut(host, ".") // slurmctld compares SlurmctldHost with the short host name
	s := &Slurm{
		Dir: dir, Conf: filepath.Join(dir, "slurm.conf"), Work: filepath.Join(dir, "work"),
		JobComp: filepath.Join(dir, "log", "jobcomp.txt"), Partition: "debug",
		t: t, cfg: c, marker: dir, host: host, ports: map[string]int{}, slurmd: map[string]*slurmDaemon{},
	}
	t.Cleanup(s.Stop)
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatalf("slurm: %v", err)
	}
	for _, d := range []string{"munge", "munge-run", "state", "run", "log", "work", "scripts", "spool"} {
		mode := os.FileMode(0o755)
		if d == "munge" {
			mode = 0o700 // munged refuses a key others can read
		}
		if err := os.Mkdir(filepath.Join(dir, d), mode); err != nil {
			t.Fatalf("slurm: %v", err)
		}
	}
	used := map[int]bool{}
	port := func() int { // distinct: a port just closed may come back from the next FreePort
		for {
			if p := FreePort(t); !used[p] {
				used[p] = true
				return p
			}
		}
	}
	for i := 1; i <= c.Nodes; i++ {
		n := "n" + strconv.Itoa(i)
		s.Nodes = append(s.Nodes, n)
		s.ports[n] = port()
		if err := os.Mkdir(filepath.Join(dir, "spool", n), 0o755); err != nil {
			t.Fatalf("slurm: %v", err)
		}
	}
	s.ctldPort = port()
	if err := s.writeConf(); err != nil {
		t.Fatalf("slurm: %v", err)
	}
	s.startMunge()
	s.startCtld()
	for _, n := range s.Nodes {
		s.launchSlurmd(n)
	}
	for _, n := range s.Nodes {
		d := s.slurmd[n]
		s.poll("node "+n+" to be idle", func() (bool, string) {
			if d.exited() {
				s.t.Fatalf("slurm: slurmd of %s exited while starting (its log follows)", n)
			}
			return s.nodeIs(n, "IDLE")
		})
	}
	return s
}

// Timing of the test cluster, in seconds.
const (
	// slurmMessageTimeout bounds each RPC; it also delays the DOWN of a silent node (see SlurmdTimeout).
	slurmMessageTimeout = 3
	// slurmCredExpire is how long a requeued job waits before it may start again (Slurm's minimum, 5; default
	// 120). It is also the lifetime of a job launch credential, ample on loopback.
	slurmCredExpire = 5
	// slurmMinJobAge is how long squeue and scontrol keep a finished job (Slurm's default).
	slurmMinJobAge = 300
)

func (s *Slurm) writeConf() error {
	type node struct {
		Name string
		Port int
	}
	var nodes []node
	for _, n := range s.Nodes {
		nodes = append(nodes, node{n, s.ports[n]})
	}
	var b bytes.Buffer
	err := slurmConf.Execute(&b, map[string]any{
		"Dir": s.Dir, "Cluster": "lemtest", "Host": s.host, "CtldPort": s.ctldPort, "User": "root",
		"MungeSocket": filepath.Join(s.Dir, "munge-run", "munge.socket"), "CredExpire": slurmCredExpire,
		"MinJobAge": slurmMinJobAge, "SlurmdTimeout": int(s.cfg.SlurmdTimeout.Round(time.Second).Seconds()),
		"MessageTimeout": slurmMessageTimeout, "KillWait": int(s.cfg.KillWait.Round(time.Second).Seconds()), "Extra": s.cfg.Extra, "Nodes": nodes, "CPUs": s.cfg.CPUs, "NodeOptions": s.cfg.NodeOptions,
		"Partition": s.Partition, "NodeList": strings.Join(s.Nodes, ","),
	})
	if err != nil {
		return fmt.Errorf("slurm.conf: %w", err)
	}
	if err := os.WriteFile(s.Conf, b.Bytes(), 0o644); err != nil {
		return err
	}
	for name, content := range s.cfg.Files {
		if err := os.WriteFile(filepath.Join(s.Dir, name), []byte(content), 0o644); err != nil {
			return err
		}
	}
	// An empty SPANK stack, not the system's /etc/slurm/plugstack.conf.
	return os.WriteFile(filepath.Join(s.Dir, "plugstack.conf"), nil, 0o644)
}

// slurmDaemon is one daemon process of the cluster.
type slurmDaemon struct {
	name string
	cmd  *exec.Cmd
	done chan struct{} // closed once the process has exited and been reaped
}

func (d *slurmDaemon) exited() bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}

// signal sends sig and waits up to grace for the exit, then kills.
func (d *slurmDaemon) signal(sig syscall.Signal, grace time.Duration) {
	if d == nil || d.exited() {
		return
	}
	d.cmd.Process.Signal(sig)
	select {
	case <-d.done:
	case <-time.After(grace):
		d.cmd.Process.Kill()
		<-d.done
	}
}

// launch starts a daemon in the foreground, its output appended to log/NAME.out. It stays in the test's process
// group, so that ^C in a terminal ends it too.
func (s *Slurm) launch(name string, extraEnv []string, bin string, args ...string) *slurmDaemon {
	s.t.Helper()
	out, err := os.OpenFile(filepath.Join(s.Dir, "log", name+".out"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		s.t.Fatalf("slurm: %v", err)
	}
	defer out.Close()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(s.Env(), extraEnv...)
	cmd.Dir = s.Dir
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("slurm: starting %s: %v", name, err)
	}
	d := &slurmDaemon{name: name, cmd: cmd, done: make(chan struct{})}
	go func() { cmd.Wait(); close(d.done) }()
	return d
}

func (s *Slurm) startMunge() {
	s.t.Helper()
	key := filepath.Join(s.Dir, "munge", "munge.key")
	b := make([]byte, 1024)
	rand.Read(b)
	if err := os.WriteFile(key, b, 0o400); err != nil {
		s.t.Fatalf("slurm: munge key: %v", err)
	}
	sock := filepath.Join(s.Dir, "munge-run", "munge.socket")
	s.munged = s.launch("munged", nil, "munged", "--foreground", "--key-file="+key, "--socket="+sock,
		"--pid-file="+filepath.Join(s.Dir, "munge-run", "munged.pid"),
		"--seed-file="+filepath.Join(s.Dir, "munge", "munged.seed"), "--log-file=/dev/null")
	s.poll("munged to create its socket", func() (bool, string) {
		if s.munged.exited() {
			s.t.Fatal("slurm: munged exited while starting (its log follows)")
		}
		_, err := os.Stat(sock)
		return err == nil, fmt.Sprint(err)
	})
}

func (s *Slurm) startCtld() {
	s.t.Helper()
	d := s.launch("slurmctld", nil, "slurmctld", "-D", "-f", s.Conf)
	s.mu.Lock()
	s.ctld = d
	s.mu.Unlock()
	s.poll("slurmctld to answer", func() (bool, string) {
		if d.exited() {
			s.t.Fatal("slurm: slurmctld exited while starting (its log follows)")
		}
		out, err := s.Command("scontrol", "ping").CombinedOutput()
		return err == nil && strings.Contains(string(out), "is UP"), string(out)
	})
}

func (s *Slurm) launchSlurmd(node string) {
	s.t.Helper()
	d := s.launch("slurmd-"+node, []string{slurmNodeEnv + "=" + node}, "slurmd", "-D", "-N", node, "-f", s.Conf)
	s.mu.Lock()
	s.slurmd[node] = d
	s.mu.Unlock()
}

// Env is the environment of every process the cluster starts and of Slurm's commands run against it: this
// process's (less any SLURM_ variables), SLURM_CONF and the cluster's marker.
func (s *Slurm) Env() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SLURM_") && !strings.HasPrefix(kv, slurmNodeEnv+"=") {
			env = append(env, kv)
		}
	}
	return append(env, "SLURM_CONF="+s.Conf, slurmClusterEnv+"="+s.marker)
}

// Command prepares a Slurm command (sbatch, squeue, scontrol, …) against this cluster, run in Work.
func (s *Slurm) Command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	cmd.Env = s.Env()
	cmd.Dir = s.Work
	return cmd
}

// Run runs a Slurm command and returns its standard output; a failure fails the test.
func (s *Slurm) Run(name string, args ...string) string {
	s.t.Helper()
	cmd := s.Command(name, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		s.t.Fatalf("slurm: %s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return string(out)
}

// Sbatch submits a batch script (a "#!/bin/sh" line is added when it has none) with sbatch's options and
// returns the job id.
func (s *Slurm) Sbatch(script string, options ...string) string {
	s.t.Helper()
	if !strings.HasPrefix(script, "#!") {
		script = "#!/bin/sh\n" + script
	}
	s.mu.Lock()
	s.scripts++
	path := filepath.Join(s.Dir, "scripts", fmt.Sprintf("job%d.sh", s.scripts))
	s.mu.Unlock()
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		s.t.Fatalf("slurm: %v", err)
	}
	out := s.Run("sbatch", append(append([]string{"--parsable"}, options...), path)...)
	id, _, _ := strings.Cut(strings.TrimSpace(out), ";") // "ID" or "ID;CLUSTER"
	if _, err := strconv.Atoi(id); err != nil {
		s.t.Fatalf("slurm: sbatch printed %q, not a job id", out)
	}
	return id
}

// Scancel cancels a job (or array task) with scancel's options.
func (s *Slurm) Scancel(id string, options ...string) {
	s.t.Helper()
	s.Run("scancel", append(options, id)...)
}

// Jobs returns the records squeue has for id: one for a plain job or an array task ("17_3"), one per task
// (and one for the tasks not yet started) for an array job. Finished jobs stay listed for MinJobAge (300 s).
func (s *Slurm) Jobs(id string) []SlurmJob {
	s.t.Helper()
	jobs, err := s.jobs(id)
	if err != nil {
		s.t.Fatalf("slurm: %v", err)
	}
	return jobs
}

func (s *Slurm) jobs(id string) ([]SlurmJob, error) {
	cmd := s.Command("squeue", "--json", "--jobs="+id)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("squeue --jobs=%s: %w: %s", id, err, strings.TrimSpace(stderr.String()))
	}
	jobs, err := parseSqueueJSON(out)
	if err != nil {
		return nil, fmt.Errorf("squeue --jobs=%s: %w", id, err)
	}
	return selectJobs(jobs, id), nil
}

// selectJobs keeps the records of id: squeue --json lists every job whatever --jobs says (Slurm 22.05).
func selectJobs(jobs []SlurmJob, id string) []SlurmJob {
	base, _, isTask := strings.Cut(id, "_")
	return slices.DeleteFunc(jobs, func(j SlurmJob) bool {
		if isTask {
			return j.ID != id
		}
		return strconv.Itoa(j.JobID) != base && strconv.Itoa(j.ArrayJobID) != base
	})
}

// squeueJSON is the part of squeue --json (Slurm 22.05, data_parser v0.0.38) that Jobs reads.
type squeueJSON struct {
	Jobs []struct {
		JobID       int    `json:"job_id"`
		ArrayJobID  int    `json:"array_job_id"`
		ArrayTaskID *int   `json:"array_task_id"`
		ArrayTasks  string `json:"array_task_string"`
		State       string `json:"job_state"`
		Reason      string `json:"state_reason"`
		Nodes       string `json:"nodes"`
		Restarts    int    `json:"restart_cnt"`
		ExitCode    int    `json:"exit_code"` // a wait status: exit code << 8 | signal
		Requeue     bool   `json:"requeue"`
	} `json:"jobs"`
}

func parseSqueueJSON(b []byte) ([]SlurmJob, error) {
	var v squeueJSON
	if err := json.Unmarshal(b, &v); err != nil {
		return nil, fmt.Errorf("squeue JSON: %w", err)
	}
	var jobs []SlurmJob
	for _, j := range v.Jobs {
		sj := SlurmJob{JobID: j.JobID, ArrayJobID: j.ArrayJobID, ArrayTaskID: -1, State: j.State,
			Reason: j.Reason, Nodes: j.Nodes, Restarts: j.Restarts, ExitCode: j.ExitCode >> 8 & 0xff,
			Signal: j.ExitCode & 0x7f, Requeue: j.Requeue}
		sj.ID = strconv.Itoa(j.JobID)
		switch {
		case j.ArrayJobID != 0 && j.ArrayTaskID != nil:
			sj.ArrayTaskID = *j.ArrayTaskID
			sj.ID = fmt.Sprintf("%d_%d", j.ArrayJobID, *j.ArrayTaskID)
		case j.ArrayJobID != 0: // the tasks not started yet, one record
			sj.ID = fmt.Sprintf("%d_[%s]", j.ArrayJobID, j.ArrayTasks)
		}
		jobs = append(jobs, sj)
	}
	return jobs, nil
}

// Job returns the one job or array task id.
func (s *Slurm) Job(id string) SlurmJob {
	s.t.Helper()
	jobs := s.Jobs(id)
	if len(jobs) != 1 {
		s.t.Fatalf("slurm: job %s: squeue has %d records, want 1: %+v", id, len(jobs), jobs)
	}
	return jobs[0]
}

// WaitJob waits until job (or array task) id is in one of states (default: any terminal state) and returns it.
func (s *Slurm) WaitJob(id string, states ...string) SlurmJob {
	s.t.Helper()
	return s.WaitJobWhere(id, orTerminal(states), func(j SlurmJob) bool {
		if len(states) == 0 {
			return j.Terminal()
		}
		return slices.Contains(states, j.State)
	})
}

// WaitJobWhere waits until job (or array task) id satisfies cond (described by what) and returns it.
func (s *Slurm) WaitJobWhere(id, what string, cond func(SlurmJob) bool) SlurmJob {
	s.t.Helper()
	var job SlurmJob
	s.poll("job "+id+" to reach "+what, func() (bool, string) {
		jobs, err := s.jobs(id)
		if err != nil {
			return false, err.Error()
		}
		if len(jobs) != 1 {
			return false, fmt.Sprintf("%d records: %+v", len(jobs), jobs)
		}
		job = jobs[0]
		return cond(job), fmt.Sprintf("%+v", job)
	})
	return job
}

// WaitFile waits until path exists and is not empty and returns its content (a job should write it whole, e.g.
// to a temporary name and then mv).
func (s *Slurm) WaitFile(path string) string {
	s.t.Helper()
	var b []byte
	s.poll("file "+path, func() (bool, string) {
		var err error
		b, err = os.ReadFile(path)
		return err == nil && len(b) > 0, fmt.Sprint(err)
	})
	return string(b)
}

func orTerminal(states []string) string {
	if len(states) == 0 {
		return "a terminal state"
	}
	return strings.Join(states, " or ")
}

// WaitArray waits until every task of array job id is over and returns them by task id.
func (s *Slurm) WaitArray(id string) map[int]SlurmJob {
	s.t.Helper()
	tasks := map[int]SlurmJob{}
	s.poll("array job "+id+" to end", func() (bool, string) {
		jobs, err := s.jobs(id)
		if err != nil {
			return false, err.Error()
		}
		clear(tasks)
		over := len(jobs) > 0
		for _, j := range jobs {
			over = over && j.ArrayTaskID >= 0 && j.Terminal()
			tasks[j.ArrayTaskID] = j
		}
		return over, fmt.Sprintf("%+v", jobs)
	})
	return tasks
}

// NodeState returns a node's state as scontrol shows it: a base state (IDLE, ALLOCATED, MIXED, DOWN, …) and
// flags after "+" (DOWN+NOT_RESPONDING).
func (s *Slurm) NodeState(node string) string {
	s.t.Helper()
	st, err := s.nodeState(node)
	if err != nil {
		s.t.Fatalf("slurm: %v", err)
	}
	return st
}

func (s *Slurm) nodeState(node string) (string, error) {
	out, err := s.Command("scontrol", "--oneliner", "show", "node", node).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("scontrol show node %s: %w: %s", node, err, strings.TrimSpace(string(out)))
	}
	for _, f := range strings.Fields(string(out)) {
		if v, ok := strings.CutPrefix(f, "State="); ok {
			return v, nil
		}
	}
	return "", fmt.Errorf("scontrol show node %s: no State in %q", node, out)
}

// WaitNode waits until a node's base state is state (IDLE, DOWN, …) and, unless state is DOWN, its slurmd
// answers.
func (s *Slurm) WaitNode(node, state string) {
	s.t.Helper()
	s.poll("node "+node+" to be "+state, func() (bool, string) { return s.nodeIs(node, state) })
}

func (s *Slurm) nodeIs(node, state string) (bool, string) {
	st, err := s.nodeState(node)
	if err != nil {
		return false, err.Error()
	}
	base, _, _ := strings.Cut(st, "+")
	return base == state && (state == "DOWN" || !strings.Contains(st, "NOT_RESPONDING")), st
}

// KillSlurmd kills a node's slurmd with SIGKILL, as when the daemon dies: its running jobs' processes go on
// (they belong to slurmstepd) until a new slurmd learns from slurmctld that they are gone.
func (s *Slurm) KillSlurmd(node string) {
	s.t.Helper()
	s.mu.Lock()
	d := s.slurmd[node]
	s.mu.Unlock()
	if d == nil {
		s.t.Fatalf("slurm: no node %s", node)
	}
	d.signal(syscall.SIGKILL, 0)
}

// CrashNode kills a node's slurmd and every process of its jobs with SIGKILL, as when the host dies.
func (s *Slurm) CrashNode(node string) {
	s.t.Helper()
	s.KillSlurmd(node)
	if left := killMarked(slurmNodeEnv+"="+node, s.marker, 5*time.Second); len(left) > 0 {
		s.t.Fatalf("slurm: processes of node %s survived SIGKILL: %v", node, left)
	}
}

// StartSlurmd starts a node's slurmd again (after KillSlurmd or CrashNode) and waits until the node answers.
func (s *Slurm) StartSlurmd(node string) {
	s.t.Helper()
	s.mu.Lock()
	d := s.slurmd[node]
	s.mu.Unlock()
	if d == nil {
		s.t.Fatalf("slurm: no node %s", node)
	}
	if !d.exited() {
		s.t.Fatalf("slurm: slurmd of %s is still running", node)
	}
	s.launchSlurmd(node)
	s.poll("node "+node+" to answer", func() (bool, string) {
		st, err := s.nodeState(node)
		if err != nil {
			return false, err.Error()
		}
		return !strings.HasPrefix(st, "DOWN") && !strings.Contains(st, "NOT_RESPONDING"), st
	})
}

// RestartSlurmctld stops slurmctld (SIGTERM: it saves its state to StateSaveLocation) and starts it again,
// returning when it answers.
func (s *Slurm) RestartSlurmctld() {
	s.t.Helper()
	s.mu.Lock()
	d := s.ctld
	s.mu.Unlock()
	d.signal(syscall.SIGTERM, 10*time.Second)
	s.startCtld()
}

// poll checks cond every 50 ms until it holds or the cluster's Timeout passes, then fails the test with the
// last detail cond gave and the daemons' log tails.
func (s *Slurm) poll(what string, cond func() (bool, string)) {
	s.t.Helper()
	deadline := time.Now().Add(s.cfg.Timeout)
	for {
		ok, detail := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("slurm: waited %v for %s; last: %s", s.cfg.Timeout, what, detail)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop ends every daemon and every process of the cluster's jobs, then removes Dir (after logging the daemons'
// log tails if the test failed). It runs at the end of the test; calling it earlier is allowed, once or more.
func (s *Slurm) Stop() { s.stopOnce.Do(s.stop) }

func (s *Slurm) stop() {
	s.mu.Lock()
	daemons := []*slurmDaemon{s.ctld}
	for _, d := range s.slurmd {
		daemons = append(daemons, d)
	}
	s.mu.Unlock()
	var wg sync.WaitGroup
	for _, d := range daemons {
		wg.Go(func() { d.signal(syscall.SIGTERM, 5*time.Second) })
	}
	wg.Wait()
	// slurmstepd and the jobs are not the daemons' children any more; they carry the marker or descend from
	// something that does.
	if left := killMarked(slurmClusterEnv+"="+s.marker, "", 5*time.Second); len(left) > 0 {
		s.t.Errorf("slurm: processes survived SIGKILL: %v", left)
	}
	s.munged.signal(syscall.SIGTERM, 5*time.Second)
	if s.t.Failed() {
		s.logTails()
	}
	os.RemoveAll(s.Dir)
}

func (s *Slurm) logTails() {
	logs, _ := filepath.Glob(filepath.Join(s.Dir, "log", "*"))
	for _, l := range logs {
		b, err := os.ReadFile(l)
		if err != nil || len(b) == 0 {
			continue
		}
		lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
		lines = lines[max(0, len(lines)-30):]
		s.t.Logf("slurm: %s (last %d lines):\n%s", filepath.Base(l), len(lines), strings.Join(lines, "\n"))
	}
}

// killMarked sends SIGKILL to every process whose environment holds mark (and, when cluster is not empty, also
// slurmClusterEnv=cluster) and to their descendants, until none is left or within passes; it returns the
// survivors.
func killMarked(mark, cluster string, within time.Duration) []int {
	deadline := time.Now().Add(within)
	for {
		pids := markedProcesses(mark, cluster)
		if len(pids) == 0 || time.Now().After(deadline) {
			return pids
		}
		for _, pid := range pids {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// markedProcesses returns the live processes carrying mark in their environment, and their descendants.
func markedProcesses(mark, cluster string) []int {
	entries, _ := os.ReadDir("/proc")
	parent := map[int]int{}
	var marked []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid …: comm may hold spaces and parentheses, so read after the last ')'.
		i := bytes.LastIndexByte(stat, ')')
		f := strings.Fields(string(stat[i+1:]))
		if i < 0 || len(f) < 2 || f[0] == "Z" { // a zombie is dead already
			continue
		}
		parent[pid], _ = strconv.Atoi(f[1])
		env, err := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		if err != nil {
			continue
		}
		vars := strings.Split(string(env), "\x00")
		if slices.Contains(vars, mark) && (cluster == "" || slices.Contains(vars, slurmClusterEnv+"="+cluster)) {
			marked = append(marked, pid)
		}
	}
	in := map[int]bool{}
	for _, p := range marked {
		in[p] = true
	}
	for grew := true; grew; { // add descendants until the set stops growing
		grew = false
		for pid, pp := range parent {
			if !in[pid] && in[pp] {
				in[pid], grew = true, true
			}
		}
	}
	var out []int
	for p := range in {
		out = append(out, p)
	}
	slices.Sort(out)
	return out
}
