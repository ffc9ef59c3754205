package trace

import (
	"errors"
	"fmt"
)

// A small reader of Thrift's compact protocol, used to check a Parquet footer and page headers before the Parquet
// library decodes them: the library sizes its slices by the counts a file declares (a list of 2^31 elements from a
// few bytes), so every count is checked here against the bytes that would have to hold it.

// Compact protocol types.
const (
	tStop   = 0
	tTrue   = 1
	tFalse  = 2
	tByte   = 3
	tI16    = 4
	tI32    = 5
	tI64    = 6
	tDouble = 7
	tBinary = 8
	tList   = 9
	tSet    = 10
	tMap    = 11
	tStruct = 12
)

// maxThriftDepth bounds nesting: Parquet's metadata nests about six deep; the decoder recurses per level.
const maxThriftDepth = 32

// goStructBytes is the most a decoded metadata struct takes in memory (format.ColumnChunk, 560 bytes); the
// footer check charges it for every struct in a list, since the smallest encoded struct is one byte.
const goStructBytes = 560

var errShort = errors.New("truncated")

type thriftReader struct {
	b    []byte
	off  int
	cost int64 // estimated bytes the library allocates decoding what was read
}

func (r *thriftReader) byte() (byte, error) {
	if r.off >= len(r.b) {
		return 0, errShort
	}
	c := r.b[r.off]
	r.off++
	return c, nil
}

func (r *thriftReader) uvarint() (uint64, error) {
	var x uint64
	for shift := uint(0); shift < 64; shift += 7 {
		c, err := r.byte()
		if err != nil {
			return 0, err
		}
		x |= uint64(c&0x7f) << shift
		if c < 0x80 {
			return x, nil
		}
	}
	return 0, errors.New("varint overflows 64 bits")
}

func (r *thriftReader) varint() (int64, error) {
	u, err := r.uvarint()
	return int64(u>>1) ^ -int64(u&1), err
}

// int32 reads an i32 (or a smaller integer) field value.
func (r *thriftReader) int32() (int32, error) {
	v, err := r.varint()
	if err != nil {
		return 0, err
	}
	if v < -1<<31 || v > 1<<31-1 {
		return 0, fmt.Errorf("i32 value %d out of range", v)
	}
	return int32(v), nil
}

// length reads a count of things that each take at least one byte, so it cannot exceed the bytes left (errShort:
// a page header read in part is read again whole).
func (r *thriftReader) length() (int, error) {
	n, err := r.uvarint()
	if err != nil {
		return 0, err
	}
	if n > uint64(len(r.b)-r.off) {
		return 0, fmt.Errorf("%w: declares %d elements or bytes with %d bytes left", errShort, n, len(r.b)-r.off)
	}
	return int(n), nil
}

func (r *thriftReader) skip(typ byte, depth int) error {
	switch typ {
	case tTrue, tFalse:
		return nil
	case tByte:
		_, err := r.byte()
		return err
	case tI16, tI32, tI64:
		_, err := r.uvarint()
		return err
	case tDouble:
		if len(r.b)-r.off < 8 {
			return errShort
		}
		r.off += 8
		return nil
	case tBinary:
		n, err := r.length()
		if err != nil {
			return err
		}
		r.off += n
		r.cost += int64(n)
		return nil
	case tList, tSet:
		h, err := r.byte()
		if err != nil {
			return err
		}
		n, elem := int(h>>4), h&0x0f
		if n == 15 {
			if n, err = r.length(); err != nil {
				return err
			}
		}
		return r.elements(n, elem, depth)
	case tMap:
		n, err := r.length()
		if err != nil || n == 0 {
			return err
		}
		kv, err := r.byte()
		if err != nil {
			return err
		}
		for range n {
			if err := r.skipValue(kv>>4, depth); err != nil {
				return err
			}
			if err := r.skipValue(kv&0x0f, depth); err != nil {
				return err
			}
		}
		return nil
	case tStruct:
		return r.fields(depth, nil)
	}
	return fmt.Errorf("unknown Thrift type %d", typ)
}

// skipValue skips a container element: booleans take a byte there (unlike in fields).
func (r *thriftReader) skipValue(typ byte, depth int) error {
	if depth >= maxThriftDepth {
		return errors.New("nested too deep")
	}
	if typ == tTrue || typ == tFalse {
		_, err := r.byte()
		return err
	}
	return r.skip(typ, depth+1)
}

func (r *thriftReader) elements(n int, elem byte, depth int) error {
	per := int64(8)
	switch elem {
	case tStruct:
		per = goStructBytes
	case tBinary, tList, tSet, tMap:
		per = 24 // slice or string header; contents are charged when read
	}
	r.cost += int64(n) * per
	for range n {
		if err := r.skipValue(elem, depth); err != nil {
			return err
		}
	}
	return nil
}

// fields reads a struct's fields up to its stop byte. fn, if set, is offered each field first and returns whether
// it consumed the value; the others are skipped.
func (r *thriftReader) fields(depth int, fn func(id int16, typ byte) (bool, error)) error {
	if depth >= maxThriftDepth {
		return errors.New("nested too deep")
	}
	var id int16
	for {
		h, err := r.byte()
		if err != nil {
			return err
		}
		typ := h & 0x0f
		if typ == tStop {
			return nil
		}
		if d := h >> 4; d != 0 {
			id += int16(d)
		} else {
			v, err := r.varint()
			if err != nil {
				return err
			}
			if v < -1<<15 || v > 1<<15-1 {
				return fmt.Errorf("field id %d out of range", v)
			}
			id = int16(v)
		}
		if fn != nil {
			done, err := fn(id, typ)
			if err != nil {
				return err
			}
			if done {
				continue
			}
		}
		if err := r.skip(typ, depth+1); err != nil {
			return err
		}
	}
}

// checkFooter checks a file's metadata (the Thrift-encoded FileMetaData) before the Parquet library decodes it:
// every count fits in the bytes left, nesting is shallow, and decoding it cannot allocate more than a small
// multiple of its size.
func checkFooter(b []byte) error {
	r := &thriftReader{b: b}
	if err := r.fields(0, nil); err != nil {
		return fmt.Errorf("file metadata at byte %d: %w", r.off, err)
	}
	if limit := 64*int64(len(b)) + 1<<20; r.cost > limit {
		return fmt.Errorf("file metadata of %d bytes would decode into about %d bytes (limit %d)", len(b), r.cost, limit)
	}
	return nil
}

// pageHeader holds what the page check needs of a Parquet page header.
type pageHeader struct {
	typ               int32 // 0 data page, 2 dictionary page, 3 data page v2
	uncompressed      int32
	compressed        int32
	numValues         int32
	numNulls, numRows int32 // v2
	defLen, repLen    int32 // v2: level bytes ahead of the (compressed) values
	v2Compressed      bool  // v2: values compressed (default true)
	size              int   // bytes of the header itself
}

// Parquet page types.
const (
	pageData       = 0
	pageDictionary = 2
	pageDataV2     = 3
)

// parsePageHeader reads a page header from the start of b (errShort when b ends inside it).
func parsePageHeader(b []byte) (pageHeader, error) {
	h := pageHeader{typ: -1, uncompressed: -1, compressed: -1, numValues: -1, v2Compressed: true}
	r := &thriftReader{b: b}
	i32 := func(dst *int32, typ byte) (bool, error) {
		if typ != tI32 {
			return false, fmt.Errorf("field of type %d where an i32 belongs", typ)
		}
		v, err := r.int32()
		*dst = v
		return true, err
	}
	err := r.fields(0, func(id int16, typ byte) (bool, error) {
		switch id {
		case 1:
			return i32(&h.typ, typ)
		case 2:
			return i32(&h.uncompressed, typ)
		case 3:
			return i32(&h.compressed, typ)
		case 5, 7, 8: // data page, dictionary page, data page v2 headers: num_values is field 1 in each
			if typ != tStruct {
				return false, fmt.Errorf("field %d of type %d where a struct belongs", id, typ)
			}
			return true, r.fields(1, func(sub int16, typ byte) (bool, error) {
				switch {
				case sub == 1:
					return i32(&h.numValues, typ)
				case id == 8 && sub == 2:
					return i32(&h.numNulls, typ)
				case id == 8 && sub == 3:
					return i32(&h.numRows, typ)
				case id == 8 && sub == 5:
					return i32(&h.defLen, typ)
				case id == 8 && sub == 6:
					return i32(&h.repLen, typ)
				case id == 8 && sub == 7 && (typ == tTrue || typ == tFalse):
					h.v2Compressed = typ == tTrue
					return true, nil
				}
				return false, nil
			})
		}
		return false, nil
	})
	if err != nil {
		return h, err
	}
	h.size = r.off
	return h, nil
}
