package dashboards_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"time"
)

// api asks a Prometheus what Grafana asks it: instant queries at the end of the dashboard's time range, range
// queries over it, and series for label_values variables.
type api struct{ url string }

// result is one series of a query's answer: one value (instant) or values over time (range).
type result struct {
	Metric map[string]string
	Value  float64
	Values [][2]float64 // (unix seconds, value)
}

// hasData says whether an answer holds at least one number.
func hasData(rs []result) bool {
	for _, r := range rs {
		if len(r.Values) > 0 || r.Values == nil && !math.IsNaN(r.Value) {
			return true
		}
	}
	return false
}

var labelValuesRe = regexp.MustCompile(`^label_values\((.*),\s*(\w+)\)$`)

func (a api) get(path string, q url.Values, data any) error {
	r, err := http.Get(a.url + path + "?" + q.Encode())
	if err != nil {
		return err
	}
	defer r.Body.Close()
	var body struct {
		Status string          `json:"status"`
		Error  string          `json:"error"`
		Data   json.RawMessage `json:"data"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if body.Status != "success" {
		return errors.New(body.Error)
	}
	return json.Unmarshal(body.Data, data)
}

func unix(t time.Time) string { return strconv.FormatFloat(float64(t.UnixMilli())/1000, 'f', 3, 64) }

func number(v any) float64 {
	s, _ := v.(string)
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return math.NaN()
	}
	return f
}

// instant evaluates q at t.
func (a api) instant(q string, t time.Time) ([]result, error) {
	var d struct {
		Result []struct {
			Metric map[string]string `json:"metric"`
			Value  [2]any            `json:"value"`
		} `json:"result"`
	}
	if err := a.get("/api/v1/query", url.Values{"query": {q}, "time": {unix(t)}}, &d); err != nil {
		return nil, fmt.Errorf("%s: %w", q, err)
	}
	var out []result
	for _, r := range d.Result {
		out = append(out, result{Metric: r.Metric, Value: number(r.Value[1])})
	}
	return out, nil
}

// rangeQuery evaluates q over [from, to] every step.
func (a api) rangeQuery(q string, from, to time.Time, step time.Duration) ([]result, error) {
	var d struct {
		Result []struct {
			Metric map[string]string `json:"metric"`
			Values [][2]any          `json:"values"`
		} `json:"result"`
	}
	if err := a.get("/api/v1/query_range", url.Values{"query": {q}, "start": {unix(from)}, "end": {unix(to)},
		"step": {strconv.FormatFloat(step.Seconds(), 'f', -1, 64)}}, &d); err != nil {
		return nil, fmt.Errorf("%s: %w", q, err)
	}
	var out []result
	for _, r := range d.Result {
		x := result{Metric: r.Metric, Values: [][2]float64{}}
		for _, v := range r.Values {
			at, _ := v[0].(float64)
			x.Values = append(x.Values, [2]float64{at, number(v[1])})
		}
		out = append(out, x)
	}
	return out, nil
}

// series lists the label sets of the series matching match within [from, to].
func (a api) series(match string, from, to time.Time) ([]map[string]string, error) {
	var out []map[string]string
	if err := a.get("/api/v1/series", url.Values{"match[]": {match}, "start": {unix(from)}, "end": {unix(to)}}, &out); err != nil {
		return nil, fmt.Errorf("%s: %w", match, err)
	}
	return out, nil
}
