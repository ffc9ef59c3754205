package pull

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/common/model"

	"github.com/lem-energy/lem/internal/meta"
	"github.com/lem-energy/lem/internal/trace"
)

// A Prometheus point stamped 18446744073710 ms (year 2554) is refused: a trace holds 1970..2200 only, and the
// milliseconds must not wrap into range on the way to nanoseconds.
func TestFarFutureTimestampRefused(t *testing.T) {
	w, err := trace.Create(filepath.Join(t.TempDir(), "t.parquet"), meta.Environment{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	s := &model.SampleStream{Metric: model.Metric{"gpu": "0"},
		Values: []model.SamplePair{{Timestamp: model.Time(18446744073710), Value: 100}}}
	err = handPower([]*model.SampleStream{s}, map[string]model.Time{}, WriterSink{W: w}, &Stats{})
	if err == nil {
		t.Fatalf("a sample stamped %s was written without error", model.Time(18446744073710).Time().UTC())
	}
	if !strings.Contains(err.Error(), "outside 1970..2200") {
		t.Fatalf("error %q", err)
	}
}
