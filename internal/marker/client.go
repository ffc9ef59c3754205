package marker

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/lem-energy/lem/internal/manifest"
	"github.com/lem-energy/lem/internal/trace"
)

// Client posts markers to a marker API (a lem-exporter, or lem-run's own server).
type Client struct {
	base       string // scheme://host[:port][/path], without credentials
	user, pass string // basic auth, from the URL's user info
	token      string
	http       *http.Client
}

// NewClient makes a client for rawURL (user:password@ in it means basic auth, as lem-exporter's web config may
// require) with the marker token (may be empty).
func NewClient(rawURL, token string, opts ...ClientOption) (*Client, error) {
	u, err := url.Parse(strings.TrimRight(rawURL, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("marker URL %q: want http(s)://host[:port]", Redact(rawURL))
	}
	c := &Client{token: token, http: &http.Client{Timeout: 10 * time.Second}}
	if u.User != nil {
		c.user = u.User.Username()
		c.pass, _ = u.User.Password()
		u.User = nil
	}
	c.base = u.String()
	for _, o := range opts {
		if err := o(c); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// ClientOption configures a Client.
type ClientOption func(*Client) error

// WithCAFile trusts the PEM certificates in path, beside the system's, for an https marker URL: an exporter whose
// certificate is self-signed or from a private CA. An empty path changes nothing.
func WithCAFile(path string) ClientOption {
	return func(c *Client) error {
		if path == "" {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("CA file: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(b) {
			return fmt.Errorf("CA file %s: no PEM certificate in it", path)
		}
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		c.http.Transport = t
		return nil
	}
}

// String is the URL without credentials.
func (c *Client) String() string { return c.base }

// Redact removes the password from a URL for logs and errors.
func Redact(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		// Not parseable: strip anything between "//" and "@" by hand rather than echo a secret.
		if i := strings.Index(rawURL, "//"); i >= 0 {
			if j := strings.LastIndex(rawURL, "@"); j > i {
				return rawURL[:i+2] + "xxxxx@" + rawURL[j+1:]
			}
		}
		return rawURL
	}
	return u.Redacted()
}

// StatusError is a refused request.
type StatusError struct {
	Code int
	Msg  string
}

func (e *StatusError) Error() string { return fmt.Sprintf("HTTP %d: %s", e.Code, e.Msg) }

func (c *Client) post(ctx context.Context, path string, body any) error {
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+path, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	switch {
	case c.user != "":
		req.SetBasicAuth(c.user, c.pass)
		if c.token != "" {
			req.Header.Set(TokenHeader, c.token)
		}
	case c.token != "":
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("posting to %s%s: %w", c.base, path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		var e struct{ Error string }
		if json.Unmarshal(msg, &e) == nil && e.Error != "" {
			msg = []byte(e.Error)
		}
		return &StatusError{Code: resp.StatusCode, Msg: strings.TrimSpace(string(msg))}
	}
	io.Copy(io.Discard, resp.Body)
	return nil
}

func atOf(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UTC().Format(time.RFC3339Nano)
}

// Start starts a run.
func (c *Client) Start(ctx context.Context, r StartReq) error {
	return c.post(ctx, "/api/v1/runs", map[string]any{"run_id": r.RunID, "experiment": r.Experiment, "labels": r.Labels,
		"lease_s": r.LeaseS, "at": atOf(r.At)})
}

func runPath(id, what string) string { return "/api/v1/runs/" + url.PathEscape(id) + "/" + what }

// Phase starts a phase at at (zero: the server's now).
func (c *Client) Phase(ctx context.Context, id, name string, at time.Time) error {
	return c.post(ctx, runPath(id, "phase"), map[string]any{"name": name, "at": atOf(at)})
}

// EndPhase ends the current phase.
func (c *Client) EndPhase(ctx context.Context, id string, at time.Time) error {
	return c.post(ctx, runPath(id, "phase/end"), map[string]any{"at": atOf(at)})
}

// Result posts results.
func (c *Client) Result(ctx context.Context, id string, values map[string]string, at time.Time) error {
	body := map[string]any{}
	for k, v := range values {
		body[k] = v
	}
	if !at.IsZero() {
		body["at"] = atOf(at)
	}
	return c.post(ctx, runPath(id, "result"), body)
}

// Baseline posts one GPU's baseline.
func (c *Client) Baseline(ctx context.Context, id string, gpu int, b manifest.Baseline) error {
	return c.post(ctx, runPath(id, "baseline"), map[string]any{"gpu": gpu, "baseline": b})
}

// BeginWindow opens a window.
func (c *Client) BeginWindow(ctx context.Context, id, name, windowID string, at time.Time) error {
	return c.post(ctx, runPath(id, "windows"), map[string]any{"name": name, "id": windowID, "at": atOf(at)})
}

// EndWindow ends a window with counts for it (may be nil).
func (c *Client) EndWindow(ctx context.Context, id, name, windowID string, values map[string]string, at time.Time) error {
	return c.post(ctx, runPath(id, "windows/end"), map[string]any{"name": name, "id": windowID, "values": values, "at": atOf(at)})
}

// Renew renews a run's lease.
func (c *Client) Renew(ctx context.Context, id string) error {
	return c.post(ctx, runPath(id, "renew"), map[string]any{})
}

// End ends a run.
func (c *Client) End(ctx context.Context, id, status string, at time.Time) error {
	return c.post(ctx, runPath(id, "end"), map[string]any{"status": status, "at": atOf(at)})
}

// Mirror posts a run's events to another marker API in order, in the background, best effort: a slow or absent
// exporter never delays the measurement. While a run is active it renews the run's lease, so the exporter
// expires it if this process dies.
type Mirror struct {
	c     *Client
	log   *slog.Logger
	ch    chan trace.Event
	done  chan struct{}
	lease time.Duration
	once  sync.Once
}

// MirrorQueue is how many events a mirror holds before it drops (and logs) them.
const MirrorQueue = 4096

// NewMirror starts a mirror to c; lease is the run lease asked of the exporter (renewed at a third of it).
func NewMirror(c *Client, lease time.Duration, log *slog.Logger) *Mirror {
	m := &Mirror{c: c, log: log, ch: make(chan trace.Event, MirrorQueue), done: make(chan struct{}), lease: lease}
	go m.loop()
	return m
}

// Send queues an event (dropped, and said once, when the queue is full).
func (m *Mirror) Send(ev trace.Event) {
	if m == nil {
		return
	}
	select {
	case m.ch <- ev:
	default:
		m.once.Do(func() { m.log.Warn("marker mirror queue full: events dropped", "url", m.c.String()) })
	}
}

// Close sends what is queued (for at most wait) and stops.
func (m *Mirror) Close(wait time.Duration) {
	if m == nil {
		return
	}
	close(m.ch)
	select {
	case <-m.done:
	case <-time.After(wait):
		m.log.Warn("marker mirror: gave up sending queued events", "url", m.c.String())
	}
}

func (m *Mirror) loop() {
	defer close(m.done)
	var renew <-chan time.Time
	var active string
	if m.lease > 0 {
		t := time.NewTicker(m.lease / 3)
		defer t.Stop()
		renew = t.C
	}
	warned := false
	for {
		var ev trace.Event
		var ok bool
		select {
		case ev, ok = <-m.ch:
			if !ok {
				return
			}
		case <-renew:
			if active != "" {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				m.c.Renew(ctx, active)
				cancel()
			}
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := m.post(ctx, ev)
		cancel()
		switch ev.Type {
		case trace.EventRunStart:
			active = ev.RunID
		case trace.EventRunEnd:
			active = ""
		}
		if err != nil && !warned {
			warned = true
			m.log.Warn("could not post markers to lem-exporter", "url", m.c.String(), "err", err)
		}
	}
}

func (m *Mirror) post(ctx context.Context, ev trace.Event) error {
	switch ev.Type {
	case trace.EventRunStart:
		labels := map[string]string{}
		for k, v := range ev.Attrs {
			if name, ok := strings.CutPrefix(k, "label_"); ok {
				labels[name] = v
			}
		}
		return m.c.Start(ctx, StartReq{RunID: ev.RunID, Experiment: ev.Name, Labels: labels,
			LeaseS: m.lease.Seconds(), At: ev.Time})
	case trace.EventPhase:
		return m.c.Phase(ctx, ev.RunID, ev.Name, ev.Time)
	case trace.EventPhaseEnd:
		return m.c.EndPhase(ctx, ev.RunID, ev.Time)
	case trace.EventResult:
		return m.c.Result(ctx, ev.RunID, ev.Attrs, ev.Time)
	case trace.EventBaseline:
		if b, ok := BaselineOf(ev); ok {
			return m.c.Baseline(ctx, ev.RunID, ev.GPU, b)
		}
	case trace.EventWindowBegin:
		return m.c.BeginWindow(ctx, ev.RunID, ev.Name, ev.Attrs[trace.AttrWindowID], ev.Time)
	case trace.EventWindowEnd:
		if ev.Attrs["ended_by"] == "run_end" {
			return nil // the exporter ends its open windows with the run, as lem-run's store did
		}
		values := maps.Clone(ev.Attrs)
		delete(values, trace.AttrWindowID)
		return m.c.EndWindow(ctx, ev.RunID, ev.Name, ev.Attrs[trace.AttrWindowID], values, ev.Time)
	case trace.EventRunEnd:
		return m.c.End(ctx, ev.RunID, ev.Attrs["status"], ev.Time)
	}
	return nil
}

// FormatGPUs writes GPU indices as the workload_gpus label value.
func FormatGPUs(idx []int) string {
	s := make([]string, len(idx))
	for i, g := range idx {
		s[i] = strconv.Itoa(g)
	}
	return strings.Join(s, ",")
}
