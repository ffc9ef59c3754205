package campaign

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/lem-energy/lem/internal/gpu"
	"github.com/lem-energy/lem/internal/manifest"
	"github.com/lem-energy/lem/internal/meta"
)

// Slurm's GRES index of a GPU is its position in the node's gres.conf, not an NVML index: Prolog, Epilog and the
// job get it in SLURM_JOB_GPUS and CUDA_VISIBLE_DEVICES (renumbered from 0 inside the job where cgroups constrain
// devices). lem matches the granted GPUs to the sampled devices, whose UUIDs the manifest records, by the first
// of these that applies:
//
//   - uuid: CUDA_VISIBLE_DEVICES holds UUIDs;
//   - minor: gres.conf names each GPU's device file (/dev/nvidiaN), whose minor number the driver's
//     /proc/driver/nvidia/gpus/*/information ties to a PCI bus id, which NVML reports for each device;
//   - constrained: exactly as many devices are visible as were granted (cgroups hide the others);
//   - index: the GRES index is taken as the device index (the order of gres.conf is the order NVML enumerates).

// SlurmGrant is the GPUs Slurm granted a job on this node, as its environment says.
type SlurmGrant struct {
	GRES []int    // SLURM_JOB_GPUS: GRES indices on this node
	UUID []string // CUDA_VISIBLE_DEVICES when it holds UUIDs
}

// SlurmGrantFromEnv reads the grant from a job's (or its Prolog's) environment.
func SlurmGrantFromEnv(getenv func(string) string) (SlurmGrant, error) {
	var g SlurmGrant
	if cvd := getenv("CUDA_VISIBLE_DEVICES"); strings.Contains(cvd, "GPU-") || strings.Contains(cvd, "MIG-") {
		g.UUID = strings.Split(cvd, ",")
	}
	list := getenv("SLURM_JOB_GPUS")
	if list == "" {
		list = getenv("SLURM_STEP_GPUS")
	}
	for _, s := range strings.Split(list, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return g, fmt.Errorf("SLURM_JOB_GPUS %q: want GRES indices (0,1,…)", list)
		}
		g.GRES = append(g.GRES, n)
	}
	return g, nil
}

// Empty says whether no GPU was granted.
func (g SlurmGrant) Empty() bool { return len(g.GRES) == 0 && len(g.UUID) == 0 }

// IDs are the grant's GPUs in Slurm's own terms (GRES indices, or UUIDs).
func (g SlurmGrant) IDs() []string {
	if len(g.GRES) == 0 {
		return slices.Clone(g.UUID)
	}
	out := make([]string, len(g.GRES))
	for i, n := range g.GRES {
		out[i] = strconv.Itoa(n)
	}
	return out
}

// NodeGPUs is what a node says about its GPU device files.
type NodeGPUs struct {
	Files  []string       // gres.conf's GPU device files for this node, in GRES order
	Minors map[int]string // device minor number → PCI bus id, from the driver's /proc
}

// ReadNodeGPUs reads gres.conf (lines for node, or for every node) and the NVIDIA driver's /proc directory
// (proc: normally /proc). Missing files leave their part empty.
func ReadNodeGPUs(gresConf, node, proc string) (NodeGPUs, error) {
	var n NodeGPUs
	if b, err := os.ReadFile(gresConf); err == nil {
		if n.Files, err = parseGresConf(b, node); err != nil {
			return n, fmt.Errorf("%s: %w", gresConf, err)
		}
	}
	n.Minors = nvidiaMinors(proc)
	return n, nil
}

// parseGresConf returns the device files of the GPU lines of gres.conf that apply to node (no NodeName=, or a
// NodeName= list that includes it), expanded (/dev/nvidia[0-3] is four), in order. Lines without File= (Count=,
// AutoDetect=) add none.
func parseGresConf(b []byte, node string) ([]string, error) {
	var files []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for ln := 1; sc.Scan(); ln++ {
		line, _, _ := strings.Cut(sc.Text(), "#")
		kv := map[string]string{}
		for _, f := range strings.Fields(line) {
			k, v, ok := strings.Cut(f, "=")
			if !ok {
				continue
			}
			kv[strings.ToLower(k)] = v
		}
		if !strings.EqualFold(kv["name"], "gpu") || kv["file"] == "" {
			continue
		}
		if nodes, ok := kv["nodename"]; ok {
			list, err := expandHostlist(nodes)
			if err != nil {
				return nil, fmt.Errorf("line %d: NodeName: %w", ln, err)
			}
			if !slices.Contains(list, node) {
				continue
			}
		}
		list, err := expandHostlist(kv["file"])
		if err != nil {
			return nil, fmt.Errorf("line %d: File: %w", ln, err)
		}
		files = append(files, list...)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return files, nil
}

// maxExpand bounds a host list's expansion (a line of gres.conf names a node's devices, or a cluster's nodes).
const maxExpand = 65536

// expandHostlist expands Slurm's list syntax: comma-separated items, each with at most one bracket of numbers
// and ranges, zero-padded as written (gpu[01-03,7] is gpu01, gpu02, gpu03, gpu7).
func expandHostlist(s string) ([]string, error) {
	var out []string
	for len(s) > 0 {
		// An item ends at a comma outside brackets.
		depth, end := 0, len(s)
		for i, r := range s {
			if r == '[' {
				depth++
			} else if r == ']' {
				depth--
			} else if r == ',' && depth == 0 {
				end = i
				break
			}
		}
		item := s[:end]
		s = strings.TrimPrefix(s[end:], ",")
		open := strings.IndexByte(item, '[')
		if open < 0 {
			if strings.ContainsRune(item, ']') {
				return nil, fmt.Errorf("%q: unbalanced ]", clip(item))
			}
			if item != "" {
				out = append(out, item)
			}
			continue
		}
		close := strings.IndexByte(item, ']')
		if close < open || strings.Count(item, "[") != 1 || strings.Count(item, "]") != 1 {
			return nil, fmt.Errorf("%q: want one [ranges] per item", clip(item))
		}
		prefix, body, suffix := item[:open], item[open+1:close], item[close+1:]
		for _, r := range strings.Split(body, ",") {
			lo, hi, isRange := strings.Cut(r, "-")
			if !isRange {
				hi = lo
			}
			a, err1 := strconv.Atoi(lo)
			b, err2 := strconv.Atoi(hi)
			if err1 != nil || err2 != nil || a < 0 || b < a {
				return nil, fmt.Errorf("%q: range %q: want N or N-M with N ≤ M", clip(item), r)
			}
			if b-a >= maxExpand || len(out)+b-a >= maxExpand {
				return nil, fmt.Errorf("%q: more than %d names", clip(item), maxExpand)
			}
			for k := a; k <= b; k++ {
				out = append(out, fmt.Sprintf("%s%0*d%s", prefix, len(lo), k, suffix))
			}
		}
	}
	return out, nil
}

// nvidiaMinors reads each GPU's device minor number and PCI bus id from the NVIDIA driver's
// proc/driver/nvidia/gpus/<bus id>/information.
func nvidiaMinors(proc string) map[int]string {
	out := map[int]string{}
	dirs, _ := filepath.Glob(filepath.Join(proc, "driver", "nvidia", "gpus", "*"))
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, "information"))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			k, v, ok := strings.Cut(line, ":")
			if ok && strings.TrimSpace(k) == "Device Minor" {
				if n, err := strconv.Atoi(strings.TrimSpace(v)); err == nil {
					out[n] = filepath.Base(d)
				}
			}
		}
	}
	return out
}

// busKey normalises a PCI bus id (NVML: 00000000:18:00.0, the driver's /proc: 0000:18:00.0).
func busKey(s string) string {
	s = strings.ToLower(strings.TrimSpace(s))
	dom, rest, ok := strings.Cut(s, ":")
	if !ok || strings.Count(s, ":") != 2 {
		return s
	}
	if n, err := strconv.ParseUint(dom, 16, 32); err == nil {
		dom = strconv.FormatUint(n, 16)
	}
	return dom + ":" + rest
}

// deviceMinor is N of /dev/nvidiaN, or -1.
func deviceMinor(file string) int {
	n, err := strconv.Atoi(strings.TrimPrefix(file, "/dev/nvidia"))
	if err != nil || !strings.HasPrefix(file, "/dev/nvidia") || n < 0 {
		return -1
	}
	return n
}

// MapSlurmGPUs matches a grant to devices (the sampled ones, by index, UUID and PCI bus id) and says how.
func MapSlurmGPUs(g SlurmGrant, devs []meta.Device, node NodeGPUs) ([]meta.Device, string, error) {
	if g.Empty() {
		return nil, "", fmt.Errorf("Slurm granted no GPUs (SLURM_JOB_GPUS is empty): ask for them with executor.gpus or executor.gres")
	}
	if len(g.UUID) > 0 {
		var out []meta.Device
		for _, u := range g.UUID {
			i := slices.IndexFunc(devs, func(d meta.Device) bool { return d.UUID == strings.TrimSpace(u) })
			if i < 0 {
				return nil, "", fmt.Errorf("granted GPU %s (CUDA_VISIBLE_DEVICES) is not among the devices lem sees (%s)", u, uuids(devs))
			}
			out = append(out, devs[i])
		}
		return out, "uuid", nil
	}
	if out, ok := byMinor(g.GRES, devs, node); ok {
		return out, "minor", nil
	}
	if len(devs) == len(g.GRES) {
		return slices.Clone(devs), "constrained", nil
	}
	var out []meta.Device
	for _, n := range g.GRES {
		i := slices.IndexFunc(devs, func(d meta.Device) bool { return d.Index == n })
		if i < 0 {
			return nil, "", fmt.Errorf("granted GPU with GRES index %d: no device %d among the %d lem sees (%s), and gres.conf names no /dev/nvidiaN files to match by",
				n, n, len(devs), uuids(devs))
		}
		out = append(out, devs[i])
	}
	return out, "index", nil
}

// byMinor maps GRES indices through gres.conf's device files and the driver's minor numbers to PCI bus ids; ok is
// false where any step is missing.
func byMinor(gres []int, devs []meta.Device, node NodeGPUs) ([]meta.Device, bool) {
	var out []meta.Device
	for _, n := range gres {
		if n >= len(node.Files) {
			return nil, false
		}
		minor := deviceMinor(node.Files[n])
		bus, ok := node.Minors[minor]
		if minor < 0 || !ok {
			return nil, false
		}
		i := slices.IndexFunc(devs, func(d meta.Device) bool { return d.PCIBusID != "" && busKey(d.PCIBusID) == busKey(bus) })
		if i < 0 {
			return nil, false
		}
		out = append(out, devs[i])
	}
	return out, true
}

func uuids(devs []meta.Device) string {
	if len(devs) == 0 {
		return "none"
	}
	var s []string
	for _, d := range devs {
		s = append(s, fmt.Sprintf("%d=%s", d.Index, d.UUID))
	}
	return strings.Join(s, ", ")
}

// SlurmJob is the Slurm job this process runs in, from its environment (nil outside a job: no SLURM_JOB_ID),
// and the devices among devs that Slurm granted it. gresConf is the node's gres.conf, proc the /proc directory
// with the NVIDIA driver's information.
func SlurmJob(getenv func(string) string, submission string, devs []gpu.Device, gresConf, proc string) (*manifest.Job, []gpu.Device, error) {
	id := getenv("SLURM_JOB_ID")
	if id == "" {
		return nil, devs, nil
	}
	job := &manifest.Job{Scheduler: "slurm", ID: id, Submission: submission, Cluster: getenv("SLURM_CLUSTER_NAME"),
		Node: getenv("SLURMD_NODENAME"), Partition: getenv("SLURM_JOB_PARTITION"), Account: getenv("SLURM_JOB_ACCOUNT"),
		User: getenv("SLURM_JOB_USER")}
	if job.Node == "" {
		job.Node, _ = os.Hostname()
	}
	grant, err := SlurmGrantFromEnv(getenv)
	if err != nil {
		return nil, nil, fmt.Errorf("job %s: %w", id, err)
	}
	node, err := ReadNodeGPUs(gresConf, job.Node, proc)
	if err != nil {
		return nil, nil, fmt.Errorf("job %s: %w", id, err)
	}
	infos := make([]meta.Device, len(devs))
	for i, d := range devs {
		infos[i] = d.Info()
	}
	sel, how, err := MapSlurmGPUs(grant, infos, node)
	if err != nil {
		return nil, nil, fmt.Errorf("job %s on %s: %w", id, job.Node, err)
	}
	job.GPUs, job.GPUMapping = grant.IDs(), how
	var out []gpu.Device
	for _, s := range sel {
		for _, d := range devs {
			if d.Info().UUID == s.UUID && d.Info().Index == s.Index {
				out = append(out, d)
			}
		}
	}
	return job, out, nil
}

// GresConf is the node's gres.conf: beside slurm.conf (SLURM_CONF, else /etc/slurm/slurm.conf).
func GresConf(getenv func(string) string) string {
	conf := getenv("SLURM_CONF")
	if conf == "" {
		conf = "/etc/slurm/slurm.conf"
	}
	return filepath.Join(filepath.Dir(conf), "gres.conf")
}
