package helm_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/lem-energy/lem/internal/testenv"
)

// The chart's copy of the rules is the file promtool tests.
func TestChartRulesAreTheTestedRules(t *testing.T) {
	want, err := os.ReadFile("../prometheus/rules.yml")
	require.NoError(t, err)
	got, err := os.ReadFile(filepath.Join(chartDir, "files/rules.yml"))
	require.NoError(t, err)
	assert.True(t, bytes.Equal(want, got),
		"deploy/helm/lem-exporter/files/rules.yml differs from deploy/prometheus/rules.yml: cp deploy/prometheus/rules.yml deploy/helm/lem-exporter/files/rules.yml")
}

// The rules as the chart renders them pass the same promtool unit tests: every alert fires, and only for the
// target that should raise it.
func TestChartRulesPassPromtoolTests(t *testing.T) {
	promtool := testenv.Tool(t, "promtool", "prometheus")
	r := mustInstall(t, "")
	require.NotNil(t, r.PrometheusRule)
	b, err := sigsyaml.Marshal(r.PrometheusRule.Spec)
	require.NoError(t, err)
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "rules.yml"), b, 0o644))
	tests, err := os.ReadFile("../prometheus/rules_test.yml")
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "rules_test.yml"), tests, 0o644))
	out := testenv.Run(t, dir, promtool, "check", "rules", "rules.yml")
	assert.Contains(t, out, "SUCCESS: 18 rules found")
	out = testenv.Run(t, dir, promtool, "test", "rules", "rules_test.yml")
	assert.Contains(t, out, "SUCCESS")
}

// A real Prometheus with the shipped prometheus.yml and rules.yml (only the target moved to a closed loopback
// port, and the intervals shortened) raises LemExporterDown for it: the rule's job matcher matches the job the
