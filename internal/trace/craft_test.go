package trace

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"testing"

	"github.com/parquet-go/parquet-go/encoding/thrift"
	"github.com/parquet-go/parquet-go/format"
	"github.com/stretchr/testify/require"
)

// A crafted-file kit for tests: a Parquet file taken apart into its metadata and pages, changed, and put back
// together with consistent offsets, so that a test can make one declared count or size lie and nothing else.

type craftPage struct {
	h    format.PageHeader
	body []byte
}

type craftFile struct {
	md     format.FileMetaData
	chunks [][][]craftPage // row group, column, pages
}

func parseCraft(t testing.TB, b []byte) *craftFile {
	t.Helper()
	n := int(binary.LittleEndian.Uint32(b[len(b)-8:]))
	c := &craftFile{}
	require.NoError(t, thrift.Unmarshal(&thrift.CompactProtocol{}, b[len(b)-8-n:len(b)-8], &c.md))
	for _, rg := range c.md.RowGroups {
		var cols [][]craftPage
		for _, cc := range rg.Columns {
			md := cc.MetaData
			off := md.DataPageOffset
			if md.DictionaryPageOffset != 0 {
				off = md.DictionaryPageOffset
			}
			end := off + md.TotalCompressedSize
			var pages []craftPage
			for off < end {
				ph, err := parsePageHeader(b[off:end])
				require.NoError(t, err)
				var p craftPage
				require.NoError(t, thrift.Unmarshal(&thrift.CompactProtocol{}, b[off:off+int64(ph.size)], &p.h))
				body := off + int64(ph.size)
				p.body = bytes.Clone(b[body : body+int64(p.h.CompressedPageSize)])
				pages = append(pages, p)
				off = body + int64(p.h.CompressedPageSize)
			}
			cols = append(cols, pages)
		}
		c.chunks = append(c.chunks, cols)
	}
	return c
}

// column returns the pages of the named column in row group rg.
func (c *craftFile) column(t testing.TB, rg int, name string) []craftPage {
	t.Helper()
	for i, cc := range c.md.RowGroups[rg].Columns {
		if cc.MetaData.PathInSchema[0] == name {
			return c.chunks[rg][i]
		}
	}
	t.Fatalf("no column %s", name)
	return nil
}

// bytes writes the file: pages as they are (compressed sizes and checksums from their bodies), chunk offsets and sizes
// recomputed, the page index left out.
func (c *craftFile) bytes(t testing.TB) []byte {
	t.Helper()
	out := []byte("PAR1")
	for i := range c.md.RowGroups {
		rg := &c.md.RowGroups[i]
		rg.FileOffset = int64(len(out))
		var total int64
		for j := range rg.Columns {
			cc := &rg.Columns[j]
			md := &cc.MetaData
			start := int64(len(out))
			md.DictionaryPageOffset, md.DataPageOffset = 0, 0
			var unc int64
			for k := range c.chunks[i][j] {
				p := &c.chunks[i][j][k]
				p.h.CompressedPageSize = int32(len(p.body))
				if p.h.CRC != 0 { // a body a test replaced gets a matching checksum: only the declared sizes lie
					p.h.CRC = int32(crc32.ChecksumIEEE(p.body))
				}
				h, err := thrift.Marshal(&thrift.CompactProtocol{}, &p.h)
				require.NoError(t, err)
				if p.h.Type == format.DictionaryPage {
					md.DictionaryPageOffset = int64(len(out))
				} else if md.DataPageOffset == 0 {
					md.DataPageOffset = int64(len(out))
				}
				out = append(append(out, h...), p.body...)
				unc += int64(len(h)) + int64(p.h.UncompressedPageSize)
			}
			md.TotalCompressedSize = int64(len(out)) - start
			md.TotalUncompressedSize = unc
			cc.FileOffset = start
			cc.ColumnIndexOffset, cc.ColumnIndexLength, cc.OffsetIndexOffset, cc.OffsetIndexLength = 0, 0, 0, 0
			total += md.TotalCompressedSize
		}
		rg.TotalCompressedSize = total
	}
	footer, err := thrift.Marshal(&thrift.CompactProtocol{}, &c.md)
	require.NoError(t, err)
	out = append(out, footer...)
	out = binary.LittleEndian.AppendUint32(out, uint32(len(footer)))
	return append(out, "PAR1"...)
}

// zstdRLEFrame is a valid zstd frame of n zero bytes made of RLE blocks (4 bytes per 128 KiB): the shape of a
// decompression bomb. declare writes the content size into the frame header.
func zstdRLEFrame(n int64, declare bool) []byte {
	b := []byte{0x28, 0xb5, 0x2f, 0xfd}
	if declare {
		b = append(b, 0x80, 0x70) // 4-byte content size, window descriptor (128 MiB)
		b = binary.LittleEndian.AppendUint32(b, uint32(n))
	} else {
		b = append(b, 0x00, 0x70) // no content size
	}
	for n > 0 {
		size := min(n, 128<<10)
		n -= size
		h := uint32(size)<<3 | 1<<1 // RLE block
		if n == 0 {
			h |= 1
		}
		b = append(b, byte(h), byte(h>>8), byte(h>>16), 0)
	}
	return b
}
