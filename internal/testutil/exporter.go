package testutil

import (
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"sync"
	"testing"

	"github.com/lem-energy/lem/exporter"
	"github.com/lem-energy/lem/internal/gpu"
	"github.com/lem-energy/lem/internal/marker"
)

// Exporter is a lem-exporter over a source, serving on a loopback port, for tests.
type Exporter struct {
	*exporter.Exporter
	URL  string // http://127.0.0.1:PORT
	Addr string // 127.0.0.1:PORT
	stop func()
}

// StartExporter runs an exporter over src (closed with it) on a loopback port until Stop or the test's end.
func StartExporter(t testing.TB, src gpu.Source, opts exporter.Options) *Exporter {
	t.Helper()
	return StartExporterOn(t, Listen(t), src, opts)
}

// Listen opens a loopback listener (for a server whose address must be known before it starts).
func Listen(t testing.TB) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("loopback listener: %v", err)
	}
	return ln
}

// StartExporterOn is StartExporter on a given listener.
func StartExporterOn(t testing.TB, ln net.Listener, src gpu.Source, opts exporter.Options) *Exporter {
	t.Helper()
	e, err := exporter.New(src, nil, opts, slog.Default())
	if err != nil {
		ln.Close()
		t.Fatalf("exporter: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); e.Run(ctx) }()
	srv := &http.Server{Handler: e.Handler()}
	go srv.Serve(ln)
	var once sync.Once
	x := &Exporter{Exporter: e, Addr: ln.Addr().String(), URL: "http://" + ln.Addr().String()}
	x.stop = func() {
		once.Do(func() {
			srv.Close()
			cancel()
			wg.Wait()
			src.Close()
		})
	}
	t.Cleanup(x.stop)
	return x
}

// Stop stops serving and sampling, flushing the recorder and the remote-write stream.
func (x *Exporter) Stop() { x.stop() }

// Run fetches one run from the exporter's marker API (GET /api/v1/runs/{id}); ok is false when it has none.
func (x *Exporter) Run(t testing.TB, id string) (marker.Run, bool) {
	t.Helper()
	resp, err := http.Get(x.URL + "/api/v1/runs/" + url.PathEscape(id))
	if err != nil {
		t.Fatalf("GET run %s: %v", id, err)
	}
	defer resp.Body.Close()
	var r marker.Run
	if resp.StatusCode != http.StatusOK {
		return r, false
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		t.Fatalf("decoding run %s: %v", id, err)
	}
	return r, true
}
