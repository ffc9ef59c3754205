package meta

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestDetectContainer(t *testing.T) {
	cases := []struct {
		name   string
		env    map[string]string
		files  []string
		cgroup string
		want   string
	}{
		{name: "bare host", cgroup: "0::/init.scope\n", want: ""},
		{name: "kubernetes", env: map[string]string{"KUBERNETES_SERVICE_HOST": "10.0.0.1"}, want: "kubernetes"},
		{name: "docker", files: []string{"/.dockerenv"}, want: "docker"},
		{name: "podman", files: []string{"/run/.containerenv", "/.dockerenv"}, want: "podman"},
		{name: "cgroup v1 docker", cgroup: "12:cpu:/docker/abc\n", want: "docker"},
		{name: "containerd", cgroup: "0::/system.slice/containerd.service\n", want: "containerd"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			exists := func(p string) bool {
				for _, f := range tc.files {
					if f == p {
						return true
					}
				}
				return false
			}
			got := detectContainer(func(k string) string { return tc.env[k] }, exists, func(string) string { return tc.cgroup })
			assert.Equal(t, tc.want, got)
		})
	}
}

func TestCollectHost(t *testing.T) {
	h := CollectHost()
	assert.NotEmpty(t, h.Hostname)
	assert.Greater(t, h.CPUCores, 0)
	assert.Greater(t, h.MemoryBytes, uint64(1<<20))
	assert.NotEmpty(t, h.Kernel)
	assert.NotEmpty(t, h.LemVersion)
}
