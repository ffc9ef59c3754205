package marker_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lem-energy/lem/internal/manifest"
	"github.com/lem-energy/lem/internal/marker"
	"github.com/lem-energy/lem/internal/trace"
)

func TestGrammar(t *testing.T) {
	for _, tc := range []struct {
		what string
		err  error
	}{
		{"run id ok", marker.ValidRunID("llama-bs8_c1.2:x")},
		{"result key with dot", marker.ValidKey("ttft.p50")},
		{"phase with slash", marker.ValidPhase("decode/bs-8")},
	} {
		assert.NoError(t, tc.err, tc.what)
	}
	for _, tc := range []struct {
		what string
		err  error
	}{
		{"run id with space", marker.ValidRunID("my run")},
		{"run id traversal", marker.ValidRunID("a..b")},
		{"run id leading dash", marker.ValidRunID("-x")},
		{"run id too long", marker.ValidRunID(strings.Repeat("a", 65))},
		{"key leading digit", marker.ValidKey("1x")},
		{"key with dash", marker.ValidKey("a-b")},
		{"phase with space", marker.ValidPhase("a b")},
		{"empty experiment", marker.ValidExperiment("")},
		{"control char", marker.ValidExperiment("a\x01b")},
		{"result key at: the marker's own time", marker.ValidResults(map[string]string{"at": "5"})},
		{"too many results", marker.ValidResults(func() map[string]string {
			m := map[string]string{}
			for i := range marker.MaxResultsPerPost + 1 {
				m[fmt.Sprintf("k%d", i)] = "1"
			}
			return m
		}())},
	} {
		assert.ErrorIs(t, tc.err, marker.ErrInvalid, tc.what)
	}
}

func TestParseLine(t *testing.T) {
	now := time.Unix(100, 0)
	cases := []struct {
		line    string
		ok      bool
		wantErr bool
		types   []string
		name    string
		attrs   map[string]string
	}{
		{line: "hello world"},
		{line: ""},
		{line: "LEM_PHASEX decode"},
		{line: "LEM_PHASE " + strings.Repeat("x", marker.MaxLineLen)}, // too long to be a marker: passed through
		{line: "LEM_PHASE prefill", ok: true, types: []string{trace.EventPhase}, name: "prefill"},
		{line: "  LEM_PHASE decode/bs-8  ", ok: true, types: []string{trace.EventPhase}, name: "decode/bs-8"},
		{line: "LEM_PHASE", ok: true, wantErr: true},
		{line: "LEM_PHASE two words", ok: true, wantErr: true},
		{line: "LEM_PHASE bad$name", ok: true, wantErr: true},
		{line: "LEM_RESULT output_tokens=128 requests=1 ttft.p50=0.12", ok: true, types: []string{trace.EventResult},
			attrs: map[string]string{"output_tokens": "128", "requests": "1", "ttft.p50": "0.12"}},
		{line: "LEM_RESULT", ok: true, wantErr: true},
		{line: "LEM_RESULT tokens", ok: true, wantErr: true},
		{line: "LEM_RESULT =5", ok: true, wantErr: true},
		{line: "LEM_RESULT a-b=5", ok: true, wantErr: true},
		{line: "MARK bs8-end 100000000000 tokens=1024", ok: true, types: []string{trace.EventPhaseEnd, trace.EventResult},
			name: "bs8", attrs: map[string]string{"tokens": "1024"}},
		{line: "MARK x y", ok: true, wantErr: true},
		{line: "MARK bs8-end 1795735668519972337", ok: true, wantErr: true}, // 56 years after the line was read
		// The workload's own clock: at=<Unix seconds or RFC 3339>, on every marker line.
		{line: "LEM_PHASE decode at=100.25", ok: true, types: []string{trace.EventPhase}, name: "decode"},
		{line: "LEM_PHASE decode at=1970-01-01T00:01:40.25Z", ok: true, types: []string{trace.EventPhase}, name: "decode"},
		{line: "LEM_PHASE_END at=100.25", ok: true, types: []string{trace.EventPhaseEnd}},
		{line: "LEM_PHASE_END", ok: true, types: []string{trace.EventPhaseEnd}},
		{line: "LEM_RESULT at=100.25 output_tokens=8", ok: true, types: []string{trace.EventResult},
			attrs: map[string]string{"output_tokens": "8"}},
		{line: "LEM_WINDOW_BEGIN step id=3 at=100.25", ok: true, types: []string{trace.EventWindowBegin}, name: "step",
			attrs: map[string]string{trace.AttrWindowID: "3"}},
		{line: "LEM_WINDOW_END step at=100.25 output_tokens=8", ok: true, types: []string{trace.EventWindowEnd},
			name: "step", attrs: map[string]string{"output_tokens": "8"}},
		{line: "LEM_PHASE decode 100.25", ok: true, wantErr: true},
		{line: "LEM_PHASE decode at=100.25 x", ok: true, wantErr: true},
		{line: "LEM_PHASE decode at=yesterday", ok: true, wantErr: true},
		{line: "LEM_PHASE decode at=", ok: true, wantErr: true},
		{line: "LEM_PHASE decode at=NaN", ok: true, wantErr: true},
		{line: "LEM_PHASE_END now", ok: true, wantErr: true},
		{line: "LEM_RESULT at=100.25", ok: true, wantErr: true},                 // a time and no value
		{line: "LEM_PHASE decode at=1000000", ok: true, wantErr: true},          // 11 days after the line was read
		{line: "LEM_WINDOW_END step at=-5", ok: true, wantErr: true},            // before 1970
		{line: "LEM_WINDOW_BEGIN step at=99999999999", ok: true, wantErr: true}, // past 2262
		// One line, one time: a second at= is not the last one winning.
		{line: "LEM_RESULT at=100.25 at=100.5 output_tokens=8", ok: true, wantErr: true},
		{line: "LEM_WINDOW_BEGIN step at=100.25 at=100.5", ok: true, wantErr: true},
		{line: "LEM_WINDOW_END step at=100.25 id=3 at=100.25 output_tokens=8", ok: true, wantErr: true},
		{line: "MARK bad$-start 1795735668519972337", ok: true, wantErr: true},
	}
	for _, tc := range cases {
		t.Run(tc.line[:min(len(tc.line), 40)], func(t *testing.T) {
			evs, ok, err := marker.ParseLine(tc.line, now)
			assert.Equal(t, tc.ok, ok)
			if tc.wantErr {
				assert.Error(t, err)
				return
			}
			require.NoError(t, err)
			var types []string
			for _, e := range evs {
				types = append(types, e.Type)
			}
			assert.Equal(t, tc.types, types)
			if len(evs) == 0 {
				return
			}
			assert.Equal(t, tc.name, evs[0].Name)
			if tc.attrs != nil {
				assert.Equal(t, tc.attrs, evs[len(evs)-1].Attrs)
			}
			if strings.Contains(tc.line, "at=") {
				assert.Equal(t, time.Unix(100, 250_000_000).UTC(), evs[0].Time.UTC(), "the line's own time")
				return
			}
			if evs[0].Type == trace.EventPhase || evs[0].Type == trace.EventResult {
				assert.Equal(t, now, evs[0].Time, "stamped with the line's time")
			}
		})
	}
}

func FuzzParseLine(f *testing.F) {
	for _, s := range []string{"LEM_PHASE prefill", "LEM_RESULT a=1 b.c=2", "MARK x-start 1 k=v", "MARK end 5",
		"LEM_RESULT =", "MARK", "\x00LEM_PHASE", "LEM_PHASE " + strings.Repeat("é", 100), "LEM_PHASE d at=1.5",
		"LEM_PHASE_END at=2", "LEM_WINDOW_END w id=1 at=1970-01-01T00:00:02Z n=3", "LEM_RESULT at=0.000000001 a=1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		evs, ok, err := marker.ParseLine(line, time.Unix(1, 0))
		if !ok || err != nil {
			assert.Empty(t, evs)
			return
		}
		// Whatever parses is valid for the store.
		st := marker.NewStore(func() time.Time { return time.Unix(1, 0) }, marker.Limits{}, nil)
		_, err = st.Start(marker.StartReq{RunID: "r", Experiment: "e"})
		require.NoError(t, err)
		for _, e := range evs {
			switch e.Type {
			case trace.EventPhase:
				_, err = st.Phase("r", e.Name, e.Time)
			case trace.EventPhaseEnd:
				if _, err = st.EndPhase("r", e.Time); errors.Is(err, marker.ErrConflict) {
					err = nil // no phase to end: the store's answer, not a parse error
				}
			case trace.EventResult:
				_, err = st.Result("r", e.Attrs, e.Time)
			}
			require.NoError(t, err, "parsed %q", line)
			if d := e.Time.Sub(time.Unix(1, 0)); d > marker.MaxSkew || d < -marker.MaxSkew {
				t.Fatalf("parsed %q: time %s beyond the skew bound", line, e.Time)
			}
		}
	})
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time               { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration)          { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }
func newClock() *clock                        { return &clock{t: time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)} }
func (c *clock) at(d time.Duration) time.Time { return c.now().Add(d) }

func TestStorePhasesAggregateAndResultsAdd(t *testing.T) {
	c := newClock()
	var events []trace.Event
	st := marker.NewStore(c.now, marker.Limits{}, func(e trace.Event) { events = append(events, e) })
	_, err := st.Start(marker.StartReq{RunID: "r1", Experiment: "e"})
	require.NoError(t, err)
	t0 := c.now()
	for i := range 1000 {
		_, err := st.Phase("r1", "prefill", t0.Add(time.Duration(3*i)*time.Second))
		require.NoError(t, err)
		_, err = st.Phase("r1", "decode", t0.Add(time.Duration(3*i+1)*time.Second))
		require.NoError(t, err)
		_, err = st.Result("r1", map[string]string{"output_tokens": "10", "model": "m"}, time.Time{})
		require.NoError(t, err)
	}
	_, err = st.End("r1", "", t0.Add(3000*time.Second))
	require.NoError(t, err)
	r, ok := st.Get("r1")
	require.True(t, ok)
	require.Len(t, r.Phases, 2, "one entry per phase name, however often it recurs")
	assert.Equal(t, "prefill", r.Phases[0].Name)
	assert.Equal(t, 1000, r.Phases[0].Count)
	assert.InDelta(t, 1000.0, r.Phases[0].TotalS, 1e-6, "1 s each")
	assert.InDelta(t, 2000.0, r.Phases[1].TotalS, 1e-6, "2 s each, the last ended by the run's end")
	assert.Equal(t, "10000", r.Results["output_tokens"], "numbers add up")
	assert.Equal(t, "m", r.Results["model"])
	assert.Equal(t, "ok", r.Status)
	assert.Len(t, events, 1+3000+1, "every marker is an event: the trace keeps each occurrence")
	assert.Equal(t, trace.EventRunEnd, events[len(events)-1].Type)
}

func TestStoreLimits(t *testing.T) {
	c := newClock()
	st := marker.NewStore(c.now, marker.Limits{MaxActive: 2, MaxEnded: 3, Grace: time.Minute, MaxPhaseNames: 2,
		MaxResultKeys: 2, MaxRunAge: time.Hour}, nil)
	for _, id := range []string{"a", "b"} {
		_, err := st.Start(marker.StartReq{RunID: id, Experiment: "e"})
		require.NoError(t, err)
	}
	_, err := st.Start(marker.StartReq{RunID: "c", Experiment: "e"})
	assert.ErrorIs(t, err, marker.ErrLimit)
	_, err = st.Start(marker.StartReq{RunID: "a", Experiment: "e"})
	assert.ErrorIs(t, err, marker.ErrConflict)

	_, err = st.Phase("a", "p1", time.Time{})
	require.NoError(t, err)
	_, err = st.Phase("a", "p2", time.Time{})
	require.NoError(t, err)
	_, err = st.Phase("a", "p1", time.Time{})
	assert.NoError(t, err, "a known name is not a new one")
	_, err = st.Phase("a", "p3", time.Time{})
	assert.ErrorIs(t, err, marker.ErrLimit)
	_, err = st.Result("a", map[string]string{"k1": "1", "k2": "2"}, time.Time{})
	require.NoError(t, err)
	_, err = st.Result("a", map[string]string{"k1": "1"}, time.Time{})
	assert.NoError(t, err)
	_, err = st.Result("a", map[string]string{"k3": "1"}, time.Time{})
	assert.ErrorIs(t, err, marker.ErrLimit)

	// Ended runs: kept during the grace period, at most MaxEnded of them (the oldest go first).
	for i := range 5 {
		id := fmt.Sprintf("x%d", i)
		_, err := st.Start(marker.StartReq{RunID: id, Experiment: "e"})
		if err != nil { // two active already: end b first
			_, err2 := st.End("b", "ok", time.Time{})
			require.NoError(t, err2)
			_, err = st.Start(marker.StartReq{RunID: id, Experiment: "e"})
		}
		require.NoError(t, err)
		c.add(time.Second)
		_, err = st.End(id, "ok", time.Time{})
		require.NoError(t, err)
	}
	var ended []string
	for _, r := range st.Snapshot() {
		if !r.Active() {
			ended = append(ended, r.ID)
		}
	}
	assert.Equal(t, []string{"x2", "x3", "x4"}, ended)
	assert.Equal(t, uint64(3), st.Stats().Evicted)
	c.add(2 * time.Minute)
	for _, r := range st.Snapshot() {
		assert.True(t, r.Active(), "ended runs are gone after the grace period: %s", r.ID)
	}
	// MaxRunAge expires the run whose runner never ended it.
	c.add(time.Hour)
	for _, r := range st.Snapshot() {
		assert.Equal(t, marker.StatusExpired, r.Status, r.ID)
	}
	assert.Equal(t, uint64(1), st.Stats().Expired)
	assert.Equal(t, map[string]uint64{"limit": 4, "conflict": 1}, st.Stats().Rejected,
		"two starts, a phase name and a result key over their caps; a duplicate id")
}

func TestStoreLeaseExpiresDeadRunners(t *testing.T) {
	c := newClock()
	var ends []trace.Event
	st := marker.NewStore(c.now, marker.Limits{MaxActive: 1}, func(e trace.Event) {
		if e.Type == trace.EventRunEnd {
			ends = append(ends, e)
		}
	})
	_, err := st.Start(marker.StartReq{RunID: "r", Experiment: "e", LeaseS: 30})
	require.NoError(t, err)
	c.add(20 * time.Second)
	_, err = st.Renew("r")
	require.NoError(t, err)
	c.add(20 * time.Second)
	r, _ := st.Get("r")
	assert.True(t, r.Active(), "renewed 20 s ago, lease 30 s")
	c.add(11 * time.Second)
	_, err = st.Start(marker.StartReq{RunID: "next", Experiment: "e"})
	require.NoError(t, err, "the dead runner's run no longer holds the only slot")
	r, _ = st.Get("r")
	assert.Equal(t, marker.StatusExpired, r.Status)
	require.Len(t, ends, 1)
	assert.Equal(t, marker.StatusExpired, ends[0].Attrs["status"])
}

// Concurrent writers and readers: run with -race (a shared Results map once crashed the JSON writer).
func TestStoreConcurrent(t *testing.T) {
	st := marker.NewStore(time.Now, marker.Limits{}, nil)
	_, err := st.Start(marker.StartReq{RunID: "r", Experiment: "e"})
	require.NoError(t, err)
	srv := httptest.NewServer(handler(st, ""))
	defer srv.Close()
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				body := fmt.Sprintf(`{"k%d":%d}`, w%4, i)
				resp, err := http.Post(srv.URL+"/api/v1/runs/r/result", "application/json", strings.NewReader(body))
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				resp, err = http.Get(srv.URL + "/api/v1/runs/r")
				if err == nil {
					var r marker.Run
					json.NewDecoder(resp.Body).Decode(&r)
					resp.Body.Close()
				}
				st.Snapshot()
			}
		}()
	}
	wg.Wait()
	r, _ := st.Get("r")
	// Each k sums 0..49 twice (two writers per key).
	for k := range 4 {
		assert.Equal(t, "2450", r.Results[fmt.Sprintf("k%d", k)])
	}
}

func handler(st *marker.Store, token string) http.Handler {
	mux := http.NewServeMux()
	marker.NewHandler(st, token, nil).Register(mux)
	return mux
}

func TestHandlerBodiesAndAuth(t *testing.T) {
	c := newClock()
	st := marker.NewStore(c.now, marker.Limits{}, nil)
	h := handler(st, "s3cret")
	do := func(method, path, body string, hdr map[string]string) (int, string) {
		req := httptest.NewRequest(method, path, strings.NewReader(body))
		req.RemoteAddr = "192.0.2.7:1234"
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec.Code, rec.Body.String()
	}
	bearer := map[string]string{"Authorization": "Bearer s3cret"}
	code, _ := do("POST", "/api/v1/runs", `{"run_id":"r","experiment":"e"}`, nil)
	assert.Equal(t, 401, code, "no token")
	code, _ = do("POST", "/api/v1/runs", `{"run_id":"r","experiment":"e"}`, map[string]string{"Authorization": "bearer s3cret"})
	assert.Equal(t, 201, code, "the scheme is case-insensitive (RFC 7235)")
	code, _ = do("POST", "/api/v1/runs/r/phase", `{"name":"p"}`, map[string]string{"Authorization": "Basic dTpw",
		marker.TokenHeader: "s3cret"})
	assert.Equal(t, 200, code, "token in its own header beside basic auth")
	code, _ = do("POST", "/api/v1/runs/r/phase", `{"name":"p"}`, map[string]string{"Authorization": "Bearer wrong"})
	assert.Equal(t, 401, code)
	for _, tc := range []struct {
		name, path, body string
		code             int
		part             string
	}{
		{"trailing junk", "/api/v1/runs/r/phase", `{"name":"p"} {"x":1}`, 400, "after the JSON object"},
		{"unknown field", "/api/v1/runs/r/phase", `{"nam":"p"}`, 400, "unknown field"},
		{"NaN at", "/api/v1/runs/r/phase", `{"name":"p","at":"NaN"}`, 400, "time"},
		{"absurd at", "/api/v1/runs/r/phase", `{"name":"p","at":1e300}`, 400, "time"},
		{"far at", "/api/v1/runs/r/phase", `{"name":"p","at":"2001-01-01T00:00:00Z"}`, 400, "from the exporter's clock"},
		{"big number result", "/api/v1/runs/r/result", `{"x":1e308}`, 200, ""},
		{"non-finite result", "/api/v1/runs/r/result", `{"x":1e999}`, 400, ""},
		{"object result", "/api/v1/runs/r/result", `{"x":{"a":1}}`, 400, "number, string or boolean"},
		{"dotted key", "/api/v1/runs/r/result", `{"ttft.p50":0.12}`, 200, ""},
		{"bad baseline", "/api/v1/runs/r/baseline", `{"gpu":0,"baseline":{"median_w":-1}}`, 400, "baseline"},
		{"end phase", "/api/v1/runs/r/phase/end", `{}`, 200, ""},
		{"end phase twice", "/api/v1/runs/r/phase/end", `{}`, 409, "no current phase"},
		{"huge body", "/api/v1/runs/r/result", `{"x":"` + strings.Repeat("a", marker.MaxBody) + `"}`, 400, ""},
	} {
		code, body := do("POST", tc.path, tc.body, bearer)
		assert.Equal(t, tc.code, code, "%s: %s", tc.name, body)
		if tc.part != "" {
			assert.Contains(t, body, tc.part, tc.name)
		}
	}
	r, _ := st.Get("r")
	assert.Equal(t, "1e308", r.Results["x"], "a result of 1e308 is a number")
	assert.Equal(t, "0.12", r.Results["ttft.p50"])
	// A posted baseline is kept and becomes an event that decodes to the same values.
	b := manifest.Baseline{Start: c.at(-30 * time.Second), End: c.now(), MedianW: 78.5, P25W: 78.1, P75W: 79, Samples: 1500}
	bb, _ := json.Marshal(map[string]any{"gpu": 2, "baseline": b})
	code, body := do("POST", "/api/v1/runs/r/baseline", string(bb), bearer)
	require.Equal(t, 200, code, body)
	r, _ = st.Get("r")
	assert.InDelta(t, 78.5, r.Baselines[2].MedianW, 1e-12)
	got, ok := marker.BaselineOf(marker.BaselineEvent(2, r.Baselines[2]))
	require.True(t, ok)
	assert.Equal(t, r.Baselines[2].MedianW, got.MedianW)
	assert.InDelta(t, 0.9, got.IQRW, 1e-12)
	assert.True(t, got.Start.Equal(b.Start))
}

func TestRedact(t *testing.T) {
	assert.Equal(t, "http://user:xxxxx@host:9636", marker.Redact("http://user:pw@host:9636"))
	c, err := marker.NewClient("http://user:pw@host:9636/", "tok")
	require.NoError(t, err)
	assert.Equal(t, "http://host:9636", c.String())
	assert.NotContains(t, marker.Redact("http://u:p w@%zz"), "p w")
}

// Windows may overlap and nest, and several of one name run at once when they have ids; a window the run's end
// finds open ends with it, marked.
func TestWindows(t *testing.T) {
	c := newClock()
	var events []trace.Event
	st := marker.NewStore(c.now, marker.Limits{}, func(e trace.Event) { events = append(events, e) })
	_, err := st.Start(marker.StartReq{RunID: "r", Experiment: "e"})
	require.NoError(t, err)
	sec := func(n int) time.Time { return c.at(time.Duration(n) * time.Second) }
	_, err = st.BeginWindow("r", "batch", "", sec(1))
	require.NoError(t, err)
	_, err = st.BeginWindow("r", "req", "a", sec(2))
	require.NoError(t, err)
	_, err = st.BeginWindow("r", "req", "b", sec(3))
	require.NoError(t, err, "a second window of one name, with its own id")
	_, err = st.BeginWindow("r", "req", "a", sec(3))
	assert.ErrorIs(t, err, marker.ErrConflict, "the same window twice")
	w, err := st.EndWindow("r", "req", "a", map[string]string{"output_tokens": "17"}, sec(4))
	require.NoError(t, err)
	assert.Equal(t, sec(2), w.Start)
	assert.Equal(t, sec(4), w.End)
	_, err = st.EndWindow("r", "req", "zz", nil, sec(4))
	assert.ErrorIs(t, err, marker.ErrNotFound)
	_, err = st.EndWindow("r", "req", "", map[string]string{"a-b": "1"}, sec(4))
	assert.ErrorIs(t, err, marker.ErrInvalid)
	got, ok := st.Window("r", "req", "a")
	require.True(t, ok)
	assert.Equal(t, "17", got.Values["output_tokens"])
	_, err = st.End("r", "ok", sec(6))
	require.NoError(t, err)
	var ends []string
	for _, e := range events {
		if e.Type == trace.EventWindowEnd {
			ends = append(ends, e.Name+"#"+e.Attrs[trace.AttrWindowID]+":"+e.Attrs["ended_by"])
		}
	}
	assert.ElementsMatch(t, []string{"req#a:", "batch#:run_end", "req#b:run_end"}, ends)
	b, ok := st.Window("r", "batch", "")
	require.True(t, ok)
	assert.Equal(t, sec(6), b.End, "ended by the run")
}

func TestParseWindowLines(t *testing.T) {
	now := time.Unix(5, 0)
	evs, ok, err := marker.ParseLine("LEM_WINDOW_BEGIN step id=7", now)
	require.True(t, ok)
	require.NoError(t, err)
	assert.Equal(t, trace.EventWindowBegin, evs[0].Type)
	assert.Equal(t, "step", evs[0].Name)
	assert.Equal(t, map[string]string{"id": "7"}, evs[0].Attrs)
	evs, _, err = marker.ParseLine("LEM_WINDOW_END step id=7 output_tokens=12", now)
	require.NoError(t, err)
	assert.Equal(t, map[string]string{"id": "7", "output_tokens": "12"}, evs[0].Attrs)
	for _, bad := range []string{"LEM_WINDOW_BEGIN", "LEM_WINDOW_BEGIN a b", "LEM_WINDOW_BEGIN a tokens=1",
		"LEM_WINDOW_END a id=x/y", "LEM_WINDOW_END bad$ id=1"} {
		_, ok, err := marker.ParseLine(bad, now)
		assert.True(t, ok, bad)
		assert.Error(t, err, bad)
	}
}

func TestParseTimeExactSeconds(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Time
	}{
		{"1764381600.123456789", time.Unix(1764381600, 123456789)}, // a float64 would be ~100 ns off
		{"1764381600.000000001", time.Unix(1764381600, 1)},
		{"1764381600.1234567899", time.Unix(1764381600, 123456789)}, // past the ninth decimal: dropped
		{"1764381600", time.Unix(1764381600, 0)},
		{"1764381600.5", time.Unix(1764381600, 500_000_000)},
		{"1.5e9", time.Unix(1_500_000_000, 0)}, // other numbers: read as floats
		{"2026-11-29T02:00:00.000000007Z", time.Unix(1795917600, 7)},
	} {
		got, err := marker.ParseTime(tc.in)
		require.NoError(t, err, tc.in)
		assert.Equal(t, tc.want.UTC(), got.UTC(), tc.in)
	}
	for _, bad := range []string{"", "1.2.3", "-1", "9223372037", "1e400", "NaN", "soon"} {
		_, err := marker.ParseTime(bad)
		assert.ErrorIs(t, err, marker.ErrInvalid, bad)
	}
}

// A marker whose own time lies a day from its reading is a marker dropped (ErrSkew), not ordinary output.
func TestParseLineSkewRejected(t *testing.T) {
	now := time.Unix(1795917600, 0)
	for _, line := range []string{"LEM_PHASE d at=1", "LEM_PHASE_END at=1795831199", "LEM_RESULT at=1796004001 n=1",
		"LEM_WINDOW_END w at=1 n=1", "MARK old-start 1000000000"} {
		_, ok, err := marker.ParseLine(line, now)
		assert.True(t, ok, line)
		assert.ErrorIs(t, err, marker.ErrSkew, line)
		assert.ErrorIs(t, err, marker.ErrInvalid, line)
	}
	for _, line := range []string{"LEM_PHASE d at=soon", "LEM_PHASE d e", "LEM_RESULT at=1795917600"} {
		_, _, err := marker.ParseLine(line, now)
		assert.Error(t, err, line)
		assert.NotErrorIs(t, err, marker.ErrSkew, line)
	}
}
