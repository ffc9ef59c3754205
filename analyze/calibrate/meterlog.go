// Package calibrate fits a GPU board's power sensor against an external power meter: the meter's log, recorded
// alongside a lem trace, is aligned in time with the trace (meter clocks are offset and late), lem's power is
// averaged over each meter interval, and P_meter = gain·P_lem + offset is fitted with standard errors. The
// calibration file it writes (keyed by GPU UUID) lets `lem-analyze report --calibration` correct energies and
// replace the assumed ±5 % gain term by the fitted gain's uncertainty. docs/METHODOLOGY.md, "Calibration".
package calibrate

import (
	"bufio"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"
)

// Reading is one meter reading: the meter's mean power over the interval that ends at Time (meters report the
// average over their update interval; a constant convention error is absorbed by the clock offset).
type Reading struct {
	Time time.Time
	W    float64
}

// Log is a parsed meter log.
type Log struct {
	Format   string // FormatCSV or FormatPTD
	Readings []Reading
	// Skipped counts readings the meter gave as not a number (PTDaemon logs them when a sample is invalid).
	Skipped int
}

// Formats.
const (
	FormatCSV = "csv"
	FormatPTD = "ptd"
)

// MaxReadings bounds a meter log: a week of 1 s readings, or ten hours at 50 Hz.
const MaxReadings = 2_000_000

// maxLine bounds one line of a meter log.
const maxLine = 64 << 10

// Parse reads a meter log in the given format ("" or "auto": a file whose first non-blank, non-comment line
// starts with "Time," is PTDaemon's, anything else CSV). loc is the time zone of times that carry none
// (PTDaemon's, and CSV times without an offset). name is the file, for errors.
func Parse(name string, r io.Reader, format string, loc *time.Location) (*Log, error) {
	br := bufio.NewReaderSize(r, maxLine)
	switch format {
	case "", "auto":
		head, _ := br.Peek(maxLine)
		format = FormatCSV
		for _, line := range strings.Split(string(head), "\n") {
			line = strings.TrimSpace(line)
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			if strings.HasPrefix(line, "Time,") {
				format = FormatPTD
			}
			break
		}
	case FormatCSV, FormatPTD:
	default:
		return nil, fmt.Errorf("meter log %s: format %q, want csv, ptd or auto", name, format)
	}
	if loc == nil {
		loc = time.UTC
	}
	if format == FormatPTD {
		return parsePTD(name, br, loc)
	}
	return parseCSV(name, br, loc)
}

// Column names a CSV meter log may use (after normCol: case-insensitive, a unit in brackets joined with an
// underscore, spaces and dashes as underscores). Exactly one time column and one power column must be present;
// others are ignored.
var (
	// timeCols: RFC 3339 (a time without an offset is in the given zone) or Unix seconds, as a decimal number.
	timeCols = []string{"timestamp", "time", "datetime", "date_time", "t"}
	// unixCols are Unix times in the unit their name says.
	unixCols = map[string]float64{"unix_s": 1, "epoch_s": 1, "time_s": 1, "unix_ms": 1e-3, "epoch_ms": 1e-3,
		"time_ms": 1e-3, "unix_us": 1e-6, "time_us": 1e-6, "unix_ns": 1e-9, "time_ns": 1e-9, "t_ns": 1e-9}
	// powerCols in the unit their name says.
	powerCols = map[string]float64{"watts": 1, "w": 1, "power_w": 1, "power": 1, "power_watts": 1, "mw": 1e-3,
		"power_mw": 1e-3, "milliwatts": 1e-3, "kw": 1e3, "power_kw": 1e3}
)

// AcceptedColumns describes the CSV header names, for help and errors.
const AcceptedColumns = "(case-insensitive; \"Power (W)\" reads as power_w) time: timestamp, time, datetime, date_time or t (RFC 3339, or Unix seconds); or unix_s, " +
	"epoch_s, time_s, unix_ms, epoch_ms, time_ms, unix_us, time_us, unix_ns, time_ns, t_ns; power: watts, w, power_w, " +
	"power, power_watts, mw, power_mw, milliwatts, kw, power_kw"

// normCol normalises a header name: lower case, a unit in brackets joined with an underscore ("Power (W)" is
// power_w, "P [mW]" p_mw), spaces and dashes as underscores.
func normCol(s string) string {
	s = strings.ToLower(strings.TrimSpace(s))
	s = strings.NewReplacer("(", " ", ")", "", "[", " ", "]", "").Replace(s)
	return strings.Join(strings.FieldsFunc(s, func(r rune) bool { return r == ' ' || r == '-' || r == '_' }), "_")
}

// parseCSV reads a CSV meter log: comment lines (#) and blank lines skipped, the first other line the header;
// the delimiter is the header's: comma, semicolon or tab.
func parseCSV(name string, br *bufio.Reader, loc *time.Location) (*Log, error) {
	lines := &lineReader{r: br}
	header, err := lines.next()
	if errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("meter log %s: empty", name)
	}
	if err != nil {
		return nil, fmt.Errorf("meter log %s: %w", name, err)
	}
	header = strings.TrimPrefix(header, "\ufeff")
	delim := ','
	switch {
	case !strings.Contains(header, ",") && strings.Contains(header, ";"):
		delim = ';'
	case !strings.Contains(header, ",") && strings.Contains(header, "\t"):
		delim = '\t'
	}
	cols, err := splitCSV(header, delim)
	if err != nil {
		return nil, fmt.Errorf("meter log %s line %d: header: %w", name, lines.n, err)
	}
	ti, pi, tScale, pScale := -1, -1, 0.0, 0.0
	var tName, pName string
	for i, c := range cols {
		n := normCol(c)
		switch {
		case contains(timeCols, n) || unixCols[n] > 0:
			if ti >= 0 {
				return nil, fmt.Errorf("meter log %s: two time columns, %q and %q: keep one", name, tName, c)
			}
			ti, tName, tScale = i, c, unixCols[n]
		case powerCols[n] > 0:
			if pi >= 0 {
				return nil, fmt.Errorf("meter log %s: two power columns, %q and %q: keep one", name, pName, c)
			}
			pi, pName, pScale = i, c, powerCols[n]
		}
	}
	if ti < 0 || pi < 0 {
		return nil, fmt.Errorf("meter log %s: header %q lacks a time or a power column (accepted: %s)", name,
			strings.Join(cols, string(delim)), AcceptedColumns)
	}
	log := &Log{Format: FormatCSV}
	for {
		line, err := lines.next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("meter log %s: %w", name, err)
		}
		f, err := splitCSV(line, delim)
		if err != nil {
			return nil, fmt.Errorf("meter log %s line %d: %w", name, lines.n, err)
		}
		if len(f) <= max(ti, pi) {
			return nil, fmt.Errorf("meter log %s line %d: %d fields, the header has %d", name, lines.n, len(f), len(cols))
		}
		at, err := parseTime(strings.TrimSpace(f[ti]), tScale, loc)
		if err != nil {
			return nil, fmt.Errorf("meter log %s line %d: %s %q: %w", name, lines.n, tName, f[ti], err)
		}
		w, ok, err := parsePower(f[pi], pScale)
		if err != nil {
			return nil, fmt.Errorf("meter log %s line %d: %s %q: %w", name, lines.n, pName, f[pi], err)
		}
		if err := log.add(name, lines.n, at, w, ok); err != nil {
			return nil, err
		}
	}
	return log.done(name)
}

// parsePTD reads a SPEC PTDaemon log: lines "Time,MM-DD-YYYY HH:MM:SS.fff,Watts,<W>,Volts,…,Amps,…,PF,…,Mark,<m>"
// (one analyzer channel; the format of the MLCommons power logs' spl.txt), times in the PTDaemon host's zone loc.
// Other lines (PTDaemon's own messages) are skipped. Multi-channel lines (more than one Watts field) are
// refused: their layout is not verified here.
func parsePTD(name string, br *bufio.Reader, loc *time.Location) (*Log, error) {
	lines := &lineReader{r: br}
	log := &Log{Format: FormatPTD}
	for {
		line, err := lines.next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("meter log %s: %w", name, err)
		}
		if !strings.HasPrefix(line, "Time,") {
			continue
		}
		f := strings.Split(line, ",")
		var stamp, watts string
		nWatts := 0
		for i := 0; i+1 < len(f); i += 2 {
			switch strings.TrimSpace(f[i]) {
			case "Time":
				stamp = strings.TrimSpace(f[i+1])
			case "Watts":
				watts = f[i+1]
				nWatts++
			}
		}
		switch {
		case nWatts == 0:
			return nil, fmt.Errorf("meter log %s line %d: no Watts field (want Time,<MM-DD-YYYY HH:MM:SS.fff>,Watts,<W>,…)", name, lines.n)
		case nWatts > 1:
			return nil, fmt.Errorf("meter log %s line %d: %d Watts fields: multi-channel PTDaemon logs are not supported", name, lines.n, nWatts)
		}
		at, err := time.ParseInLocation("01-02-2006 15:04:05.000", stamp, loc)
		if err != nil {
			at, err = time.ParseInLocation("01-02-2006 15:04:05", stamp, loc)
		}
		if err != nil {
			return nil, fmt.Errorf("meter log %s line %d: time %q: want MM-DD-YYYY HH:MM:SS.fff", name, lines.n, stamp)
		}
		w, ok, err := parsePower(watts, 1)
		if err != nil {
			return nil, fmt.Errorf("meter log %s line %d: Watts %q: %w", name, lines.n, watts, err)
		}
		if err := log.add(name, lines.n, at, w, ok); err != nil {
			return nil, err
		}
	}
	return log.done(name)
}

// add appends a reading (or counts a skipped one), refusing time that goes backwards (a clock stepped during the
// log breaks the alignment).
func (l *Log) add(name string, line int, at time.Time, w float64, ok bool) error {
	if n := len(l.Readings); n > 0 && !at.After(l.Readings[n-1].Time) {
		return fmt.Errorf("meter log %s line %d: time %s is not after the previous reading's %s (a clock step?)", name, line,
			at.Format(time.RFC3339Nano), l.Readings[n-1].Time.Format(time.RFC3339Nano))
	}
	if !ok {
		l.Skipped++
		return nil
	}
	if len(l.Readings) >= MaxReadings {
		return fmt.Errorf("meter log %s: more than %d readings", name, MaxReadings)
	}
	l.Readings = append(l.Readings, Reading{Time: at, W: w})
	return nil
}

func (l *Log) done(name string) (*Log, error) {
	if len(l.Readings) == 0 {
		return nil, fmt.Errorf("meter log %s: no readings", name)
	}
	return l, nil
}

// parseTime reads a CSV time: Unix time in a unit (scale > 0), else RFC 3339 (zone optional) or Unix seconds.
func parseTime(s string, scale float64, loc *time.Location) (time.Time, error) {
	if scale > 0 {
		return unixTime(s, scale)
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05.999999999", "2006-01-02 15:04:05.999999999Z07:00",
		"2006-01-02 15:04:05.999999999"} {
		if t, err := time.ParseInLocation(layout, s, loc); err == nil {
			return t, nil
		}
	}
	if t, err := unixTime(s, 1); err == nil {
		return t, nil
	}
	return time.Time{}, errors.New("want RFC 3339 or Unix seconds")
}

// unixTime reads a decimal Unix time in units of scale seconds (1, 1e-3, 1e-6 or 1e-9); the integer part exactly
// (nanosecond stamps do not fit a float64).
func unixTime(s string, scale float64) (time.Time, error) {
	ip, fp, _ := strings.Cut(s, ".")
	i, err := strconv.ParseInt(ip, 10, 64)
	if err != nil || strings.ContainsAny(fp, "+-") {
		return time.Time{}, errors.New("not a Unix time")
	}
	frac := 0.0
	if fp != "" {
		if frac, err = strconv.ParseFloat("0."+fp, 64); err != nil {
			return time.Time{}, errors.New("not a Unix time")
		}
	}
	if math.Abs(float64(i))*scale > 1e10 { // beyond the year 2286: not a meter log
		return time.Time{}, errors.New("Unix time out of range")
	}
	if strings.HasPrefix(ip, "-") {
		frac = -frac
	}
	unitNS := int64(math.Round(scale * 1e9))
	per := int64(1e9) / unitNS // units per second
	sec, nsec := i/per, (i%per)*unitNS
	return time.Unix(sec, nsec+int64(frac*float64(unitNS))).UTC(), nil
}

// parsePower reads a power value in a unit; ok is false for a reading the meter gave as not a number.
func parsePower(s string, scale float64) (w float64, ok bool, err error) {
	s = strings.TrimSpace(s)
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0, false, errors.New("not a number")
	}
	switch {
	case math.IsNaN(v):
		return 0, false, nil
	case math.IsInf(v, 0) || v < 0:
		return 0, false, errors.New("not a power reading (negative or infinite)")
	}
	return v * scale, true, nil
}

func contains(xs []string, s string) bool {
	for _, x := range xs {
		if x == s {
			return true
		}
	}
	return false
}

// splitCSV splits one CSV line (quotes allowed).
func splitCSV(line string, delim rune) ([]string, error) {
	r := csv.NewReader(strings.NewReader(line))
	r.Comma, r.FieldsPerRecord, r.LazyQuotes = delim, -1, true
	f, err := r.Read()
	if err != nil {
		return nil, err
	}
	return f, nil
}

// lineReader yields the lines that are neither blank nor comments, counting all lines.
type lineReader struct {
	r *bufio.Reader
	n int
}

func (l *lineReader) next() (string, error) {
	for {
		line, err := l.r.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			return "", fmt.Errorf("line %d: longer than %d bytes", l.n+1, maxLine)
		}
		if len(line) == 0 && err != nil {
			return "", err
		}
		l.n++
		s := strings.TrimRight(string(line), "\r\n")
		if t := strings.TrimSpace(s); t == "" || strings.HasPrefix(t, "#") {
			if err != nil {
				return "", err
			}
			continue
		}
		return s, nil
	}
}
