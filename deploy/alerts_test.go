package deploy

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/lem-energy/lem/internal/testutil"
)

// configuration gives, and instance is the host without the port.
func TestShippedScrapeConfigRaisesExporterDown(t *testing.T) {
	b, err := os.ReadFile("prometheus/prometheus.yml")
	require.NoError(t, err)
	var cfg map[string]any
	require.NoError(t, yaml.Unmarshal(b, &cfg))
	global := cfg["global"].(map[string]any)
	assert.Equal(t, "15s", global["scrape_interval"], "the shipped scrape interval")
	global["scrape_interval"], global["evaluation_interval"] = "1s", "1s"
	rules, err := filepath.Abs("prometheus/rules.yml")
	require.NoError(t, err)
	cfg["rule_files"] = []any{rules}

	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	closed := l.Addr().String()
	l.Close()
	scs := cfg["scrape_configs"].([]any)
	require.Len(t, scs, 1)
	sc := scs[0].(map[string]any)
	assert.Equal(t, "lem-exporter", sc["job_name"])
	sc["static_configs"] = []any{map[string]any{"targets": []any{closed}}}
	out, err := yaml.Marshal(cfg)
	require.NoError(t, err)

	prom := testutil.StartPrometheus(t, string(out))
	var alerts []testutil.Sample
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if alerts = prom.Query(`ALERTS{alertname="LemExporterDown"}`); len(alerts) > 0 {
			break
		}
	}
	require.Len(t, alerts, 1, "LemExporterDown for the closed target")
	m := alerts[0].Metric
	assert.Equal(t, "lem-exporter", m["job"])
	assert.Equal(t, "127.0.0.1", m["instance"], "instance is the host without the port")
	assert.Equal(t, "pending", m["alertstate"], "pending for 2 minutes before it fires")
	assert.Equal(t, "critical", m["severity"])
	up := prom.Query(`up{job="lem-exporter"}`)
	require.Len(t, up, 1)
	assert.Equal(t, 0.0, up[0].Value)
}

// The compose file's exporter host name is the host prometheus.yml scrapes: the remote-write stream (instance =
// host name) and the scrapes (instance = target host) carry the same instance label.
func TestComposeInstanceMatchesScrapeTarget(t *testing.T) {
	var compose struct {
		Services map[string]struct {
			Hostname string `yaml:"hostname"`
		} `yaml:"services"`
	}
	b, err := os.ReadFile("compose/docker-compose.yml")
	require.NoError(t, err)
	require.NoError(t, yaml.Unmarshal(b, &compose))
	var prom struct {
		ScrapeConfigs []struct {
			StaticConfigs []struct {
				Targets []string `yaml:"targets"`
			} `yaml:"static_configs"`
		} `yaml:"scrape_configs"`
	}
	b, err = os.ReadFile("prometheus/prometheus.yml")
	require.NoError(t, err)
	require.NoError(t, yaml.Unmarshal(b, &prom))
	target := prom.ScrapeConfigs[0].StaticConfigs[0].Targets[0]
	host, _, err := net.SplitHostPort(target)
	require.NoError(t, err)
	assert.Equal(t, host, compose.Services["lem-exporter"].Hostname)
	assert.True(t, strings.HasSuffix(target, fmt.Sprintf(":%d", 9636)), "the default port")
}
