package model

import "github.com/mlsched/mlsched/features"

// useAVX512 selects the AVX-512 kernels, useVBMI2 the ones that also use AVX512_VBMI2's
// VPCOMPRESSB (Ice Lake and later). Tests switch them off to cover every path.
var (
	useAVX512 = hasAVX512()
	useVBMI2  = useAVX512 && hasVBMI2()
)

// logit16AVX512 is Predictor.Logit for Hidden == 16: log1p of all 64 counts in four 16-lane
// vectors (a 32-entry table on the top mantissa bits and a short polynomial), then one fused
// multiply-add of a 16-weight column per nonzero count.
//
//go:noescape
func logit16AVX512(in *[features.NumBuckets]uint32, k *kernel16) float32

// prob16AVX512 is Predictor.Predict for Hidden == 16: the same network with the output layer
// scaled by -log2(e), then 1/(1+2^t), all in one call (Go's SSE float code right after
// AVX-512 code measured several times slower than on its own).
//
//go:noescape
func prob16AVX512(in *[features.NumBuckets]uint32, k *kernel16) float32

// logit16VBMI2 and prob16VBMI2 compute the same, but first compress the nonzero counts
// (VPCOMPRESSB on their bucket numbers, VPERMI2D to fetch them) and take the log1p of 16 at a
// time: one vector for a typical task instead of four.
//
//go:noescape
func logit16VBMI2(in *[features.NumBuckets]uint32, k *kernel16) float32

//go:noescape
func prob16VBMI2(in *[features.NumBuckets]uint32, k *kernel16) float32

func cpuid(eaxArg, ecxArg uint32) (eax, ebx, ecx, edx uint32)
func xgetbv() (eax, edx uint32)

// hasAVX512 reports whether the CPU has AVX-512F, DQ, BW and BMI1 (what the kernels use)
// and the OS saves the ZMM and mask registers. (The standard library has no public CPU feature API, and this package stays
// standard library only.)
func hasAVX512() bool {
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
	const bmi1, avx512f, avx512dq, avx512bw = 1 << 3, 1 << 16, 1 << 17, 1 << 30
	return ebx7&avx512f != 0 && ebx7&avx512dq != 0 && ebx7&avx512bw != 0 && ebx7&bmi1 != 0
}

// hasVBMI2 reports whether the CPU has AVX512_VBMI2 and POPCNT (with hasAVX512's checks).
func hasVBMI2() bool {
	maxID, _, _, _ := cpuid(0, 0)
	if maxID < 7 {
		return false
	}
	_, _, ecx1, _ := cpuid(1, 0)
	_, _, ecx7, _ := cpuid(7, 0)
	const popcnt, vbmi2 = 1 << 23, 1 << 6
	return ecx1&popcnt != 0 && ecx7&vbmi2 != 0
}
