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

// log1pPoly approximates log1p(f)/f on [0, 1) (degree 6, fitted at Chebyshev nodes; with the
// AVX-512 kernel's exponent split, log1p of every count is within 1.5e-6 relative). The
// kernel reads it by name.
var log1pPoly = [7]float32{0.99999857, -0.499859, 0.33097526, -0.2345452, 0.14829414, -0.06559031, 0.013874484}
