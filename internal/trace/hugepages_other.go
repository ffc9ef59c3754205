//go:build !linux

package trace

// adviseHuge gives no advice where the kernel takes none.
func adviseHuge[T any](s []T) {}
