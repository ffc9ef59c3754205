package exporter_test

import (
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/lem-energy/lem/exporter"
	"github.com/lem-energy/lem/internal/gpu"
	lemtest "github.com/lem-energy/lem/internal/testutil"
)

// Any query of the raw-sample API (what a network client hands the exporter) is answered with data (200), or
// refused with a one-line JSON error (400, 404): never a panic, a 500, or an error spread over lines.
func FuzzSamplesQuery(f *testing.F) {
	for _, q := range []string{
		"gpu=0&start=1&end=2",
		"gpu=0&start=2026-01-01T00:00:00Z&end=2262-01-01T00:00:00Z&format=parquet",
		"gpu=0&start=0&end=9223372036&format=jsonl",
		"gpu=-1&start=NaN&end=Inf",
		"gpu=0&start=1e300&end=-1e300",
		"gpu=99999999999999999999&start=0&end=0",
		"start=&end=&gpu=",
		"gpu=0&start=1&end=2&format=csv",
		"gpu=0&gpu=1&start=1&start=2&end=3",
		"gpu=0&start=1970-01-01T00:00:00%2B14:00&end=1970-01-01T00:00:00-14:00",
	} {
		f.Add(q)
	}
	src, err := gpu.OpenReplay(lemtest.TracePath("h200-shape"), gpu.ReplayOptions{})
	if err != nil {
		f.Fatal(err)
	}
	r := lemtest.StartExporter(f, src, exporter.Options{Samples: exporter.APIOptions{MaxSamplesPerResponse: 50}})
	f.Fuzz(func(t *testing.T, q string) {
		req := httptest.NewRequest("GET", "/api/v1/samples", nil)
		req.URL.RawQuery = q
		rec := httptest.NewRecorder()
		r.Handler().ServeHTTP(rec, req)
		switch rec.Code {
		case 200:
		case 400, 404:
			var body map[string]string
			if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
				t.Fatalf("%q: %d with a body that is not a JSON object: %q", q, rec.Code, rec.Body.String())
			}
			if e := body["error"]; e == "" || strings.Contains(e, "\n") {
				t.Fatalf("%q: %d with error %q, want one line", q, rec.Code, e)
			}
		default:
			t.Fatalf("%q: status %d: %s", q, rec.Code, rec.Body.String())
		}
	})
}
