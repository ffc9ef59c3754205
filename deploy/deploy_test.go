// Package deploy holds deployment files; its tests check them with the tools operators would use.
package deploy

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/lem-energy/lem/internal/testenv"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// systemd-analyze verify on the unit, with ExecStart pointed at an executable that exists here.
func TestSystemdUnitVerifies(t *testing.T) {
	bin := testenv.Tool(t, "systemd-analyze", "systemd") // verify needs no running systemd (works in a container)
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
	assert.Regexp(t, `(?m)^USER 65532:65532$`, df, "runs as a numeric non-root user (Kubernetes' runAsNonRoot can check it)")
	assert.Contains(t, df, `ENTRYPOINT ["/usr/bin/lem-exporter"]`)
	assert.Contains(t, df, "EXPOSE 9636")
	assert.Contains(t, df, "--gpus all", "documents the GPU run")
	assert.Equal(t, `["/usr/bin/lem-exporter", "healthcheck"]`, healthcheckCmd(t, df), "healthy means ready")
	for _, l := range []string{"title", "description", "source", "version", "revision", "created"} {
		assert.Regexp(t, `(?m)^(?:LABEL)?\s+org\.opencontainers\.image\.`+l+`="[^"]+"`, df, "OCI label %s", l)
	}
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

func TestPrometheusConfigAndRules(t *testing.T) {
	promtool := testenv.Tool(t, "promtool", "prometheus")
	testenv.Run(t, "prometheus", promtool, "check", "config", "prometheus.yml")
	out := testenv.Run(t, "prometheus", promtool, "check", "rules", "rules.yml")
	assert.Contains(t, out, "SUCCESS: 18 rules found")
	out = testenv.Run(t, "prometheus", promtool, "test", "rules", "rules_test.yml")
	assert.Contains(t, out, "SUCCESS")
}

func TestComposeFileValidates(t *testing.T) {
	dc := testenv.Tool(t, "docker-compose", "docker-compose")
	out := testenv.Run(t, "compose", dc, "-f", "docker-compose.yml", "config")
	for _, want := range []string{"lem-exporter", "--web.enable-remote-write-receiver", "capabilities:", "- gpu",
		"/var/lib/grafana/dashboards/lem", "http://prometheus:9090/api/v1/write"} {
		assert.Contains(t, out, want)
	}
	// The provisioned dashboards directory holds the dashboards.
	for _, f := range []string{"../dashboards/lem-gpu-fleet.json", "../dashboards/lem-experiment.json",
		"grafana/provisioning/datasources/lem.yml", "grafana/provisioning/dashboards/lem.yml"} {
		_, err := os.Stat(f)
		assert.NoError(t, err, f)
	}
}
