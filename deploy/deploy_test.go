// Package deploy holds deployment files; its tests check them with the tools operators would use.
package deploy

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// systemd-analyze verify on the unit, with ExecStart pointed at an executable that exists here.
func TestSystemdUnitVerifies(t *testing.T) {
	bin, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("SKIPPED: systemd-analyze not installed")
	}
	b, err := os.ReadFile("systemd/lem-exporter.service")
	require.NoError(t, err)
	unit := strings.Replace(string(b), "ExecStart=/usr/local/bin/lem-exporter", "ExecStart=/bin/true", 1)
	p := filepath.Join(t.TempDir(), "lem-exporter.service")
	require.NoError(t, os.WriteFile(p, []byte(unit), 0o644))
	out, err := exec.Command(bin, "verify", p).CombinedOutput()
	// Warnings about the host (no such dependency unit on a build machine) are not the unit's fault.
	var problems []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if l != "" && !strings.Contains(l, "nvidia-persistenced.service") && !strings.Contains(l, "network-online.target") {
			problems = append(problems, l)
		}
	}
	assert.Empty(t, problems, "systemd-analyze verify (err %v)", err)
	for _, want := range []string{"DynamicUser=yes", "ProtectSystem=strict", "NoNewPrivileges=yes", "KillSignal=SIGTERM"} {
		assert.Contains(t, unit, want)
	}
}

func TestDockerfileShape(t *testing.T) {
	b, err := os.ReadFile("docker/Dockerfile")
	require.NoError(t, err)
	df := string(b)
	assert.Len(t, regexp.MustCompile(`(?m)^FROM `).FindAllString(df, -1), 2, "multi-stage")
	assert.Regexp(t, `(?m)^USER lem$`, df, "runs as non-root")
	assert.Contains(t, df, `ENTRYPOINT ["/usr/bin/lem-exporter"]`)
	assert.Contains(t, df, "EXPOSE 9400")
	assert.Contains(t, df, "--gpus all", "documents the GPU run")
	// Every COPY source exists in the repository.
	for _, m := range regexp.MustCompile(`(?m)^COPY (?:--from=\S+ )?(\S+)`).FindAllStringSubmatch(df, -1) {
		if strings.HasPrefix(m[0], "COPY --from") || m[1] == "." {
			continue
		}
		for _, src := range strings.Fields(m[1]) {
			_, err := os.Stat(filepath.Join("..", src))
			assert.NoError(t, err, "COPY %s", src)
		}
	}
}
