package campaign

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lem-energy/lem/internal/manifest"
	"github.com/lem-energy/lem/internal/meta"
)

func TestParseSqueue(t *testing.T) {
	// As squeue --noheader --states=all --format=%A|%T|%r|%N|%j|%k printed it (Slurm 22.05), with a comment that
	// holds the separator and a job without one.
	out := "5|RUNNING|None|n1|sl-w-10-c1|lem:1b95c880f827:sl-w-10-c1:1\n" +
		"10|PENDING|Dependency||sl2-w-20-c1|lem:abc:sl2-w-20-c1:1\n" +
		"2|COMPLETED|None|n1|r2|x|y\n" +
		"3|CANCELLED|None||j.sh|(null)\n\n"
	jobs, err := parseSqueue([]byte(out))
	require.NoError(t, err)
	assert.Equal(t, []slurmJob{
		{ID: "5", State: "RUNNING", Reason: "None", Node: "n1", Name: "sl-w-10-c1", Comment: "lem:1b95c880f827:sl-w-10-c1:1"},
		{ID: "10", State: "PENDING", Reason: "Dependency", Name: "sl2-w-20-c1", Comment: "lem:abc:sl2-w-20-c1:1"},
		{ID: "2", State: "COMPLETED", Reason: "None", Node: "n1", Name: "r2", Comment: "x|y"},
		{ID: "3", State: "CANCELLED", Reason: "None", Name: "j.sh"},
	}, jobs)

	for _, bad := range []string{"5|RUNNING|None|n1|name\n", "x|RUNNING|None|n1|a|b\n", "0|RUNNING|None|n1|a|b\n",
		"5||None|n1|a|b\n", "slurm_load_jobs error: Invalid job id specified\n"} {
		_, err := parseSqueue([]byte(bad))
		assert.ErrorContains(t, err, "squeue output line 1", "%q", bad)
	}
}

func TestParseSacct(t *testing.T) {
	// sacct --completion (the jobcomp log) has one record per attempt: the last counts. slurmdbd adds steps.
	out := "2|r2|COMPLETED|n1|0:0\n" +
		"7|sl-a-c1|NODE_FAIL|n2|0:0\n" +
		"7.batch|batch|CANCELLED|n2|0:15\n" +
		"7|sl-a-c1|COMPLETED|n1|0:0\n" +
		"9|sl-b-c1|CANCELLED by 0|None assigned|0:0\n"
	jobs, err := parseSacct([]byte(out))
	require.NoError(t, err)
	assert.Equal(t, []slurmJob{
		{ID: "2", Name: "r2", State: "COMPLETED", Node: "n1", ExitCode: "0:0"},
		{ID: "7", Name: "sl-a-c1", State: "COMPLETED", Node: "n1", ExitCode: "0:0"},
		{ID: "9", Name: "sl-b-c1", State: "CANCELLED", ExitCode: "0:0"},
	}, jobs)
	for _, bad := range []string{"2|r2|COMPLETED|n1\n", "a|r2|COMPLETED|n1|0:0\n", "2|r2||n1|0:0\n"} {
		_, err := parseSacct([]byte(bad))
		assert.ErrorContains(t, err, "sacct output line 1", "%q", bad)
	}
}

func TestExpandHostlist(t *testing.T) {
	cases := []struct {
		in   string
		want []string
		err  string
	}{
		{"/dev/nvidia[0-3]", []string{"/dev/nvidia0", "/dev/nvidia1", "/dev/nvidia2", "/dev/nvidia3"}, ""},
		{"gpu[01-03,7],login", []string{"gpu01", "gpu02", "gpu03", "gpu7", "login"}, ""},
		{"/dev/nvidia0,/dev/nvidia2", []string{"/dev/nvidia0", "/dev/nvidia2"}, ""},
		{"n[9-10]", []string{"n9", "n10"}, ""},
		{"n[3-1]", nil, "want N or N-M with N ≤ M"},
		{"n[1-2", nil, "one [ranges]"},
		{"n1]", nil, "unbalanced"},
		{"n[0-99999999]", nil, "more than 65536"},
	}
	for _, c := range cases {
		got, err := expandHostlist(c.in)
		if c.err != "" {
			assert.ErrorContains(t, err, c.err, c.in)
			continue
		}
		require.NoError(t, err, c.in)
		assert.Equal(t, c.want, got, c.in)
	}
}

func TestParseGresConf(t *testing.T) {
	conf := `# GPUs of this cluster
NodeName=gpu[01-02] Name=gpu Type=h200 File=/dev/nvidia[0-1]
NodeName=gpu03 Name=gpu File=/dev/nvidia3 # the other one is broken
Name=mps Count=100
NodeName=gpu[01-02] Name=gpu Type=h200 File=/dev/nvidia[2-3]
AutoDetect=nvml
`
	files, err := parseGresConf([]byte(conf), "gpu02")
	require.NoError(t, err)
	assert.Equal(t, []string{"/dev/nvidia0", "/dev/nvidia1", "/dev/nvidia2", "/dev/nvidia3"}, files)
	files, err = parseGresConf([]byte(conf), "gpu03")
	require.NoError(t, err)
	assert.Equal(t, []string{"/dev/nvidia3"}, files)
	_, err = parseGresConf([]byte("Name=gpu File=/dev/nvidia[1-0]\n"), "n1")
	assert.ErrorContains(t, err, "line 1: File")
}

// nvidiaProc writes the driver's /proc entries: minor number → PCI bus id.
func nvidiaProc(t *testing.T, minors map[int]string) string {
	proc := t.TempDir()
	for m, bus := range minors {
		d := filepath.Join(proc, "driver", "nvidia", "gpus", bus)
		require.NoError(t, os.MkdirAll(d, 0o755))
		info := "Model: \t\t NVIDIA H200\nIRQ:   \t\t 42\nGPU UUID: \t GPU-x\nVideo BIOS: \t 96.00.9F.00.04\n" +
			"Bus Type: \t PCIe\nDMA Size: \t 52 bits\nDMA Mask: \t 0xfffffffffffff\nBus Location: \t " + bus +
			"\nDevice Minor: \t " + strconv.Itoa(m) + "\nGPU Excluded:\t No\n"
		require.NoError(t, os.WriteFile(filepath.Join(d, "information"), []byte(info), 0o444))
	}
	return proc
}

func TestMapSlurmGPUs(t *testing.T) {
	// NVML enumerates by PCI bus; here the device files' minors run the other way.
	devs := []meta.Device{
		{Index: 0, UUID: "GPU-a", PCIBusID: "00000000:18:00.0"},
		{Index: 1, UUID: "GPU-b", PCIBusID: "00000000:2A:00.0"},
		{Index: 2, UUID: "GPU-c", PCIBusID: "00000000:3B:00.0"},
	}
	proc := nvidiaProc(t, map[int]string{0: "0000:3b:00.0", 1: "0000:2a:00.0", 2: "0000:18:00.0"})
	dir := t.TempDir()
	gres := filepath.Join(dir, "gres.conf")
	require.NoError(t, os.WriteFile(gres, []byte("NodeName=n1 Name=gpu File=/dev/nvidia[0-2]\n"), 0o644))
	node, err := ReadNodeGPUs(gres, "n1", proc)
	require.NoError(t, err)
	require.Len(t, node.Minors, 3)
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	uuidsOf := func(ds []meta.Device) []string {
		var out []string
		for _, d := range ds {
			out = append(out, d.UUID)
		}
		return out
	}

	cases := []struct {
		name string
		env  map[string]string
		node NodeGPUs
		devs []meta.Device
		want []string
		how  string
		err  string
	}{
		{"UUIDs in CUDA_VISIBLE_DEVICES", map[string]string{"CUDA_VISIBLE_DEVICES": "GPU-c,GPU-a", "SLURM_JOB_GPUS": "0,2"},
			node, devs, []string{"GPU-c", "GPU-a"}, "uuid", ""},
		{"device files and minors", map[string]string{"SLURM_JOB_GPUS": "0,2", "CUDA_VISIBLE_DEVICES": "0,2"},
			node, devs, []string{"GPU-c", "GPU-a"}, "minor", ""},
		{"constrained: only the granted GPU visible", map[string]string{"SLURM_JOB_GPUS": "2"},
			NodeGPUs{}, devs[1:2], []string{"GPU-b"}, "constrained", ""},
		{"GRES index as device index", map[string]string{"SLURM_JOB_GPUS": "2"},
			NodeGPUs{Files: []string{"/dev/tty4", "/dev/tty5", "/dev/tty6"}}, devs, []string{"GPU-c"}, "index", ""},
		{"nothing granted", map[string]string{"CUDA_VISIBLE_DEVICES": ""}, node, devs, nil, "", "Slurm granted no GPUs"},
		{"unknown UUID", map[string]string{"CUDA_VISIBLE_DEVICES": "GPU-z"}, node, devs, nil, "", "GPU-z (CUDA_VISIBLE_DEVICES) is not among"},
		{"index out of range", map[string]string{"SLURM_JOB_GPUS": "5"}, NodeGPUs{}, devs, nil, "", "GRES index 5: no device 5"},
		{"not indices", map[string]string{"SLURM_JOB_GPUS": "gpu:1"}, node, devs, nil, "", `SLURM_JOB_GPUS "gpu:1"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			g, err := SlurmGrantFromEnv(env(c.env))
			if err == nil {
				var got []meta.Device
				var how string
				got, how, err = MapSlurmGPUs(g, c.devs, c.node)
				if c.err == "" {
					require.NoError(t, err)
					assert.Equal(t, c.want, uuidsOf(got))
					assert.Equal(t, c.how, how)
					return
				}
			}
			assert.ErrorContains(t, err, c.err)
		})
	}
}

func TestExecutorSection(t *testing.T) {
	parse := func(exec string) (*File, error) {
		return Parse("c.yaml", []byte("name: a\nexecutor:\n"+exec+"experiments:\n  - name: x\n    command: [ls]\n"))
	}
	f, err := parse("  type: slurm\n  partition: gpu\n  gres: gpu:h200:2\n  time_limit: 90m\n  order: cycles\n  sbatch: [--constraint=h200]\n")
	require.NoError(t, err)
	assert.Equal(t, "slurm", f.ExecutorType())
	assert.Equal(t, "--gres=gpu:h200:2", f.Executor.gpuRequest())
	assert.Equal(t, 90*time.Minute, f.jobTimeLimit())
	assert.Equal(t, "01:30:00", slurmTime(f.jobTimeLimit()))
	assert.Equal(t, "1-00:01:00", slurmTime(24*time.Hour+time.Second))
	assert.Equal(t, DefaultMaxAttempts, f.Executor.maxAttempts())

	f, err = parse("  type: slurm\n")
	require.NoError(t, err)
	assert.Equal(t, "--gpus=1", f.Executor.gpuRequest())
	assert.Zero(t, f.jobTimeLimit(), "no timeout: the partition's limit")
	def, err := f.Definition()
	require.NoError(t, err)
	assert.Contains(t, string(def), `"executor":{"type":"slurm"}`, "defaults are not stored")

	f, err = Parse("c.yaml", []byte("name: a\nexperiments:\n  - name: x\n    command: [ls]\n"))
	require.NoError(t, err)
	def, err = f.Definition()
	require.NoError(t, err)
	assert.NotContains(t, string(def), "executor", "a file without executor keeps its definition")

	cases := []struct{ exec, want string }{
		{"  type: pbs\n", `c.yaml:3: executor.type: "pbs": want one of local, slurm`},
		{"  type: slurm\n  gpus: 0\n", `c.yaml:4: executor.gpus: 0: must be at least 1`},
		{"  gpus: 2\n  gres: gpu:1\n", `c.yaml:4: executor.gres: given with gpus`},
		{"  order: random\n", `c.yaml:3: executor.order: "random": want one of free, cycles, serial`},
		{"  max_attempts: 0\n", `c.yaml:3: executor.max_attempts: 0: must be 1 to 100`},
		{"  poll: 10ms\n", `c.yaml:3: executor.poll: 10ms: at least 100ms`},
		{"  lem_run: bin/lem-run\n", `c.yaml:3: executor.lem_run: "bin/lem-run": an absolute path`},
		{"  sbatch: [--job-name=x]\n", `c.yaml:3: executor.sbatch: item 1 "--job-name=x": lem sets --job-name itself`},
		{"  sbatch: [constraint]\n", `c.yaml:3: executor.sbatch: item 1 "constraint": an option`},
		{"  partition: 'a b'\n", `c.yaml:3: executor.partition: "a b": no spaces or quotes`},
		{"  time_limit: 30s\n", `c.yaml:3: executor.time_limit: 30s: at least 1m`},
	}
	for _, c := range cases {
		_, err := parse(c.exec)
		require.Error(t, err, c.exec)
		assert.True(t, strings.HasPrefix(err.Error(), c.want), "%s: %v", c.exec, err)
	}

	f, err = Parse("c.yaml", []byte("name: a\ngpus: [\"0\"]\nbackends:\n  s: {image: x, health: {http: u}}\n"+
		"experiments:\n  - name: x\n    command: [ls]\n    gpus: [\"1\"]\n  - name: y\n    command: [ls]\n    backend_container: s\n"))
	require.NoError(t, err)
	require.NoError(t, f.CheckExecutor("local"))
	err = f.CheckExecutor("slurm")
	require.Error(t, err)
	assert.Equal(t, strings.Join([]string{
		"c.yaml:2: gpus: with executor slurm, Slurm chooses each run's GPUs: ask for a count with executor.gpus or executor.gres",
		"c.yaml:8: experiments.0.gpus: with executor slurm, Slurm chooses each run's GPUs: ask for a count with executor.gpus or executor.gres",
		"c.yaml:11: experiments.1.backend_container: backend containers run with the local executor only (each Slurm job would start its own)",
	}, "\n"), err.Error())
	assert.EqualError(t, f.CheckExecutor("pbs"), `--executor "pbs": want one of local, slurm`)
}

func TestCountAndETA(t *testing.T) {
	st := &State{Runs: []RunState{{Status: "ok", DurationS: 60}, {Status: "ok", DurationS: 120}, {Status: StatusRunning},
		{Status: StatusRunning}, {Status: StatusQueued}, {Status: StatusQueued}, {Status: StatusPending},
		{Status: "failed"}}}
	c := Count(st, 0)
	assert.Equal(t, Counts{Pending: 1, Queued: 2, Running: 2, OK: 2, NotOK: 1, Total: 8, ETA: 3 * 90 * time.Second}, c,
		"5 runs left, 2 at a time: 3 rounds of the 90 s mean")
	assert.Equal(t, 6*time.Minute, Count(st, 2*time.Minute).ETA)
	assert.Equal(t, "2 queued, 2 running, 2 ok, 1 not ok, 1 not submitted of 8 runs; ETA ~4m30s", Summary(st, 0))
}

// What the cluster did to a job is worth another submission; what the run did, or a person, is not. Without a
// manifest from the job (it ended before lem-run measured anything), every end but a cancellation is retried.
func TestSlurmRetryByJobEnd(t *testing.T) {
	for _, c := range []struct {
		state  string
		retry  bool
		status string
	}{
		{"PREEMPTED", true, manifest.StatusError},
		{"NODE_FAIL", true, manifest.StatusError},
		{"BOOT_FAIL", true, manifest.StatusError},
		{"LOST", true, manifest.StatusError},
		{"FAILED", true, manifest.StatusError},
		{"OUT_OF_MEMORY", true, manifest.StatusError},
		{"CANCELLED", false, manifest.StatusError},
		{"RUNNING", false, StatusRunning},
		{"PENDING", false, StatusQueued},
	} {
		t.Run(c.state, func(t *testing.T) {
			fw := &follower{out: t.TempDir()}
			j := Job{ID: "41", Submission: "camp/r/1", State: c.state, Node: "n1"}
			r := &slurmRun{rs: &RunState{RunID: "r", Jobs: []Job{j}}}
			fw.status(r, &r.rs.Jobs[0])
			assert.Equal(t, c.retry, r.retry)
			assert.Equal(t, c.status, r.rs.Status)
			if c.status == manifest.StatusError {
				assert.Contains(t, r.rs.Error, "job 41 ended "+c.state)
			}
		})
	}
	// The job wrote its manifest (lem-run measured, then the job ended): preemption and a lost node are the
	// cluster's doing, a cancellation a person's, the run's own failure the run's.
	for _, c := range []struct {
		state, manifestStatus string
		retry                 bool
	}{
		{"PREEMPTED", manifest.StatusIntr, true},
		{"NODE_FAIL", manifest.StatusRunning, true},
		{"CANCELLED", manifest.StatusIntr, false},
		{"FAILED", manifest.StatusFail, false},
		{"COMPLETED", manifest.StatusOK, false},
	} {
		t.Run(c.state+"/measured", func(t *testing.T) {
			fw := &follower{out: t.TempDir()}
			j := Job{ID: "41", Submission: "camp/r/1", State: c.state, Node: "n1"}
			m := &manifest.Manifest{SchemaVersion: manifest.SchemaVersion, RunID: "r", Status: c.manifestStatus,
				Job: &manifest.Job{Scheduler: "slurm", ID: "41", Submission: "camp/r/1", Node: "n1"}}
			require.NoError(t, os.Mkdir(filepath.Join(fw.out, "r"), 0o755))
			require.NoError(t, manifest.Write(filepath.Join(fw.out, "r"), m))
			r := &slurmRun{rs: &RunState{RunID: "r", Jobs: []Job{j}}}
			fw.status(r, &r.rs.Jobs[0])
			assert.Equal(t, c.retry, r.retry, "status %s, error %q", r.rs.Status, r.rs.Error)
		})
	}
}
