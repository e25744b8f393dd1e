package model

import "unsafe"

// newKernel16 allocates a kernel16 on a 64-byte boundary, so that every column of weights
// is one cache line and one aligned 512-bit load.
func newKernel16() *kernel16 {
	const align = 64
	buf := make([]byte, unsafe.Sizeof(kernel16{})+align)
	off := (align - uintptr(unsafe.Pointer(&buf[0]))%align) % align
	return (*kernel16)(unsafe.Pointer(&buf[off]))
}
