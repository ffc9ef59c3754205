package trace

import (
	"io"
	"strings"
	"testing"

	"github.com/parquet-go/parquet-go"
	"github.com/parquet-go/parquet-go/encoding"
)

// fakeChunk hands out prepared pages: a byte-array column chunk of a dictionary page, a dictionary-encoded data
// page, a PLAIN data page and another dictionary-encoded data page whose index lies past the dictionary.
type fakeChunk struct{ pages []parquet.Page }

func (c fakeChunk) Type() parquet.Type   { return parquet.ByteArrayType }
func (c fakeChunk) Column() int          { return 0 }
func (c fakeChunk) Pages() parquet.Pages { return &fakePages{pages: c.pages} }
func (c fakeChunk) ColumnIndex() (parquet.ColumnIndex, error) {
	return nil, parquet.ErrMissingColumnIndex
}
func (c fakeChunk) OffsetIndex() (parquet.OffsetIndex, error) {
	return nil, parquet.ErrMissingOffsetIndex
}
func (c fakeChunk) BloomFilter() parquet.BloomFilter { return nil }
func (c fakeChunk) NumValues() int64                 { return 4 }

type fakePages struct {
	pages []parquet.Page
	i     int
}

func (p *fakePages) ReadPage() (parquet.Page, error) {
	if p.i >= len(p.pages) {
		return nil, io.EOF
	}
	p.i++
	return p.pages[p.i-1], nil
}
func (p *fakePages) SeekToRow(int64) error { return nil }
func (p *fakePages) Close() error          { return nil }

func byteArrays(ss ...string) encoding.Values {
	var b []byte
	offs := []uint32{0}
	for _, s := range ss {
		b = append(b, s...)
		offs = append(offs, uint32(len(b)))
	}
	return encoding.ByteArrayValues(b, offs)
}

// A column chunk may hold a dictionary page, plain pages and dictionary-encoded pages in turn; an index past the
// dictionary is refused, not read as one of the plain pages' strings that follow the dictionary's in memory.
func TestDictionaryIndexPastDictionary(t *testing.T) {
	dict := parquet.ByteArrayType.NewDictionary(0, 2, byteArrays("a", "b"))
	p1 := dict.Type().NewPage(0, 2, encoding.Int32Values([]int32{0, 1}))
	p2 := parquet.ByteArrayType.NewPage(0, 1, byteArrays("x"))
	p3 := dict.Type().NewPage(0, 1, encoding.Int32Values([]int32{2})) // index 2: the dictionary holds 2 values
	c, err := readColumn(fakeChunk{[]parquet.Page{p1, p2, p3}}, 4, nil)
	if err == nil {
		t.Fatalf("dictionary index 2 of a 2-value dictionary accepted: row 3 reads %q (rows %q %q %q)",
			c.str(3), c.str(0), c.str(1), c.str(2))
	}
	if !strings.Contains(err.Error(), "dictionary index 2 out of range") {
		t.Fatalf("error %q", err)
	}
	// The same pages without the bad one: dictionary, plain and dictionary strings in their rows.
	p4 := dict.Type().NewPage(0, 1, encoding.Int32Values([]int32{1}))
	c, err = readColumn(fakeChunk{[]parquet.Page{p1, p2, p4}}, 4, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := []string{c.str(0), c.str(1), c.str(2), c.str(3)}; strings.Join(got, ",") != "a,b,x,b" {
		t.Fatalf("rows %q, want a b x b", got)
	}
}
