package model

import "github.com/mlsched/mlsched/features"

// useAVX512 selects the AVX-512 kernel. Tests switch it off to cover the portable path.
var useAVX512 = hasAVX512F()

// logit16AVX512 is Predictor.Logit for Hidden == 16: log1p of all 64 counts in four 16-lane
// vectors, then one fused multiply-add of a 16-weight column per nonzero count.
//
//go:noescape
func logit16AVX512(in *[features.NumBuckets]uint32, k *kernel16) float32

// sigmoidAVX512 is sigmoid32 in VEX/EVEX scalar instructions (AVX-512F, FMA), for use right
// after logit16AVX512.
//
//go:noescape
func sigmoidAVX512(z float32) float32

func cpuid(eaxArg, ecxArg uint32) (eax, ebx, ecx, edx uint32)
func xgetbv() (eax, edx uint32)

// hasAVX512F reports whether the CPU has AVX-512F and BMI1 (what logit16AVX512 uses) and
// the OS saves the ZMM and mask registers. (The standard library has no public CPU feature API, and this package stays
// standard library only.)
func hasAVX512F() bool {
	maxID, _, _, _ := cpuid(0, 0)
	if maxID < 7 {
		return false
	}
	_, _, ecx1, _ := cpuid(1, 0)
	const osxsave, avx = 1 << 27, 1 << 28
	if ecx1&osxsave == 0 || ecx1&avx == 0 {
		return false
	}
	// XCR0: SSE and AVX state (bits 1, 2), opmask, ZMM_Hi256, Hi16_ZMM (bits 5, 6, 7).
	if xcr0, _ := xgetbv(); xcr0&0xe6 != 0xe6 {
		return false
	}
	_, ebx7, _, _ := cpuid(7, 0)
	const bmi1, avx512f = 1 << 3, 1 << 16
	return ebx7&avx512f != 0 && ebx7&bmi1 != 0
}
