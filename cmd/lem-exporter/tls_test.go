package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"io/fs"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/bcrypt"

	"github.com/lem-energy/lem/internal/marker"
	"github.com/lem-energy/lem/internal/testutil"
)

// selfSigned writes a self-signed certificate for 127.0.0.1 and its key into dir and returns their paths.
func selfSigned(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "lem-exporter test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	kder, err := x509.MarshalECPrivateKey(key)
	require.NoError(t, err)
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	require.NoError(t, os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644))
	require.NoError(t, os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600))
	return certFile, keyFile
}

// buildLemRun builds lem-run (the command beside this one).
func buildLemRun(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "lem-run")
	cmd := exec.Command("go", "build", "-o", bin, "../lem-run")
	cmd.Env = append(os.Environ(), "CGO_CFLAGS=-Wno-deprecated-declarations")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "building lem-run: %s", out)
	return bin
}

// lem-exporter with TLS and basic auth (exporter-toolkit web config) and a marker token; lem-run mirrors a run
// to it through --exporter https://user:password@…, trusting the self-signed certificate with
// --exporter-ca-file. The run, its phase and result reach the exporter (read back through the authenticated
// API); without the CA file the mirror fails on the certificate and says so. Neither lem-run's output nor its
// run directory nor the exporter's log holds the password, in any spelling.
func TestTLSBasicAuthAndTokenWithLemRun(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := selfSigned(t, dir)
	const user, password, token = "lem", "p@ss:w0rd/42", "marker-token-7f3a"
	hash, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	require.NoError(t, err)
	webConfig := filepath.Join(dir, "web.yml")
	require.NoError(t, os.WriteFile(webConfig, fmt.Appendf(nil, "tls_server_config:\n  cert_file: %s\n  key_file: %s\n"+
		"basic_auth_users:\n  %s: %s\n", certFile, keyFile, user, hash), 0o600))
	tokenFile := filepath.Join(dir, "token")
	require.NoError(t, os.WriteFile(tokenFile, []byte(token+"\n"), 0o600))

	addr := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	exp := exec.Command(testutil.BuildBinary(t, "lem-exporter"), "--web.listen-address", addr, "--web.config.file",
		webConfig, "--markers.token-file", tokenFile, "--replay", testutil.TracePath("h200-llm"), "--loop")
	expLogs := &testutil.Watcher{}
	exp.Stdout, exp.Stderr = expLogs, expLogs
	require.NoError(t, exp.Start())
	t.Cleanup(func() { exp.Process.Kill(); exp.Wait() })

	pemBytes, err := os.ReadFile(certFile)
	require.NoError(t, err)
	pool := x509.NewCertPool()
	require.True(t, pool.AppendCertsFromPEM(pemBytes))
	client := &http.Client{Timeout: 5 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	defer client.CloseIdleConnections()
	base := "https://" + addr
	getAs := func(path, u, p string) (int, []byte) {
		req, err := http.NewRequest("GET", base+path, nil)
		require.NoError(t, err)
		if u != "" {
			req.SetBasicAuth(u, p)
		}
		resp, err := client.Do(req)
		if err != nil {
			return 0, []byte(err.Error())
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp.StatusCode, b
	}
	require.Eventually(t, func() bool { code, _ := getAs("/healthz", user, password); return code == 200 },
		10*time.Second, 50*time.Millisecond, "exporter up over TLS; logs:\n%s", expLogs)
	code, _ := getAs("/api/v1/runs", "", "")
	assert.Equal(t, 401, code, "reads need basic auth")
	code, _ = getAs("/api/v1/runs", user, "wrong")
	assert.Equal(t, 401, code)
	if resp, err := http.Get("http://" + addr + "/healthz"); err == nil {
		resp.Body.Close()
		assert.Equal(t, 400, resp.StatusCode, "plain HTTP is not served")
	}

	exporterURL := (&url.URL{Scheme: "https", User: url.UserPassword(user, password), Host: addr}).String()
	lemRun := buildLemRun(t)
	run := func(runID string, extra ...string) (string, string) {
		out := t.TempDir()
		args := append([]string{"--replay", testutil.TracePath("h200-llm"), "--experiment", "tls", "--run-id", runID,
			"--baseline", "1s", "--out", out, "--exporter", exporterURL, "--exporter-token-file", tokenFile}, extra...)
		args = append(args, "--", "sh", "-c", "echo LEM_PHASE load; sleep 1; echo LEM_RESULT output_tokens=42")
		cmd := exec.Command(lemRun, args...)
		b, err := cmd.CombinedOutput()
		require.NoError(t, err, "lem-run:\n%s", b)
		return string(b), out
	}

	logs, out := run("r-tls", "--exporter-ca-file", certFile)
	var got marker.Run
	require.Eventually(t, func() bool {
		code, body := getAs("/api/v1/runs/r-tls", user, password)
		return code == 200 && json.Unmarshal(body, &got) == nil && !got.Active()
	}, 10*time.Second, 50*time.Millisecond, "the run reached the exporter and ended; lem-run:\n%s", logs)
	assert.Equal(t, "ok", got.Status)
	assert.Equal(t, "tls", got.Experiment)
	require.Len(t, got.Phases, 1)
	assert.Equal(t, "load", got.Phases[0].Name)
	assert.Equal(t, "42", got.Results["output_tokens"])
	assert.NotContains(t, logs, "could not post markers")

	// Without the CA file the certificate is not trusted: the run is measured, the mirror says why it failed.
	untrusted, out2 := run("r-untrusted")
	assert.Contains(t, untrusted, "could not post markers to lem-exporter")
	assert.Contains(t, untrusted, "certificate")
	code, _ = getAs("/api/v1/runs/r-untrusted", user, password)
	assert.Equal(t, 404, code)

	secrets := []string{password, url.QueryEscape(password), url.UserPassword(user, password).String(),
		strings.SplitN(url.UserPassword(user, password).String(), ":", 2)[1], token}
	for name, text := range map[string]string{"lem-run (trusted)": logs, "lem-run (untrusted)": untrusted,
		"lem-exporter": expLogs.String()} {
		for _, s := range secrets {
			assert.NotContains(t, text, s, "%s output holds a secret", name)
		}
	}
	for _, d := range []string{out, out2} {
		require.NoError(t, filepath.WalkDir(d, func(path string, e fs.DirEntry, err error) error {
			if err != nil || e.IsDir() {
				return err
			}
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			for _, s := range secrets {
				assert.NotContains(t, string(b), s, "%s holds a secret", path)
			}
			return nil
		}))
	}
}
