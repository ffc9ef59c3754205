package procmap

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// FuzzParseCgroup feeds /proc/PID/cgroup text to the parser. Seeds: the layouts in testdata/cgroup and the corpus
// in testdata/fuzz/FuzzParseCgroup. What it returns is always well-formed: a 64-hex container ID, a pod UID of a
// known form, a known runtime, and a path of the input that parses to the same.
func FuzzParseCgroup(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "cgroup", "*"))
	for _, p := range files {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c := ParseCgroup(b)
		if c == (Cgroup{}) {
			return
		}
		if c.ContainerID == "" && c.PodUID == "" {
			t.Fatalf("a result without container or pod: %+v", c)
		}
		if c.ContainerID != "" && !isHex(c.ContainerID, 64) {
			t.Fatalf("container ID %q", c.ContainerID)
		}
		if c.PodUID != "" && !isUUID(c.PodUID) && !isHex(c.PodUID, 32) {
			t.Fatalf("pod UID %q", c.PodUID)
		}
		if !slices.Contains([]string{"", RuntimeDocker, RuntimeContainerd, RuntimeCRIO, RuntimePodman}, c.Runtime) {
			t.Fatalf("runtime %q", c.Runtime)
		}
		if c.Runtime != "" && c.ContainerID == "" {
			t.Fatalf("a runtime without a container: %+v", c)
		}
		if !strings.HasPrefix(c.Path, "/") || !strings.Contains(string(b), c.Path) {
			t.Fatalf("path %q is not one of the input's", c.Path)
		}
		if again := ParsePath(c.Path); again != c {
			t.Fatalf("the path parses to %+v, not %+v", again, c)
		}
	})
}
