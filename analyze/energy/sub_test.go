package energy

import (
	"math"
	"testing"
	"time"
)

// Sub must equal time.Time.Sub for times without monotonic readings: borrows across a second, negative
// differences, both edges of its direct range and saturation beyond it.
func TestSubEqualsTimeSub(t *testing.T) {
	base := time.Date(2026, 3, 1, 12, 0, 0, 999_999_999, time.UTC)
	cases := []struct {
		name string
		t, u time.Time
		want time.Duration // from nanosecond arithmetic, independent of both
	}{
		{"same", base, base, 0},
		{"one sample", base.Add(20 * time.Millisecond), base, 20 * time.Millisecond},
		{"nanosecond borrow", time.Unix(101, 1).UTC(), time.Unix(100, 999_999_999).UTC(), 2},
		{"negative", time.Unix(100, 5).UTC(), time.Unix(101, 7).UTC(), -time.Second - 2},
		{"other zone", time.Unix(200, 0).In(time.FixedZone("x", 3600)), time.Unix(100, 0).UTC(), 100 * time.Second},
		{"edge of direct range", time.Unix(8_999_999_999, 0).UTC(), time.Unix(0, 0).UTC(), 8_999_999_999 * time.Second},
		{"past the direct range", time.Unix(9_100_000_000, 0).UTC(), time.Unix(0, 0).UTC(), 9_100_000_000 * time.Second},
		{"saturates high", time.Date(2500, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(1900, 1, 1, 0, 0, 0, 0, time.UTC), math.MaxInt64},
		{"saturates low", time.Date(1900, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2500, 1, 1, 0, 0, 0, 0, time.UTC), math.MinInt64},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := Sub(c.t, c.u); got != c.want {
				t.Errorf("Sub = %d, want %d", got, c.want)
			}
			if got := c.t.Sub(c.u); got != c.want {
				t.Errorf("time.Time.Sub = %d, want %d (case wrong)", got, c.want)
			}
		})
	}
}

func FuzzSub(f *testing.F) {
	f.Add(int64(0), int64(0), int64(0), int64(0))
	f.Add(int64(1_700_000_000), int64(999_999_999), int64(1_700_000_001), int64(1))
	f.Add(int64(-62_135_596_800), int64(0), int64(253_402_300_799), int64(999_999_999))
	f.Fuzz(func(t *testing.T, s1, n1, s2, n2 int64) {
		a, b := time.Unix(s1, n1).UTC(), time.Unix(s2, n2).UTC()
		if got, want := Sub(a, b), a.Sub(b); got != want {
			t.Fatalf("Sub(%v, %v) = %d, time.Time.Sub %d", a, b, got, want)
		}
	})
}
