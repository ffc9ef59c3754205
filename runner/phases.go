package runner

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/lem-energy/lem/analyze/energy"
	"github.com/lem-energy/lem/exporter"
	"github.com/lem-energy/lem/internal/manifest"
	"github.com/lem-energy/lem/internal/trace"
)

// phases computes each phase's energy on every GPU with the hybrid (phase edges resolve to 20 ms).
func (r *run) phases(hybrids map[int]*energy.Hybrid, ps []exporter.Phase, baselines map[int]*manifest.Baseline, end time.Time) {
	for _, p := range ps {
		pe := p.End
		if pe.IsZero() || pe.After(end) {
			pe = end
		}
		if !pe.After(p.Start) {
			continue
		}
		mp := manifest.Phase{Name: p.Name, Start: p.Start, End: pe, DurationS: pe.Sub(p.Start).Seconds()}
		for _, d := range r.m.Environment.Devices {
			if !r.workload(d.Index) {
				continue // observed GPUs' energy is reported apart, not in the workload's phases
			}
			h := hybrids[d.Index]
			if h == nil {
				continue
			}
			hr, err := h.Energy(p.Start, pe)
			if err != nil {
				r.log.Warn("phase energy", "phase", p.Name, "gpu", d.Index, "err", err)
				continue
			}
			pg := manifest.PhaseGPU{Index: d.Index, HybridJ: hr.Joules, AdjustedJ: hr.Joules}
			if b := baselines[d.Index]; b != nil {
				pg.AdjustedJ, _ = energy.Adjust(hr.Joules, b.MedianW, pe.Sub(p.Start))
			}
			mp.GPUs = append(mp.GPUs, pg)
			mp.Energy.HybridJ += pg.HybridJ
			mp.Energy.AdjustedJ += pg.AdjustedJ
		}
		r.m.Phases = append(r.m.Phases, mp)
	}
}

// derive computes per-token and per-request figures from the workload's results.
func (r *run) derive() {
	m := r.m
	num := func(k string) float64 {
		v, err := strconv.ParseFloat(m.Results[k], 64)
		if err != nil {
			return 0
		}
		return v
	}
	tokens, reqs := num("output_tokens"), num("requests")
	if tokens <= 0 && reqs <= 0 {
		return
	}
	d := &manifest.Derived{OutputTokens: tokens, Requests: reqs}
	if tokens > 0 {
		d.JPerOutputToken = m.Energy.HybridJ / tokens
		d.JPerOutputTokenAdj = m.Energy.AdjustedJ / tokens
		if m.Energy.HybridJ > 0 {
			d.OutputTokensPerJ = tokens / m.Energy.HybridJ
		}
		if m.Energy.AdjustedJ > 0 {
			d.OutputTokensPerJAdj = tokens / m.Energy.AdjustedJ
		}
	}
	if reqs > 0 {
		d.JPerRequest = m.Energy.HybridJ / reqs
		d.JPerRequestAdj = m.Energy.AdjustedJ / reqs
	}
	m.Derived = d
}

// mirror posts the run's markers to a running lem-exporter, so Grafana shows the run; best effort, in order.
type mirror struct {
	url, token string
	log        *slog.Logger
	ch         chan trace.Event
	once       sync.Once
}

func newMirror(url, token string, log *slog.Logger) *mirror {
	if url == "" {
		return nil
	}
	m := &mirror{url: url, token: token, log: log, ch: make(chan trace.Event, 256)}
	go m.loop()
	return m
}

// close stops the mirror once its queue is sent.
func (m *mirror) close() {
	if m != nil {
		close(m.ch)
	}
}

func (m *mirror) send(runID, experiment string, ev trace.Event) {
	if m == nil {
		return
	}
	if ev.Type == trace.EventRunStart {
		ev.Name = experiment
	}
	ev.RunID = runID
	select {
	case m.ch <- ev:
	default:
	}
}

func (m *mirror) loop() {
	client := &http.Client{Timeout: 5 * time.Second}
	for ev := range m.ch {
		var path string
		var body any
		switch ev.Type {
		case trace.EventRunStart:
			labels := map[string]string{}
			for k, v := range ev.Attrs {
				if name, ok := strings.CutPrefix(k, "label_"); ok {
					labels[name] = v
				}
			}
			path, body = "/api/v1/runs", map[string]any{"run_id": ev.RunID, "experiment": ev.Name, "labels": labels}
		case trace.EventPhase:
			path, body = "/api/v1/runs/"+ev.RunID+"/phase", map[string]string{"name": ev.Name}
		case trace.EventResult:
			path, body = "/api/v1/runs/"+ev.RunID+"/result", ev.Attrs
		case trace.EventRunEnd:
			path, body = "/api/v1/runs/"+ev.RunID+"/end", map[string]string{"status": ev.Attrs["status"]}
		default:
			continue
		}
		b, _ := json.Marshal(body)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, m.url+path, bytes.NewReader(b))
		req.Header.Set("Content-Type", "application/json")
		if m.token != "" {
			req.Header.Set("Authorization", "Bearer "+m.token)
		}
		resp, err := client.Do(req)
		cancel()
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode >= 300 {
				err = &httpStatusError{resp.StatusCode}
			}
		}
		if err != nil {
			m.once.Do(func() { m.log.Warn("could not post markers to lem-exporter", "url", m.url, "err", err) })
		}
	}
}

type httpStatusError struct{ code int }

func (e *httpStatusError) Error() string { return "HTTP " + strconv.Itoa(e.code) }
