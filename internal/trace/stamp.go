package trace

import (
	"math"
	"time"
)

// Stamp is a UTC time as Unix nanoseconds: the time of the bulk rows (power samples, counter reads, telemetry).
// It takes 8 bytes and holds no pointer, where time.Time takes 24 with its location pointer: a trace's arrays are a
// third smaller and the garbage collector never scans them, which was most of a large report's time. Every time a
// trace accepts (1970..2200, checkTime) fits.
type Stamp int64

// StampOf returns t's stamp. Times beyond what nanoseconds since 1970 hold (1677..2262) saturate to the nearest
// end, so that a time a trace refuses (checkTime: 1970..2200) stays one instead of wrapping into range.
func StampOf(t time.Time) Stamp {
	switch {
	case t.Before(minStampTime):
		return math.MinInt64
	case t.After(maxStampTime):
		return math.MaxInt64
	}
	return Stamp(t.UnixNano())
}

var minStampTime, maxStampTime = time.Unix(0, math.MinInt64), time.Unix(0, math.MaxInt64)

// StampOfMillis is the stamp of ms milliseconds since 1970 (Prometheus's timestamps), saturated as StampOf.
func StampOfMillis(ms int64) Stamp { return scaled(ms, int64(time.Millisecond)) }

// StampOfMicros is the stamp of us microseconds since 1970 (the driver's sample stamps), saturated as StampOf.
func StampOfMicros(us int64) Stamp { return scaled(us, int64(time.Microsecond)) }

func scaled(v, k int64) Stamp {
	switch {
	case v > math.MaxInt64/k:
		return math.MaxInt64
	case v < math.MinInt64/k:
		return math.MinInt64
	}
	return Stamp(v * k)
}

// Time returns the stamp as a time.Time in UTC.
func (s Stamp) Time() time.Time { return time.Unix(0, int64(s)).UTC() }

// UnixNano returns the stamp's nanoseconds since 1970.
func (s Stamp) UnixNano() int64 { return int64(s) }

// Before reports whether s is earlier than u.
func (s Stamp) Before(u Stamp) bool { return s < u }

// After reports whether s is later than u.
func (s Stamp) After(u Stamp) bool { return s > u }

// Equal reports whether s and u are the same instant.
func (s Stamp) Equal(u Stamp) bool { return s == u }

// Compare returns -1, 0 or +1 as s is before, equal to or after u.
func (s Stamp) Compare(u Stamp) int {
	switch {
	case s < u:
		return -1
	case s > u:
		return 1
	}
	return 0
}

// Sub returns s-u; stamps within 1970..2200 differ by less than time.Duration's range.
func (s Stamp) Sub(u Stamp) time.Duration { return time.Duration(s - u) }

// Add returns s+d.
func (s Stamp) Add(d time.Duration) Stamp { return s + Stamp(d) }

// Format formats the stamp's UTC time with layout.
func (s Stamp) Format(layout string) string { return s.Time().Format(layout) }

// String formats the stamp as time.Time does, so logs and messages read as before.
func (s Stamp) String() string { return s.Time().String() }

// UnixMilli returns the stamp's milliseconds since 1970, rounded down as time.Time.UnixMilli does.
func (s Stamp) UnixMilli() int64 {
	ms := int64(s) / 1e6
	if int64(s)%1e6 < 0 {
		ms--
	}
	return ms
}
