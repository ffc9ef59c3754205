package main

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestHealthcheckStatus(t *testing.T) {
	var (
		mu   sync.Mutex
		hits []string
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		hits = append(hits, r.URL.Path)
		mu.Unlock()
		switch r.URL.Path {
		case "/readyz":
			w.Write([]byte(`{"status":"ready"}`))
		case "/notready":
			w.WriteHeader(http.StatusServiceUnavailable)
			w.Write([]byte(`{"status":"not ready","problems":["GPU 1 is lost: GPU is lost"]}`))
		case "/slow": // answers only once the client has given up
			<-r.Context().Done()
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	u, _ := url.Parse(srv.URL)

	// A closed port: listen, note the address, close.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	refused := l.Addr().String()
	l.Close()

	for _, tc := range []struct {
		name    string
		cmd     healthcheckCmd
		wantErr string // "" = healthy
	}{
		{"200 by URL", healthcheckCmd{URL: srv.URL + "/readyz"}, ""},
		{"200 from the listen address", healthcheckCmd{ListenAddress: []string{u.Host}}, ""},
		{"503 names the problem", healthcheckCmd{URL: srv.URL + "/notready"}, "503 Service Unavailable: " +
			`{"status":"not ready","problems":["GPU 1 is lost: GPU is lost"]}`},
		{"404", healthcheckCmd{URL: srv.URL + "/elsewhere"}, "404 Not Found"},
		{"connection refused", healthcheckCmd{ListenAddress: []string{refused}}, "connection refused"},
		{"timeout", healthcheckCmd{URL: srv.URL + "/slow", Timeout: 50 * time.Millisecond}, "context deadline exceeded"},
		{"not a URL", healthcheckCmd{URL: "127.0.0.1:9636/readyz"}, `--url "127.0.0.1:9636/readyz": want an http:// or https:// URL`},
		{"bad listen address", healthcheckCmd{ListenAddress: []string{"9636"}}, `--web.listen-address "9636"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.cmd.Timeout == 0 {
				tc.cmd.Timeout = 2 * time.Second
			}
			err := tc.cmd.Run()
			if tc.wantErr == "" {
				assert.NoError(t, err)
				return
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.wantErr)
		})
	}
	srv.Close() // waits for the handlers
	assert.Equal(t, []string{"/readyz", "/readyz", "/notready", "/elsewhere", "/slow"}, hits)
}

func TestReadyURL(t *testing.T) {
	for _, tc := range []struct{ listen, want string }{
		{":9636", "http://127.0.0.1:9636/readyz"},
		{"0.0.0.0:9700", "http://127.0.0.1:9700/readyz"},
		{"[::]:9636", "http://127.0.0.1:9636/readyz"},
		{"127.0.0.2:9636", "http://127.0.0.2:9636/readyz"},
		{"[::1]:9636", "http://[::1]:9636/readyz"},
		{"node1.example:9636", "http://node1.example:9636/readyz"},
	} {
		got, err := readyURL([]string{tc.listen, "127.0.0.1:1"})
		require.NoError(t, err, tc.listen)
		assert.Equal(t, tc.want, got, tc.listen)
	}
	for _, bad := range [][]string{nil, {""}, {"9636"}, {"host:"}} {
		_, err := readyURL(bad)
		assert.Error(t, err, fmt.Sprint(bad))
	}
}
