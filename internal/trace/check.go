package trace

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"time"

	"github.com/parquet-go/parquet-go"
	"github.com/parquet-go/parquet-go/deprecated"
	"github.com/parquet-go/parquet-go/encoding/thrift"
	"github.com/parquet-go/parquet-go/format"
)

// Limits a trace file must keep. The reader checks every count and size a file declares against them, and against
// the bytes that hold it, before anything is allocated by that count: a crafted or corrupt file gets an error
// naming the row group and column, never a crash or an allocation out of proportion to the file.
const (
	// MaxGPU is the largest GPU index a trace may hold (GPU rows: 0..MaxGPU; events also NoGPU).
	MaxGPU = 1023
	// minBytesPerRow: a row group must decompress to at least this many bytes per row it declares (lem's own
	// rows take over 30; the gpu and time columns alone take 12).
	minBytesPerRow = 4
	// maxExpansion bounds the decompressed size a file declares by its size on disk (lem's traces expand 2-15
	// times).
	maxExpansion = 1024
)

// Timestamps must lie in [1970, 2200): any two then differ by less than time.Duration's 292 years.
var (
	minTime   = time.Unix(0, 0).UTC()
	maxTime   = time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC)
	maxTimeNS = maxTime.UnixNano()
)

func checkTime(t time.Time) error {
	if t.Before(minTime) || !t.Before(maxTime) {
		return fmt.Errorf("time %s outside 1970..2200", t.UTC().Format(time.RFC3339Nano))
	}
	return nil
}

func checkStamp(s Stamp) error {
	if s < 0 || int64(s) >= maxTimeNS {
		return checkTime(s.Time())
	}
	return nil
}

func checkGPU(g int, event bool) error {
	if g < 0 || g > MaxGPU {
		if event && g == NoGPU {
			return nil
		}
		return fmt.Errorf("GPU index %d outside 0..%d", g, MaxGPU)
	}
	return nil
}

// MaxProcessRatio bounds a per-process utilization share (1 is the whole sample period): the driver's percentages
// stay at or below 100, and a bound keeps sums of weights finite.
const MaxProcessRatio = 10

func checkRatios(p ProcessSample) error {
	_, err := badRatio(p)
	return err
}

// badRatio returns the column of the first utilization share out of bounds, and the error.
func badRatio(p ProcessSample) (string, error) {
	for _, r := range []struct {
		name string
		v    float64
	}{{"sm", p.SM}, {"mem", p.Mem}, {"enc", p.Enc}, {"dec", p.Dec}} {
		if !(r.v >= 0 && r.v <= MaxProcessRatio) { // NaN fails too
			return "process_" + r.name + "_ratio", fmt.Errorf("%s utilization %g outside 0..%d", r.name, r.v, MaxProcessRatio)
		}
	}
	return "", nil
}

func checkProcess(p Process) error {
	switch {
	case p.MemoryBytes > math.MaxInt64:
		return fmt.Errorf("memory %d bytes out of range", p.MemoryBytes)
	case p.GPUInstance > math.MaxInt32 || p.ComputeInstance > math.MaxInt32:
		return fmt.Errorf("MIG instance %d/%d out of range", p.GPUInstance, p.ComputeInstance)
	}
	return nil
}

func checkRow(gpu int, event bool, t time.Time) error {
	if err := checkGPU(gpu, event); err != nil {
		return err
	}
	return checkTime(t)
}

// errLibraryPanic marks a panic of the Parquet library on corrupt data, returned as an error: the checks here
// keep every input fuzzing has found away from the library's panics, and this keeps any other from crashing a
// report or a replay.
var errLibraryPanic = errors.New("the Parquet library failed on corrupt data")

func recoverLibrary(err *error) {
	if p := recover(); p != nil {
		*err = fmt.Errorf("%w: %v", errLibraryPanic, p)
	}
}

func openFile(r io.ReaderAt, size int64) (pf *parquet.File, err error) {
	defer recoverLibrary(&err)
	return parquet.OpenFile(r, size, parquet.SkipPageIndex(true), parquet.SkipBloomFilters(true))
}

// readFooter reads, checks and decodes the file's metadata section: its length must fit in the file, its content
// pass checkFooter, its schema checkSchema, all before the Parquet library sees it. It returns the section's length.
func readFooter(r io.ReaderAt, size int64) (int64, error) {
	var tail [8]byte
	if _, err := r.ReadAt(tail[:], size-8); err != nil {
		return 0, fmt.Errorf("reading footer: %w", err)
	}
	n := int64(binary.LittleEndian.Uint32(tail[:4]))
	if n == 0 || n > size-12 {
		return 0, fmt.Errorf("%w: footer length %d does not fit in a file of %d bytes", ErrNotTrace, n, size)
	}
	b := make([]byte, n)
	if _, err := r.ReadAt(b, size-8-n); err != nil {
		return 0, fmt.Errorf("reading footer: %w", err)
	}
	if err := checkFooter(b); err != nil {
		return 0, fmt.Errorf("%w: %v", ErrNotTrace, err)
	}
	var md footerShape
	if err := thrift.Unmarshal(&thrift.CompactProtocol{}, b, &md); err != nil {
		return 0, fmt.Errorf("%w: file metadata: %v", ErrNotTrace, err)
	}
	if err := checkSchema(&md); err != nil {
		return 0, err
	}
	return n, nil
}

// columnTypes are the physical types of the trace columns.
var columnTypes = map[string]format.Type{"kind": format.ByteArray, "gpu": format.Int32, "time": format.Int64,
	"power_w": format.Double, "energy_mj": format.Int64, "read_duration_ns": format.Int64,
	"instant_power_w": format.Double, "average_power_w": format.Double, "temperature_c": format.Double,
	"sm_clock_hz": format.Double, "mem_clock_hz": format.Double, "util_gpu_ratio": format.Double,
	"util_mem_ratio": format.Double, "mem_used_bytes": format.Double, "power_limit_w": format.Double,
	"clock_event_reasons": format.Int64, "performance_state": format.Double, "event": format.ByteArray, "run_id": format.ByteArray,
	"name": format.ByteArray, "attrs": format.ByteArray,
	"pid": format.Int64, "process_sm_ratio": format.Double, "process_mem_ratio": format.Double,
	"process_enc_ratio": format.Double, "process_dec_ratio": format.Double, "process_memory_bytes": format.Int64,
	"gpu_instance": format.Int32, "compute_instance": format.Int32, "command": format.ByteArray,
	"container_runtime": format.ByteArray, "container_id": format.ByteArray, "container_name": format.ByteArray,
	"pod_uid": format.ByteArray, "pod_namespace": format.ByteArray, "pod_name": format.ByteArray}

// checkSchema checks the file's schema from its metadata (not through the Parquet library's types, which panic on
// some annotations): flat, the trace columns of their documented types and annotations, no more than a trace
// could use, and every row group with a chunk per column.
// footerShape is what checkSchema reads of the file metadata: the schema, and each row group's column chunks
// only counted (decoding their metadata twice, here and in the Parquet library, was most of opening a large file).
type footerShape struct {
	Schema    thrift.Slice[format.SchemaElement] `thrift:"2,required"`
	RowGroups thrift.Slice[rowGroupShape]        `thrift:"4,required"`
}

type rowGroupShape struct {
	Columns thrift.Slice[struct{}] `thrift:"1,required"`
}

func checkSchema(md *footerShape) error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s", ErrNotTrace, fmt.Sprintf(format, a...))
	}
	if len(md.Schema) < 2 || md.Schema[0].NumChildren.V != int32(len(md.Schema)-1) || len(md.Schema) > 1+4*len(columnNames) {
		return bad("schema of %d elements is not one flat table", len(md.Schema))
	}
	for _, el := range md.Schema[1:] {
		if el.NumChildren.Valid && el.NumChildren.V != 0 || !el.Type.Valid {
			return bad("column %s is nested", el.Name)
		}
		want, ours := columnTypes[el.Name]
		if !ours {
			continue // not read
		}
		if got := el.Type.V; got != want && !(el.Name == "gpu" && got == format.Int64) {
			return bad("column %s is %s, want %s", el.Name, got, want)
		}
		if r := el.RepetitionType; r.Valid && r.V == format.Repeated {
			return bad("column %s is repeated", el.Name)
		}
		if c := el.ConvertedType; c.Valid && !slices.Contains([]deprecated.ConvertedType{deprecated.UTF8, deprecated.Enum,
			deprecated.Json, deprecated.Int8, deprecated.Int16, deprecated.Int32, deprecated.Int64}, c.V) {
			return bad("column %s has converted type %d", el.Name, c.V)
		}
		switch lt := el.LogicalType.Value.(type) {
		case nil, *format.StringType, *format.EnumType, *format.JsonType, *format.IntType:
		case *format.TimestampType:
			if _, ns := lt.Unit.Value.(*format.NanoSeconds); !ns {
				return bad("column %s is %s; lem traces store nanoseconds", el.Name, lt)
			}
		default:
			return bad("column %s has logical type %s", el.Name, lt)
		}
	}
	for i, rg := range md.RowGroups {
		if len(rg.Columns) != len(md.Schema)-1 {
			return bad("row group %d has %d column chunks for %d columns", i, len(rg.Columns), len(md.Schema)-1)
		}
	}
	return nil
}

// chunkScan walks one column chunk's page headers, as the Parquet library will read them, and checks what they
// declare: pages inside the chunk, a known compression whose own header confirms each page's decompressed size,
// value counts adding up to the row group's rows. It returns the decompressed bytes of the chunk.
type chunkScan struct {
	r       io.ReaderAt
	dataEnd int64 // where the column data ends (the footer begins)
	buf     []byte
}

func (s *chunkScan) scan(cc format.ColumnChunk, rows int64, optional bool) (int64, error) {
	md := cc.MetaData
	switch md.Codec {
	case format.Uncompressed, format.Snappy, format.Zstd:
	default:
		return 0, fmt.Errorf("compression %s: lem reads zstd (its own), snappy and uncompressed traces", md.Codec)
	}
	start := md.DataPageOffset
	if md.DictionaryPageOffset != 0 {
		start = md.DictionaryPageOffset
	}
	if start < 4 || md.TotalCompressedSize < 0 || start > s.dataEnd || md.TotalCompressedSize > s.dataEnd-start {
		return 0, fmt.Errorf("chunk of %d bytes at offset %d outside the file's data (%d bytes)",
			md.TotalCompressedSize, start, s.dataEnd)
	}
	off, end := start, start+md.TotalCompressedSize
	var values, expanded int64
	for page := 0; off < end; page++ {
		h, err := s.header(off, end)
		if err != nil {
			return 0, fmt.Errorf("page %d: header: %w", page, err)
		}
		if h.compressed < 0 || h.uncompressed < 0 || h.numValues < 0 {
			return 0, fmt.Errorf("page %d: header without sizes or value count", page)
		}
		body := off + int64(h.size)
		if int64(h.compressed) > end-body {
			return 0, fmt.Errorf("page %d: %d bytes overrun the column chunk", page, h.compressed)
		}
		data := h.compressed
		switch h.typ {
		case pageDictionary:
			if page != 0 {
				return 0, fmt.Errorf("page %d: dictionary page after data pages", page)
			}
			if int64(h.numValues) > int64(h.uncompressed) { // each value takes a byte at least
				return 0, fmt.Errorf("page %d: dictionary of %d values in %d bytes", page, h.numValues, h.uncompressed)
			}
		case pageData:
			values += int64(h.numValues)
		case pageDataV2:
			if h.numNulls < 0 || h.numNulls > h.numValues || h.numRows != h.numValues || h.defLen < 0 || h.repLen < 0 ||
				int64(h.defLen)+int64(h.repLen) > int64(min(h.compressed, h.uncompressed)) {
				return 0, fmt.Errorf("page %d: inconsistent v2 page header", page)
			}
			if optional && h.numValues > 0 && h.defLen == 0 {
				return 0, fmt.Errorf("page %d: values of an optional column without definition levels", page)
			}
			values += int64(h.numValues)
			body += int64(h.defLen) + int64(h.repLen)
			data -= h.defLen + h.repLen
			expanded += int64(h.defLen) + int64(h.repLen)
		default:
			return 0, fmt.Errorf("page %d: page type %d", page, h.typ)
		}
		if values > rows {
			return 0, fmt.Errorf("pages hold more values than the row group's %d rows", rows)
		}
		want := int64(h.uncompressed) - (body - off - int64(h.size))
		if md.Codec == format.Uncompressed || (h.typ == pageDataV2 && !h.v2Compressed) {
			if h.uncompressed != h.compressed {
				return 0, fmt.Errorf("page %d: uncompressed page declares %d bytes in %d", page, h.uncompressed, h.compressed)
			}
			expanded += int64(data)
		} else {
			if err := s.checkCompressed(md.Codec, body, int64(data), want); err != nil {
				return 0, fmt.Errorf("page %d: %w", page, err)
			}
			expanded += want
		}
		off = body + int64(data)
	}
	if values != rows {
		return 0, fmt.Errorf("pages hold %d values for the row group's %d rows", values, rows)
	}
	return expanded, nil
}

// header reads the page header at off (page headers are small; a longer one, with statistics, is read again
// with a larger buffer).
func (s *chunkScan) header(off, end int64) (pageHeader, error) {
	for n := int64(256); ; n *= 4 {
		n = min(n, end-off)
		b, err := s.read(off, n)
		if err != nil {
			return pageHeader{}, err
		}
		h, err := parsePageHeader(b)
		if errors.Is(err, errShort) && n < end-off {
			continue
		}
		return h, err
	}
}

func (s *chunkScan) read(off, n int64) ([]byte, error) {
	if int64(cap(s.buf)) < n {
		s.buf = make([]byte, n)
	}
	b := s.buf[:n]
	if _, err := s.r.ReadAt(b, off); err != nil {
		return nil, err
	}
	return b, nil
}

// checkCompressed checks that a compressed page of n bytes at off decompresses to want bytes, from the stream's
// own headers: the snappy preamble, or the zstd frames' content sizes (which the decoders then enforce). zstd frames
// that leave their size out may produce at most one block more than want.
func (s *chunkScan) checkCompressed(codec format.CompressionCodec, off, n, want int64) error {
	switch codec {
	case format.Snappy:
		b, err := s.read(off, min(n, binary.MaxVarintLen32))
		if err != nil {
			return err
		}
		v, k := binary.Uvarint(b)
		if k <= 0 || int64(v) != want {
			return fmt.Errorf("snappy stream of %d bytes where %d are declared", v, want)
		}
		return nil
	case format.Zstd:
		b, err := s.read(off, n)
		if err != nil {
			return err
		}
		exact, bound, err := zstdSize(b)
		if err != nil {
			return err
		}
		if exact > want || exact+bound < want || bound > want-exact+128<<10 {
			return fmt.Errorf("zstd frames of %d bytes (and up to %d undeclared) where %d are declared", exact, bound, want)
		}
		return nil
	}
	return fmt.Errorf("compression %s", codec)
}

// zstdSize walks the zstd frames in b, checking their headers and block structure: exact is the sum of the
// content sizes the frames declare (the decoder enforces each), bound the most that frames without a declared
// size can produce (encoders leave the size out of small frames only). It follows RFC 8878's frame layout field
// by field, in order, as one function: the checks read best beside the format they follow.
func zstdSize(b []byte) (exact, bound int64, err error) {
	for len(b) > 0 {
		if len(b) < 4 {
			return 0, 0, errors.New("truncated frame")
		}
		magic := binary.LittleEndian.Uint32(b)
		if magic&0xfffffff0 == 0x184d2a50 { // skippable frame
			if len(b) < 8 {
				return 0, 0, errors.New("truncated skippable frame")
			}
			n := int64(binary.LittleEndian.Uint32(b[4:]))
			if n > int64(len(b)-8) {
				return 0, 0, errors.New("skippable frame overruns the page")
			}
			b = b[8+n:]
			continue
		}
		if magic != 0xfd2fb528 {
			return 0, 0, fmt.Errorf("no zstd frame (magic %#x)", magic)
		}
		if len(b) < 6 {
			return 0, 0, errors.New("truncated frame header")
		}
		fhd := b[4]
		fcsFlag, single, checksum, dict := fhd>>6, fhd>>5&1 == 1, fhd>>2&1 == 1, fhd&3
		if fhd&0x08 != 0 {
			return 0, 0, errors.New("reserved frame header bit set")
		}
		p := 5
		blockMax := int64(128 << 10)
		if !single {
			wd := b[p]
			base := int64(1) << (10 + wd>>3)
			blockMax = min(blockMax, base+base/8*int64(wd&7))
			p++
		}
		p += []int{0, 1, 2, 4}[dict]
		fcsLen := []int{0, 2, 4, 8}[fcsFlag]
		if fcsFlag == 0 && single {
			fcsLen = 1
		}
		if len(b) < p+fcsLen {
			return 0, 0, errors.New("truncated frame header")
		}
		var fcs uint64
		switch fcsLen {
		case 1:
			fcs = uint64(b[p])
		case 2:
			fcs = uint64(binary.LittleEndian.Uint16(b[p:])) + 256
		case 4:
			fcs = uint64(binary.LittleEndian.Uint32(b[p:]))
		case 8:
			fcs = binary.LittleEndian.Uint64(b[p:])
		}
		if fcs > 1<<31 || exact+int64(fcs) > 1<<31 {
			return 0, 0, fmt.Errorf("frames declare more than %d bytes", int64(1)<<31)
		}
		exact += int64(fcs)
		p += fcsLen
		for last := false; !last; {
			if len(b) < p+3 {
				return 0, 0, errors.New("truncated block header")
			}
			bh := uint32(b[p]) | uint32(b[p+1])<<8 | uint32(b[p+2])<<16
			p += 3
			last = bh&1 == 1
			size, out := int(bh>>3), int64(bh>>3)
			switch bh >> 1 & 3 {
			case 0: // raw
			case 1: // RLE: one byte repeated size times
				size = 1
			case 2: // compressed: at most a block's worth
				out = blockMax
			default:
				return 0, 0, errors.New("reserved block type")
			}
			if len(b)-p < size {
				return 0, 0, errors.New("block overruns the page")
			}
			p += size
			if fcsLen == 0 {
				if bound += out; bound > 1<<31 {
					return 0, 0, errors.New("frames would produce more than 2 GiB")
				}
			}
		}
		if checksum {
			p += 4
		}
		if len(b) < p {
			return 0, 0, errors.New("truncated frame checksum")
		}
		b = b[p:]
	}
	return exact, bound, nil
}
