package trace

import (
	"syscall"
	"unsafe"
)

// hugePage is the size of a transparent huge page on the platforms lem runs on.
const hugePage = 2 << 20

// adviseHuge asks the kernel to back the whole 2 MiB pages inside s with huge pages before its first write. A
// whole read fills hundreds of megabytes of fresh slices once; in 4 KiB pages the page faults cost about as much
// CPU as the decoding (kernels whose transparent huge pages are set to "madvise" give none to Go's heap
// otherwise). Advice only: an error or a kernel without huge pages leaves the slice as it was.
func adviseHuge[T any](s []T) {
	n := uintptr(len(s)) * unsafe.Sizeof(*new(T))
	if n < 2*hugePage {
		return
	}
	start := uintptr(unsafe.Pointer(unsafe.SliceData(s)))
	lo := (start + hugePage - 1) &^ (hugePage - 1)
	hi := (start + n) &^ (hugePage - 1)
	if hi <= lo {
		return
	}
	_ = syscall.Madvise(unsafe.Slice((*byte)(unsafe.Add(unsafe.Pointer(unsafe.SliceData(s)), lo-start)), hi-lo), syscall.MADV_HUGEPAGE)
}
