package trace

import (
	"math"
	"testing"
	"time"
)

// A stamp is the same instant as the time it came from, and its methods answer as time.Time's do for every time a
// trace accepts, including the edges of its range and instants before 1970 (refused, but formatted in errors).
func TestStampAgreesWithTime(t *testing.T) {
	times := []time.Time{
		time.Unix(0, 0), time.Unix(0, 1), time.Unix(-1, 999_999_999), time.Unix(-2, 1),
		time.Date(2026, 11, 29, 4, 19, 22, 123_456_789, time.UTC),
		time.Date(2026, 11, 29, 4, 19, 22, 999_999_999, time.FixedZone("x", 3600)),
		time.Date(2199, 12, 31, 23, 59, 59, 999_999_999, time.UTC),
	}
	for _, a := range times {
		s := StampOf(a)
		if !s.Time().Equal(a) || s.Time().Location() != time.UTC {
			t.Errorf("StampOf(%v).Time() = %v, want the same instant in UTC", a, s.Time())
		}
		if s.UnixNano() != a.UnixNano() || s.UnixMilli() != a.UnixMilli() {
			t.Errorf("%v: UnixNano %d UnixMilli %d, time.Time's %d %d", a, s.UnixNano(), s.UnixMilli(), a.UnixNano(), a.UnixMilli())
		}
		if got, want := s.String(), a.UTC().String(); got != want {
			t.Errorf("String %q, want %q", got, want)
		}
		if got, want := s.Format(time.RFC3339Nano), a.UTC().Format(time.RFC3339Nano); got != want {
			t.Errorf("Format %q, want %q", got, want)
		}
		for _, b := range times {
			u := StampOf(b)
			if s.Sub(u) != a.Sub(b) || s.Before(u) != a.Before(b) || s.After(u) != a.After(b) ||
				s.Equal(u) != a.Equal(b) || s.Compare(u) != a.Compare(b) {
				t.Errorf("%v vs %v: Sub/Before/After/Equal/Compare differ from time.Time's", a, b)
			}
		}
		for _, d := range []time.Duration{0, 1, -1, 20 * time.Millisecond, -85 * time.Millisecond, time.Hour} {
			if got := s.Add(d).Time(); !got.Equal(a.Add(d)) {
				t.Errorf("%v.Add(%v) = %v, want %v", a, d, got, a.Add(d))
			}
		}
	}
}

// Times a stamp cannot hold saturate instead of wrapping, so the trace's checks still refuse them: a Prometheus
// point in 2554 stays outside 1970..2200.
func TestStampSaturates(t *testing.T) {
	for _, c := range []struct {
		name string
		s    Stamp
		want Stamp
	}{
		{"year 2300", StampOf(time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC)), math.MaxInt64},
		{"year 1600", StampOf(time.Date(1600, 1, 1, 0, 0, 0, 0, time.UTC)), math.MinInt64},
		{"zero time", StampOf(time.Time{}), math.MinInt64},
		{"2554 in ms", StampOfMillis(18446744073710), math.MaxInt64},
		{"-2554 in ms", StampOfMillis(-18446744073710), math.MinInt64},
		{"max µs", StampOfMicros(math.MaxInt64), math.MaxInt64},
		{"2026 in ms", StampOfMillis(1795929390503), 1795929390503 * 1e6},
		{"2026 in µs", StampOfMicros(1795929390503123), 1795929390503123 * 1e3},
	} {
		if c.s != c.want {
			t.Errorf("%s: %d, want %d", c.name, c.s, c.want)
		}
		if c.want == math.MaxInt64 || c.want == math.MinInt64 {
			if checkStamp(c.s) == nil {
				t.Errorf("%s: a trace accepts it", c.name)
			}
		}
	}
}
