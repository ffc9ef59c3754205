package meta

import (
	"bufio"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
)

// Version is lem's version: set by the linker (-X) for releases, otherwise taken from the build info.
var Version = ""

// LemVersion returns the version of the running binary.
func LemVersion() string {
	if Version != "" {
		return Version
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	v := bi.Main.Version
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 12 {
			v += "+" + s.Value[:12]
		}
	}
	if v == "" {
		v = "devel"
	}
	return v
}

// CollectHost reads the host's identity from /proc and /etc. Missing files leave fields empty:
// metadata is best effort and never fails a measurement.
func CollectHost() Host {
	h := Host{
		Arch:       runtime.GOARCH,
		CPUCores:   runtime.NumCPU(),
		LemVersion: LemVersion(),
		GoVersion:  runtime.Version(),
	}
	h.Hostname, _ = os.Hostname()
	h.OS = osRelease("/etc/os-release")
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		h.Kernel = strings.TrimSpace(string(b))
	}
	h.CPUModel = firstField("/proc/cpuinfo", "model name")
	if kb := firstField("/proc/meminfo", "MemTotal"); kb != "" {
		if n, err := strconv.ParseUint(strings.TrimSuffix(kb, " kB"), 10, 64); err == nil {
			h.MemoryBytes = n * 1024
		}
	}
	h.Container = detectContainer(os.Getenv, fileExists, readFile)
	return h
}

func osRelease(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "PRETTY_NAME="); ok {
			return strings.Trim(v, `"`)
		}
	}
	return ""
}

// firstField returns the value of the first "key: value" line with the given key.
func firstField(path, key string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == key {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

func readFile(p string) string { b, _ := os.ReadFile(p); return string(b) }

// detectContainer names the container runtime we run under, if any. The checks are the usual
// markers: Kubernetes' service variable, the files Docker and Podman create, and cgroup paths.
func detectContainer(getenv func(string) string, exists func(string) bool, read func(string) string) string {
	switch {
	case getenv("KUBERNETES_SERVICE_HOST") != "":
		return "kubernetes"
	case exists("/run/.containerenv"):
		return "podman"
	case exists("/.dockerenv"):
		return "docker"
	}
	cg := read("/proc/1/cgroup")
	for _, m := range []string{"docker", "kubepods", "containerd", "lxc"} {
		if strings.Contains(cg, m) {
			return m
		}
	}
	return ""
}
