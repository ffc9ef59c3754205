// Package procmap tells whose a process is: from the PID the GPU driver reports to the process's command, the
// container it runs in (Docker, containerd, CRI-O, Podman; cgroup v1 and v2, cgroupfs and systemd layouts) and the
// Kubernetes pod. The container ID and pod UID come from /proc/PID/cgroup; names, in this order:
//
//   - a container of Docker, or of a runtime the path does not name: the Docker Engine (ContainerInspect) where
//     its socket is readable;
//   - any container the Engine does not name (a pod's is not asked of it): the CRI runtime (containerd's CRI plugin or CRI-O, ContainerStatus:
//     the container's name and the kubelet's pod labels) where its socket is readable — CONTAINER_RUNTIME_ENDPOINT,
//     else /run/containerd/containerd.sock, else /run/crio/crio.sock;
//   - on containerd's socket, a container its CRI does not know, or any where it serves no CRI: containerd's own
//     API (Containers.Get in each of its namespaces), which knows the containers nerdctl and ctr make outside
//     the CRI's namespace: nerdctl's name label, else the kubelet's labels, else no name;
//   - a pod's container the runtime does not name: the kubelet's log directories (/var/log/pods,
//     /var/log/containers) where they are mounted. Where both answer, the runtime wins.
//
// Each runtime is asked once per container within a short timeout, and left alone for a minute when it does not
// answer: a lookup runs on the GPU's process poll.
package procmap

import (
	"bufio"
	"bytes"
	"strings"
)

// Container runtimes as procmap names them.
const (
	RuntimeDocker     = "docker"
	RuntimeContainerd = "containerd"
	RuntimeCRIO       = "cri-o"
	RuntimePodman     = "podman"
)

// Cgroup is what a process's cgroup path tells about it. Empty fields are unknown: a host process has no container
// ID; under Kubernetes with the cgroupfs driver the path does not name the runtime.
type Cgroup struct {
	Path        string // the cgroup path the container or pod was found in (the unified hierarchy's where it has one)
	Runtime     string
	ContainerID string // 64 lowercase hex digits
	PodUID      string // 8-4-4-4-12 hex digits, or 32 for a static pod's mirror
}

// ParseCgroup reads /proc/PID/cgroup ("hierarchy-ID:controllers:path" per line). The unified (v2) line is read
// first, then the v1 hierarchies in order; the first path naming a container or pod wins. Lines that do not parse
// are skipped: the file is the kernel's, but a reader of any input must not trust it.
func ParseCgroup(b []byte) Cgroup {
	var paths []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		id, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		_, path, ok := strings.Cut(rest, ":")
		if !ok || !strings.HasPrefix(path, "/") {
			continue
		}
		if id == "0" {
			paths = append([]string{path}, paths...)
		} else {
			paths = append(paths, path)
		}
	}
	for _, p := range paths {
		if c := ParsePath(p); c.ContainerID != "" || c.PodUID != "" {
			return c
		}
	}
	return Cgroup{}
}

// ParsePath reads one cgroup path. The innermost container wins (Docker in Docker nests them).
func ParsePath(path string) Cgroup {
	segs := strings.Split(path, "/")
	c := Cgroup{Path: path}
	for i := len(segs) - 1; i >= 0; i-- {
		seg := segs[i]
		if c.ContainerID == "" {
			if rt, id, ok := containerSegment(seg, parent(segs, i)); ok {
				c.Runtime, c.ContainerID = rt, id
				continue
			}
		}
		if uid, ok := podSegment(seg); ok {
			c.PodUID = uid
			break
		}
	}
	if c.ContainerID == "" && c.PodUID == "" {
		return Cgroup{}
	}
	return c
}

func parent(segs []string, i int) string {
	if i > 0 {
		return segs[i-1]
	}
	return ""
}

// scopePrefixes are the systemd scope (and cgroupfs directory) names runtimes give containers, mapped to the
// runtime. The conmon scopes of CRI-O and Podman hold the monitor, not the container: not matched.
var scopePrefixes = []struct{ prefix, runtime string }{
	{"docker-", RuntimeDocker},
	{"cri-containerd-", RuntimeContainerd},
	{"nerdctl-", RuntimeContainerd},
	{"crio-", RuntimeCRIO},
	{"libpod-", RuntimePodman},
}

// containerSegment recognises a path segment that is a container: "<prefix><id>.scope", "<prefix><id>" or a bare
// id (whose runtime is its parent's name where that is "docker", else unknown).
func containerSegment(seg, parent string) (runtime, id string, ok bool) {
	name := strings.TrimSuffix(seg, ".scope")
	if isHex(name, 64) {
		if parent == "docker" {
			return RuntimeDocker, name, true
		}
		return "", name, true
	}
	for _, p := range scopePrefixes {
		if rest, found := strings.CutPrefix(name, p.prefix); found && isHex(rest, 64) {
			return p.runtime, rest, true
		}
	}
	return "", "", false
}

// podSegment recognises a pod's cgroup: "pod<uid>" (cgroupfs) or "kubepods[-<qos>]-pod<uid_with_underscores>.slice"
// (systemd).
func podSegment(seg string) (string, bool) {
	var uid string
	switch {
	case strings.HasPrefix(seg, "pod"):
		uid = seg[3:]
	case strings.HasPrefix(seg, "kubepods-") && strings.HasSuffix(seg, ".slice"):
		_, after, found := strings.Cut(strings.TrimSuffix(seg, ".slice"), "-pod")
		if !found {
			return "", false
		}
		uid = strings.ReplaceAll(after, "_", "-")
	default:
		return "", false
	}
	if isUUID(uid) || isHex(uid, 32) {
		return uid, true
	}
	return "", false
}

func isHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// isUUID checks the 8-4-4-4-12 form of lowercase hex digits.
func isUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
				return false
			}
		}
	}
	return true
}
