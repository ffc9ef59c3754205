package trace

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/parquet-go/parquet-go"
	"github.com/parquet-go/parquet-go/format"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lem-energy/lem/internal/meta"
)

var t0 = time.Unix(1795735590, 0).UTC()

// rowsFile writes rows as a lem trace straight through the Parquet writer (the Writer refuses what these tests
// need to write).
func rowsFile(t testing.TB, rows []row) []byte {
	t.Helper()
	var buf bytes.Buffer
	pw, err := newParquetWriter(&buf, meta.Environment{})
	require.NoError(t, err)
	_, err = pw.Write(rows)
	require.NoError(t, err)
	require.NoError(t, pw.Close())
	return buf.Bytes()
}

// validRows is a small trace: samples and counters of GPUs 0 and 1, telemetry, events.
func validRows() []row {
	var rows []row
	for i := range 200 {
		ts := t0.Add(time.Duration(i) * 20 * time.Millisecond)
		rows = append(rows, sampleRow(i%2, PowerSample{Time: StampOf(ts), PowerW: 100 + float64(i%37)}))
		if i%5 == 0 {
			rows = append(rows, counterRow(i%2, CounterReading{Time: StampOf(ts), EnergyMJ: uint64(1e6 + i*400)}))
			tm := NewTelemetry(StampOf(ts))
			tm.TemperatureC = 40
			rows = append(rows, telemetryRow(i%2, tm))
		}
	}
	ev, _ := eventRow(Event{Time: t0, GPU: NoGPU, Type: EventPhase, RunID: "r", Name: "decode"})
	return append(rows, ev)
}

// readBytes reads a trace from memory and returns the error and the bytes allocated meanwhile (every goroutine).
func readBytes(b []byte) (*Trace, error, uint64) {
	var m0, m1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	tr, err := read(bytes.NewReader(b), int64(len(b)), ReadOptions{})
	runtime.ReadMemStats(&m1)
	return tr, err, m1.TotalAlloc - m0.TotalAlloc
}

// allocLimit is the memory bound every read keeps: a small multiple of the larger of the file's size and its
// verified decompressed size, plus the Parquet library's and zstd decoder's fixed buffers.
func allocLimit(size, decompressed int64) uint64 {
	return uint64(16*max(size, decompressed)) + 4<<20
}

func TestCraftedRowsRefused(t *testing.T) {
	cases := []struct {
		name string
		edit func([]row) []row
		want string
	}{
		{"gpu 2147483647", func(rs []row) []row { rs[3].GPU = math.MaxInt32; return rs },
			"row group 0, column gpu: row 3 (sample): GPU index 2147483647 outside 0..1023"},
		{"gpu 1000000000", func(rs []row) []row { rs[0].GPU = 1e9; return rs },
			"row group 0, column gpu: row 0 (sample): GPU index 1000000000 outside 0..1023"},
		{"gpu 1024 counter", func(rs []row) []row { rs[1].GPU = 1024; return rs },
			"row group 0, column gpu: row 1 (counter): GPU index 1024 outside 0..1023"},
		{"negative gpu", func(rs []row) []row { rs[5].GPU = -1; return rs },
			"row group 0, column gpu: row 5 (sample): GPU index -1 outside 0..1023"},
		{"event gpu -2", func(rs []row) []row { rs[len(rs)-1].GPU = -2; return rs },
			"GPU index -2 outside 0..1023"},
		{"time before 1970", func(rs []row) []row { rs[7].Time = time.Unix(0, -1); return rs },
			"row group 0, column time: row 7: time 1969-12-31T23:59:59.999999999Z outside 1970..2200"},
		{"time after 2200", func(rs []row) []row { rs[8].Time = time.Date(2250, 1, 1, 0, 0, 0, 0, time.UTC); return rs },
			"row group 0, column time: row 8: time 2250-01-01T00:00:00Z outside 1970..2200"},
		{"infinite power", func(rs []row) []row { inf := math.Inf(1); rs[0].PowerW = &inf; return rs },
			"row group 0, column power_w: row 0: sample at"},
		{"negative energy", func(rs []row) []row { e := int64(-5); rs[1].EnergyMJ = &e; return rs },
			"row group 0, column energy_mj: row 1: counter at"},
		{"bad attrs", func(rs []row) []row { a := "{"; rs[len(rs)-1].Attrs = &a; return rs },
			"column attrs: row"},
		{"unknown kind", func(rs []row) []row { rs[2].Kind = "sampel"; return rs },
			`row group 0, column kind: row 2: unknown row kind "sampel"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := rowsFile(t, c.edit(validRows()))
			_, err, alloc := readBytes(b)
			require.Error(t, err)
			assert.Contains(t, err.Error(), c.want)
			assert.LessOrEqual(t, alloc, allocLimit(int64(len(b)), 0), "bytes allocated for a %d-byte file", len(b))
		})
	}
	_, err, _ := readBytes(rowsFile(t, validRows()))
	require.NoError(t, err, "the unedited rows read")
}

func TestReadErrorNamesFile(t *testing.T) {
	rs := validRows()
	rs[3].GPU = math.MaxInt32
	p := filepath.Join(t.TempDir(), "crafted.parquet")
	require.NoError(t, os.WriteFile(p, rowsFile(t, rs), 0o644))
	_, err := ReadFile(p)
	require.Error(t, err)
	assert.Equal(t, "reading trace "+p+": row group 0, column gpu: row 3 (sample): GPU index 2147483647 outside 0..1023",
		err.Error())
}

func TestWrongColumnTypeRefused(t *testing.T) {
	type bad struct {
		Kind int32     `parquet:"kind"`
		GPU  int32     `parquet:"gpu"`
		Time time.Time `parquet:"time,timestamp(nanosecond)"`
	}
	var buf bytes.Buffer
	w := parquet.NewGenericWriter[bad](&buf, parquet.KeyValueMetadata(MetaSchema, SchemaVersion))
	_, err := w.Write([]bad{{Kind: 1, Time: t0}})
	require.NoError(t, err)
	require.NoError(t, w.Close())
	_, err, _ = readBytes(buf.Bytes())
	require.ErrorIs(t, err, ErrNotTrace)
	assert.Contains(t, err.Error(), "column kind is INT32, want BYTE_ARRAY")
}

// TestCraftedMetadataRefused: files whose metadata or page headers lie about counts and sizes are refused before
// the lie drives an allocation.
func TestCraftedMetadataRefused(t *testing.T) {
	base := rowsFile(t, validRows())
	const huge = 1 << 30
	bomb := func(declare bool) func(t *testing.T, c *craftFile) {
		return func(t *testing.T, c *craftFile) {
			p := &c.column(t, 0, "time")[0]
			p.body, p.h.UncompressedPageSize = zstdRLEFrame(huge, declare), huge
		}
	}
	cases := []struct {
		name string
		edit func(t *testing.T, c *craftFile)
		want string
	}{
		{"row count", func(t *testing.T, c *craftFile) { c.md.RowGroups[0].NumRows = 1 << 40 },
			"row group 0, column kind: pages hold 281 values for the row group's 1099511627776 rows"},
		{"row and value counts", func(t *testing.T, c *craftFile) {
			c.md.RowGroups[0].NumRows = huge
			for _, col := range c.chunks[0] {
				for i := range col {
					setValues(&col[i], huge)
				}
			}
		}, "row group 0: 1073741824 rows in"},
		{"page value count", func(t *testing.T, c *craftFile) {
			setValues(&c.column(t, 0, "gpu")[0], math.MaxInt32)
		}, "row group 0, column gpu: pages hold more values than the row group's 281 rows"},
		{"uncompressed page size", func(t *testing.T, c *craftFile) {
			c.column(t, 0, "time")[0].h.UncompressedPageSize = math.MaxInt32
		}, "row group 0, column time: page 0: zstd frames of 2248 bytes (and up to 0 undeclared) where 2147483647 are declared"},
		{"dictionary size", func(t *testing.T, c *craftFile) {
			c.column(t, 0, "kind")[0].h.DictionaryPageHeader.V.NumValues = math.MaxInt32
		}, "row group 0, column kind: page 0: dictionary of 2147483647 values in"},
		{"zstd bomb", bomb(true), "decompress to 1073"},
		{"zstd bomb without content size", bomb(false), "decompress to 1073"},
		{"zstd frame larger than declared", func(t *testing.T, c *craftFile) {
			p := &c.column(t, 0, "time")[0]
			p.body = zstdRLEFrame(huge, false)
		}, "row group 0, column time: page 0: zstd frames of 0 bytes (and up to 1073741824 undeclared) where 2248 are declared"},
		{"snappy preamble", func(t *testing.T, c *craftFile) {
			for i := range c.md.RowGroups[0].Columns {
				if c.md.RowGroups[0].Columns[i].MetaData.PathInSchema[0] == "power_w" {
					c.md.RowGroups[0].Columns[i].MetaData.Codec = format.Snappy
				}
			}
		}, "row group 0, column power_w: page 0: snappy stream of"},
		{"gzip", func(t *testing.T, c *craftFile) { c.md.RowGroups[0].Columns[0].MetaData.Codec = format.Gzip },
			"row group 0, column kind: compression GZIP: lem reads zstd (its own), snappy and uncompressed traces"},
		{"column chunk missing", func(t *testing.T, c *craftFile) {
			last := len(c.md.RowGroups[0].Columns) - 1
			c.md.RowGroups[0].Columns = c.md.RowGroups[0].Columns[:last]
			c.chunks[0] = c.chunks[0][:last]
		}, fmt.Sprintf("row group 0 has %d column chunks for %d columns", len(columnNames)-1, len(columnNames))},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cf := parseCraft(t, base)
			c.edit(t, cf)
			b := cf.bytes(t)
			_, err, alloc := readBytes(b)
			require.Error(t, err)
			assert.Contains(t, err.Error(), c.want)
			assert.LessOrEqual(t, alloc, allocLimit(int64(len(b)), 0), "bytes allocated for a %d-byte file", len(b))
		})
	}
	_, err, _ := readBytes(parseCraft(t, base).bytes(t))
	require.NoError(t, err, "taken apart and put back unchanged, the file reads")
}

// setValues makes a data page (v1 or v2) declare n values.
func setValues(p *craftPage, n int32) {
	switch p.h.Type {
	case format.DataPage:
		p.h.DataPageHeader.V.NumValues = n
	case format.DataPageV2:
		p.h.DataPageHeaderV2.V.NumValues, p.h.DataPageHeaderV2.V.NumRows = n, n
	}
}

// TestCraftedFooterRefused: the metadata section itself (its length, its lists) is checked before it is decoded.
func TestCraftedFooterRefused(t *testing.T) {
	base := rowsFile(t, validRows())
	withFooter := func(footer []byte) []byte {
		n := binary.LittleEndian.Uint32(base[len(base)-8:])
		b := append([]byte{}, base[:len(base)-8-int(n)]...)
		b = append(b, footer...)
		b = binary.LittleEndian.AppendUint32(b, uint32(len(footer)))
		return append(b, "PAR1"...)
	}
	manyEmpty := append([]byte{0x49, 0xfc}, binary.AppendUvarint(nil, 1<<20)...) // field 4 (row groups): 2^20 structs
	manyEmpty = append(append(manyEmpty, make([]byte, 1<<20)...), 0)
	cases := []struct {
		name string
		file []byte
		want string
	}{
		{"footer length", func() []byte {
			b := bytes.Clone(base)
			binary.LittleEndian.PutUint32(b[len(b)-8:], 0xfffffff0)
			return b
		}(), "footer length 4294967280 does not fit in a file of"},
		{"list count", withFooter(append([]byte{0x49, 0xfc}, binary.AppendUvarint(nil, math.MaxInt32)...)),
			"file metadata at byte 7: truncated: declares 2147483647 elements or bytes with 0 bytes left"},
		{"string length", withFooter(append([]byte{0x68}, binary.AppendUvarint(nil, 1<<40)...)),
			"declares 1099511627776 elements or bytes"},
		{"empty structs", withFooter(manyEmpty), "would decode into about"},
		{"deep nesting", withFooter(bytes.Repeat([]byte{0x1c}, 100)), "nested too deep"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err, alloc := readBytes(c.file)
			require.ErrorIs(t, err, ErrNotTrace)
			assert.Contains(t, err.Error(), c.want)
			assert.LessOrEqual(t, alloc, allocLimit(int64(len(c.file)), 0), "bytes allocated for a %d-byte file", len(c.file))
		})
	}
}

// TestReadMemoryBound: reading real traces allocates a small multiple of their decompressed size.
func TestReadMemoryBound(t *testing.T) {
	paths, _ := filepath.Glob(filepath.Join("..", "..", "testdata", "traces", "*.parquet"))
	require.NotEmpty(t, paths)
	for _, p := range paths {
		b, err := os.ReadFile(p)
		require.NoError(t, err)
		var decompressed int64
		for _, rg := range parseCraft(t, b).md.RowGroups {
			for _, cc := range rg.Columns {
				decompressed += cc.MetaData.TotalUncompressedSize
			}
		}
		tr, err, alloc := readBytes(b)
		require.NoError(t, err, p)
		assert.NotEmpty(t, tr.GPUs)
		assert.LessOrEqual(t, alloc, allocLimit(int64(len(b)), decompressed), p)
		t.Logf("%s: %d bytes, %d decompressed, %d allocated", filepath.Base(p), len(b), decompressed, alloc)
	}
}

// TestLongPageHeaders: page headers carry the column's min and max; long strings make a header longer than the
// first read of it, which is then read again whole.
func TestLongPageHeaders(t *testing.T) {
	p := filepath.Join(t.TempDir(), "long.parquet")
	w, err := Create(p, meta.Environment{})
	require.NoError(t, err)
	long := strings.Repeat("x", 10000)
	require.NoError(t, w.WriteSamples(0, []PowerSample{{Time: StampOf(t0), PowerW: 1}}))
	for i := range 3 {
		require.NoError(t, w.WriteEvent(Event{Time: t0, GPU: NoGPU, Type: EventRunStart, RunID: fmt.Sprint("r", i),
			Name: long[:1000*(i+1)], Attrs: map[string]string{"label_note": long[:2000*(i+1)]}}))
	}
	require.NoError(t, w.Close())
	tr, err := ReadFile(p)
	require.NoError(t, err)
	require.Len(t, tr.Events, 3)
	assert.Len(t, tr.Events[2].Attrs["label_note"], 6000)
}

func TestWriterRefusesWhatTheReaderWould(t *testing.T) {
	p := filepath.Join(t.TempDir(), "w.parquet")
	w, err := Create(p, meta.Environment{})
	require.NoError(t, err)
	ok := PowerSample{Time: StampOf(t0), PowerW: 100}
	require.NoError(t, w.WriteSamples(MaxGPU, []PowerSample{ok}))
	assert.ErrorContains(t, w.WriteSamples(MaxGPU+1, []PowerSample{ok}), "samples: GPU index 1024 outside 0..1023")
	assert.ErrorContains(t, w.WriteSamples(0, []PowerSample{ok, {Time: -1, PowerW: 1}}),
		"sample of GPU 0: time 1969-12-31T23:59:59.999999999Z outside 1970..2200")
	for _, pw := range []float64{math.NaN(), math.Inf(1), math.Inf(-1)} {
		assert.ErrorContains(t, w.WriteSamples(0, []PowerSample{{Time: StampOf(t0), PowerW: pw}}), fmt.Sprintf("power %v is not finite", pw))
	}
	assert.ErrorContains(t, w.WriteCounter(-1, CounterReading{Time: StampOf(t0)}), "counter reading: GPU index -1 outside 0..1023")
	assert.ErrorContains(t, w.WriteTelemetry(0, NewTelemetry(StampOf(time.Date(2201, 1, 1, 0, 0, 0, 0, time.UTC)))),
		"telemetry: time 2201-01-01T00:00:00Z outside 1970..2200")
	require.NoError(t, w.WriteEvent(Event{Time: t0, GPU: NoGPU, Type: EventMark}))
	assert.ErrorContains(t, w.WriteEvent(Event{Time: t0, GPU: -7, Type: EventMark}), "mark event: GPU index -7 outside 0..1023")
	require.NoError(t, w.Close())
	tr, err := ReadFile(p)
	require.NoError(t, err, "what the writer took reads back")
	assert.Equal(t, []int{0, MaxGPU}, tr.GPUIndices())
	assert.Len(t, tr.GPUs[0].Samples, 1, "the valid sample before the refused one is kept")
	assert.Len(t, tr.Events, 1)
}

type namedBytes struct {
	*bytes.Reader
	name string
}

func (n namedBytes) Name() string { return n.name }

func probe(counters, samples, marks string) (*Trace, error) {
	var m []byte
	if marks != "" {
		m = []byte(marks)
	}
	return importProbe(0, meta.Environment{}, namedBytes{bytes.NewReader([]byte(counters)), "counters.csv"},
		namedBytes{bytes.NewReader([]byte(samples)), "power_samples.csv"}, m, "marks.txt")
}

func TestImportProbe(t *testing.T) {
	const counters = "t_ns,energy_mj,energy_read_us,temp_c,power_mw\n1795735590000000000,1000,3500,40,inf\n1795735590100000000,1070,3600,41,70000\n"
	const samples = "ts_us,power_mw\n1795735590000000,70000\n1795735590020000,71000\n1795735590020000,71000\n1795735590040000,72500\n"
	tr, err := probe(counters, samples, "MARK decode-start 1795735590010000000\nMARK decode-end 1795735590050000000 tokens=5\n")
	require.NoError(t, err)
	s := tr.GPUs[0]
	require.Len(t, s.Samples, 3, "the repeated sample is kept once")
	assert.Equal(t, []float64{70, 71, 72.5}, []float64{s.Samples[0].PowerW, s.Samples[1].PowerW, s.Samples[2].PowerW})
	require.Len(t, s.Counters, 2)
	assert.Equal(t, uint64(1070), s.Counters[1].EnergyMJ)
	assert.Equal(t, 3600*time.Microsecond, s.Counters[1].ReadDuration)
	assert.True(t, math.IsNaN(s.Telemetry[0].AveragePowerW), "an infinite reading is unknown")
	assert.Equal(t, 70.0, s.Telemetry[1].AveragePowerW)
	require.Len(t, tr.Events, 3)
	assert.Equal(t, "5", tr.Events[2].Attrs["tokens"])

	cases := []struct{ counters, samples, marks, want string }{
		{"t_ns,energy_mj\n1795735590000000000,-4\n", samples, "", "counters.csv:2: column energy_mj: -4 is negative"},
		{"t_ns,energy_mj\n1,1\n-1,2\n", samples, "", "counters.csv:3: column t_ns: -1: time 1969-12-31T23:59:59.999999999Z outside 1970..2200"},
		{"t_ns,energy_mj,energy_read_us\n1,1,-5\n", samples, "", "counters.csv:2: column energy_read_us: -5 µs is not a read duration"},
		{"t_ns,energy_mj\n1,x\n", samples, "", `counters.csv:2: column energy_mj: "x" is not an integer`},
		{"t_ns\n1\n", samples, "", `counters.csv: missing column "energy_mj"`},
		{counters, "ts_us,power_mw\n9223372036854775807,1\n", "", "power_samples.csv:2: column ts_us: 9223372036854775807: time outside 1970..2200"},
		{counters, "ts_us,power_mw\n1,-1\n", "", "power_samples.csv:2: column power_mw: -1 is negative"},
		{counters, "ts_us,power_mw\n1,1\n\"2\n\",1\n3,x\n", "", `power_samples.csv:3: column ts_us: "2\n" is not an integer`},
		{counters, samples, "MARK x -5\n", "marks.txt: line 1: timestamp -5: time 1969-12-31T23:59:59.999999995Z outside 1970..2200"},
	}
	for _, c := range cases {
		_, err := probe(c.counters, c.samples, c.marks)
		require.Error(t, err, c.want)
		assert.Contains(t, err.Error(), c.want)
	}
	_, err = ImportProbeDir(t.TempDir(), 4096, meta.Environment{})
	assert.ErrorContains(t, err, "GPU index 4096 outside 0..1023")
}
