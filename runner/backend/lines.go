package backend

import (
	"bytes"
	"io"
)

// MaxChunk is the most of one output line held in memory: a longer line (a progress bar redrawn with \r for
// hours, a megabyte of JSON) is passed on in chunks of this size, marked Partial, so output of any length and
// any bytes is drained and passed through without blocking the workload.
const MaxChunk = 64 << 10

// splitLines reads r to its end and calls emit with each line (without its newline) or, for a line longer than
// MaxChunk, with its chunks (partial true for all but the last). A final line without a newline is emitted as a
// line. Bytes are passed through as they are.
func splitLines(r io.Reader, emit func(text []byte, partial bool)) error {
	buf := make([]byte, 0, 4096)
	chunk := make([]byte, 32<<10)
	for {
		n, err := r.Read(chunk)
		data := chunk[:n]
		for len(data) > 0 {
			i := bytes.IndexByte(data, '\n')
			if i < 0 {
				buf = append(buf, data...)
				data = nil
				for len(buf) >= MaxChunk {
					emit(buf[:MaxChunk], true)
					buf = append(buf[:0], buf[MaxChunk:]...)
				}
				break
			}
			buf = append(buf, data[:i]...)
			data = data[i+1:]
			for len(buf) > MaxChunk {
				emit(buf[:MaxChunk], true)
				buf = append(buf[:0], buf[MaxChunk:]...)
			}
			emit(buf, false)
			buf = buf[:0]
		}
		if err != nil {
			if len(buf) > 0 {
				emit(buf, false)
			}
			if err == io.EOF {
				return nil
			}
			return err
		}
	}
}
