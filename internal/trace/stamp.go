package trace

import "time"

// Stamp is a UTC time as Unix nanoseconds: the time of the bulk rows (power samples, counter reads, telemetry).
// It takes 8 bytes and holds no pointer, where time.Time takes 24 with its location pointer: a trace's arrays are a
// third smaller and the garbage collector never scans them, which was most of a large report's time. Every time a
// trace accepts (1970..2200, checkTime) fits.
type Stamp int64

// StampOf returns t's stamp; t must lie within 1678..2262, as every trace time does.
func StampOf(t time.Time) Stamp { return Stamp(t.UnixNano()) }

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
