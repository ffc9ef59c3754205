package runner

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/lem-energy/lem/analyze/account"
	"github.com/lem-energy/lem/internal/marker"
	"github.com/lem-energy/lem/internal/trace"
	"github.com/lem-energy/lem/runner/backend"
)

// markerHoster is implemented by backends whose workloads reach the marker server on a particular address.
type markerHoster interface {
	MarkerHost(ctx context.Context) (string, error)
}

// follow passes the workload's output through to the terminal and the log files, byte for byte, and turns whole
// stdout lines that are markers into phase and result markers, stamped with the line's own time. A marker the
// store rejects is counted and becomes a manifest warning: never a run that says ok with phases missing.
func (r *run) follow(wl backend.Workload, stdout, stderr io.Writer) {
	midLine := [2]bool{} // a long line's chunks: only a whole line can be a marker
	for l := range wl.Lines() {
		term, file, s := r.opts.Stdout, stdout, 0
		if l.Stderr {
			term, file, s = r.opts.Stderr, stderr, 1
		}
		l.WriteTo(term)
		l.WriteTo(file)
		whole := !l.Partial && !midLine[s]
		midLine[s] = l.Partial
		if l.Stderr || !whole {
			continue
		}
		r.line(l.Text, l.Time)
	}
}

// line handles one whole line of the workload's stdout.
func (r *run) line(text string, at time.Time) {
	evs, ok, err := marker.ParseLine(text, at)
	if !ok {
		return
	}
	if errors.Is(err, marker.ErrSkew) { // a marker, its time a day off: dropped, and the run says so
		r.rejected(text, err)
		return
	}
	if err != nil {
		r.mu.Lock()
		r.markers.Malformed++
		r.mu.Unlock()
		r.log.Warn("malformed marker passed through", "err", err)
		return
	}
	r.mu.Lock()
	r.markers.Parsed++
	if len(evs) > 0 && !evs[0].Time.Equal(at) { // a line without its own time is stamped exactly at
		r.markers.Stamped++
	}
	r.mu.Unlock()
	for _, ev := range evs {
		var err error
		switch ev.Type {
		case trace.EventPhase:
			_, err = r.store.Phase(r.opts.RunID, ev.Name, ev.Time)
		case trace.EventPhaseEnd:
			_, err = r.store.EndPhase(r.opts.RunID, ev.Time)
		case trace.EventResult:
			_, err = r.store.Result(r.opts.RunID, ev.Attrs, ev.Time)
		case trace.EventWindowBegin:
			_, err = r.store.BeginWindow(r.opts.RunID, ev.Name, ev.Attrs[trace.AttrWindowID], ev.Time)
		case trace.EventWindowEnd:
			values := maps.Clone(ev.Attrs)
			delete(values, trace.AttrWindowID)
			_, err = r.store.EndWindow(r.opts.RunID, ev.Name, ev.Attrs[trace.AttrWindowID], values, ev.Time)
		default:
			continue
		}
		if err != nil {
			r.rejected(text, err)
		}
	}
}

// rejected counts a marker of line text that was refused (err says why) and logs it.
func (r *run) rejected(text string, err error) {
	r.mu.Lock()
	r.markers.Rejected++
	r.mu.Unlock()
	r.log.Warn("marker rejected", "line", text, "err", err)
}

// serveMarkers serves the marker API for LEM_MARKER_URL on an address the workload reaches, with a fresh token.
func (r *run) serveMarkers(ctx context.Context) (*http.Server, string, string, error) {
	host := "127.0.0.1"
	if mh, ok := r.be.(markerHoster); ok {
		h, err := mh.MarkerHost(ctx)
		if err != nil {
			return nil, "", "", err
		}
		host = h
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return nil, "", "", fmt.Errorf("marker server on %s: %w", host, err)
	}
	var b [16]byte
	rand.Read(b[:])
	token := hex.EncodeToString(b[:])
	mux := http.NewServeMux()
	marker.NewHandler(r.store, token, r.log).WithMeter(&account.IntervalMeter{Src: r.smp}).Register(mux)
	srv := &http.Server{Handler: r.countHTTP(mux), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	u := fmt.Sprintf("http://%s/api/v1/runs/%s", ln.Addr().String(), url.PathEscape(r.opts.RunID))
	return srv, u, token, nil
}

// countHTTP counts the phase and result markers the workload posted successfully over HTTP.
func (r *run) countHTTP(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		sw := &statusWriter{ResponseWriter: w, code: http.StatusOK}
		h.ServeHTTP(sw, req)
		p := req.URL.Path
		if req.Method == http.MethodPost && sw.code < 300 &&
			(strings.HasSuffix(p, "/phase") || strings.HasSuffix(p, "/phase/end") || strings.HasSuffix(p, "/result") ||
				strings.HasSuffix(p, "/windows") || strings.HasSuffix(p, "/windows/end")) {
			r.mu.Lock()
			r.markers.HTTP++
			r.mu.Unlock()
		}
	})
}

type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	w.code = code
	w.ResponseWriter.WriteHeader(code)
}
