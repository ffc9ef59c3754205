package exporter_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lem-energy/lem/exporter"
	"github.com/lem-energy/lem/internal/gpu"
)

// Every query of the raw-sample API that a client got wrong is answered 400 with a JSON object holding one key,
// "error", whose one line names the parameter and the value at fault; a valid query of the same exporter is
// answered 200, so the refusals are the query's, not the exporter's. (FuzzSamplesQuery accepts 200 and 404
// too: it says a query never breaks the API, not which queries are refused.)
func TestSamplesQueryRefusals(t *testing.T) {
	r := start(t, replay(t, "h200-shape", gpu.ReplayOptions{}), exporter.Options{})
	now := time.Now().UTC()
	from, to := now.Add(-2*time.Second).Format(time.RFC3339Nano), now.Format(time.RFC3339Nano)

	for _, c := range []struct {
		name, query string
		want        []string // what the error line must name
	}{
		{"start NaN", "gpu=0&start=NaN&end=2", []string{"start", `"NaN"`}},
		{"end Inf", "gpu=0&start=1&end=Inf", []string{"end", `"Inf"`}},
		{"end -Inf", "gpu=0&start=1&end=-Inf", []string{"end", `"-Inf"`}},
		{"start 1e300", "gpu=0&start=1e300&end=2", []string{"start", `"1e300"`}},
		{"start before 1970", "gpu=0&start=-1&end=2", []string{"start", `"-1"`}},
		{"start not a time", "gpu=0&start=yesterday&end=2", []string{"start", `"yesterday"`}},
		{"start missing", "gpu=0&end=2", []string{`"start"`, "required"}},
		{"end before start", "gpu=0&start=5&end=2", []string{"end", "before start", "1970-01-01 00:00:05", "1970-01-01 00:00:02"}},
		{"end before start, RFC 3339", "gpu=0&start=" + to + "&end=" + from, []string{"end", "before start"}},
		{"GPU not sampled", "gpu=7&start=1&end=2", []string{"gpu=7", "GPU 7 is not sampled"}},
		{"GPU negative", "gpu=-1&start=1&end=2", []string{"gpu=-1", "GPU -1 is not sampled"}},
		{"GPU not a number", "gpu=first&start=1&end=2", []string{`gpu="first"`, "GPU index"}},
		{"GPU out of int range", "gpu=99999999999999999999&start=1&end=2", []string{`gpu="99999999999999999999"`}},
		{"GPU missing", "start=1&end=2", []string{`gpu=""`}},
		{"format csv", "gpu=0&start=1&end=2&format=csv", []string{`format="csv"`, "jsonl or parquet"}},
		{"format in capitals", "gpu=0&start=1&end=2&format=PARQUET", []string{`format="PARQUET"`}},
	} {
		t.Run(c.name, func(t *testing.T) {
			resp, err := http.Get(r.URL + "/api/v1/samples?" + c.query)
			require.NoError(t, err)
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			require.NoError(t, err)
			body := string(b)
			assert.Equal(t, http.StatusBadRequest, resp.StatusCode, body)
			assert.Equal(t, "application/json", resp.Header.Get("Content-Type"))
			assert.Equal(t, 1, strings.Count(body, "\n"), "one line: %q", body)
			assert.True(t, strings.HasSuffix(body, "}\n"), "one JSON object ending the line: %q", body)
			var obj map[string]string
			require.NoError(t, json.Unmarshal(b, &obj), "a JSON object of strings: %q", body)
			require.Len(t, obj, 1, "only the error: %q", body)
			msg := obj["error"]
			require.NotEmpty(t, msg, body)
			for _, w := range c.want {
				assert.Contains(t, msg, w)
			}
		})
	}

	// The same exporter answers a valid query of the same GPU with its samples.
	resp, err := http.Get(r.URL + "/api/v1/samples?gpu=0&start=" + from + "&end=" + to)
	require.NoError(t, err)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode, string(b))
	assert.Equal(t, "application/x-ndjson", resp.Header.Get("Content-Type"))
}

// An end the API accepts but nanoseconds since 1970 cannot hold (late 2262) is an open end, not a wrap into 1678:
// the answer holds at least the samples an end of now holds.
func TestSamplesEndBeyondStamps(t *testing.T) {
	r := start(t, replay(t, "h200-shape", gpu.ReplayOptions{}), exporter.Options{})
	from := time.Now().UTC().Add(-time.Second)
	time.Sleep(1500 * time.Millisecond)
	get := func(end string) int {
		resp, err := http.Get(r.URL + "/api/v1/samples?gpu=0&start=" + from.Format(time.RFC3339Nano) + "&end=" + end)
		require.NoError(t, err)
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode, string(b))
		return strings.Count(string(b), "\n")
	}
	now := get(time.Now().UTC().Format(time.RFC3339Nano))
	late := get("2262-12-31T00:00:00Z")
	require.Greater(t, now, 0)
	require.GreaterOrEqual(t, late, now)
}
