package testutil

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// FreePort returns a free loopback TCP port.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Prometheus is a real Prometheus server (Debian's package) started for a test on a loopback port.
type Prometheus struct {
	URL string
	t   testing.TB
}

// StartPrometheus runs prometheus with the given configuration (YAML) and extra flags; it fails the test under
// make test when the binary is missing, and skips otherwise.
func StartPrometheus(t testing.TB, config string, flags ...string) *Prometheus {
	t.Helper()
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		SkipOrFail(t, "prometheus not installed (Debian package prometheus)")
	}
	dir := t.TempDir()
	cfg := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfg, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	port := FreePort(t)
	args := []string{"--config.file=" + cfg, "--web.listen-address=127.0.0.1:" + strconv.Itoa(port), "--log.level=warn"}
	custom := false
	for _, f := range flags {
		custom = custom || strings.HasPrefix(f, "--storage.tsdb.path=")
	}
	if !custom { // a test may hand in a data directory it backfilled
		args = append(args, "--storage.tsdb.path="+filepath.Join(dir, "data"))
	}
	args = append(args, flags...)
	cmd := exec.Command(bin, args...)
	logf, _ := os.Create(filepath.Join(dir, "prometheus.log"))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting prometheus: %v", err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("prometheus log:\n%s", b)
		}
	})
	p := &Prometheus{URL: fmt.Sprintf("http://127.0.0.1:%d", port), t: t}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if r, err := http.Get(p.URL + "/-/ready"); err == nil {
			r.Body.Close()
			if r.StatusCode == 200 || r.StatusCode == http.StatusUnauthorized { // 401: up, behind basic auth
				return p
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("prometheus did not become ready at %s", p.URL)
	return nil
}

// Sample is one value of a query result.
type Sample struct {
	Metric map[string]string
	Value  float64
	Values [][2]float64 // for range-vector results: (unix seconds, value)
}

// Query runs an instant query and returns its vector or matrix.
func (p *Prometheus) Query(q string) []Sample {
	p.t.Helper()
	r, err := http.Get(p.URL + "/api/v1/query?query=" + url.QueryEscape(q))
	if err != nil {
		p.t.Fatalf("query %q: %v", q, err)
	}
	defer r.Body.Close()
	var body struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			ResultType string `json:"resultType"`
			Result     []struct {
				Metric map[string]string `json:"metric"`
				Value  [2]any            `json:"value"`
				Values [][2]any          `json:"values"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil || body.Status != "success" {
		p.t.Fatalf("query %q: %v %s", q, err, body.Error)
	}
	num := func(v any) float64 {
		switch x := v.(type) {
		case string:
			f, _ := strconv.ParseFloat(x, 64)
			return f
		case float64:
			return x
		}
		return 0
	}
	var out []Sample
	for _, res := range body.Data.Result {
		s := Sample{Metric: res.Metric}
		if body.Data.ResultType == "matrix" {
			for _, v := range res.Values {
				s.Values = append(s.Values, [2]float64{num(v[0]), num(v[1])})
			}
		} else {
			s.Value = num(res.Value[1])
		}
		out = append(out, s)
	}
	return out
}
