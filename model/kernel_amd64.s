#include "textflag.h"

// func cpuid(eaxArg, ecxArg uint32) (eax, ebx, ecx, edx uint32)
TEXT ·cpuid(SB), NOSPLIT, $0-24
	MOVL eaxArg+0(FP), AX
	MOVL ecxArg+4(FP), CX
	CPUID
	MOVL AX, eax+8(FP)
	MOVL BX, ebx+12(FP)
	MOVL CX, ecx+16(FP)
	MOVL DX, edx+20(FP)
	RET

// func xgetbv() (eax, edx uint32)
TEXT ·xgetbv(SB), NOSPLIT, $0-8
	MOVL $0, CX
	XGETBV
	MOVL AX, eax+0(FP)
	MOVL DX, edx+4(FP)
	RET

// LOG1P16 loads 16 counts from off(SI), sets mask to their nonzero lanes, and stores
// log1p(min(v, MaxCount) / 65536) to off(R8), the 64-byte aligned scratch.
// u = (v + 65536) * 2^-16 is exact in float32 (v + 65536 < 2^23), u = 2^e * m with m in [1, 2),
// and log1p = e*ln2 + f*g(f) with f = m - 1 exact and g the polynomial log1pPoly.
#define LOG1P16(off, mask) \
	VMOVDQU32 off(SI), Z0; \
	VPTESTMD Z0, Z0, mask; \
	VPMINUD Z31, Z0, Z0; \
	VPADDD Z30, Z0, Z0; \
	VCVTDQ2PS Z0, Z0; \
	VMULPS Z29, Z0, Z0; \
	VGETEXPPS Z0, Z1; \
	VGETMANTPS $0, Z0, Z2; \
	VSUBPS Z28, Z2, Z2; \
	VMOVAPS Z26, Z3; \
	VFMADD213PS Z25, Z2, Z3; \
	VFMADD213PS Z24, Z2, Z3; \
	VFMADD213PS Z23, Z2, Z3; \
	VFMADD213PS Z22, Z2, Z3; \
	VFMADD213PS Z21, Z2, Z3; \
	VFMADD213PS Z20, Z2, Z3; \
	VMULPS Z2, Z3, Z3; \
	VFMADD231PS Z27, Z1, Z3; \
	VMOVAPS Z3, off(R8)

// One nonzero count, AX != 0: CX = its bucket (the lowest set bit of AX), cleared from AX
// with ZF set when AX becomes 0; adds its log1p times column CX to acc. Needs BMI1.
// XORL breaks TZCNT's false dependency on CX, which otherwise chains the iterations
// (measured: dense inputs 30% faster with it).
#define COLUMN(tmp, acc) \
	XORL CX, CX; \
	TZCNTQ AX, CX; \
	MOVQ CX, DX; \
	SHLQ $6, DX; \
	BLSRQ AX, AX; \
	VBROADCASTSS (R8)(CX*4), tmp; \
	VFMADD231PS (DI)(DX*1), tmp, acc

// func logit16AVX512(in *[64]uint32, k *kernel16) float32
// Requires AVX-512F and BMI1. k: w1t [64][16]float32 at 0, b1 at 4096, w2 at 4160, b2 at 4224.
TEXT ·logit16AVX512(SB), NOSPLIT, $320-20
	MOVQ in+0(FP), SI
	MOVQ k+8(FP), DI
	// R8: 256 bytes of scratch for the 64 log1p values, on a cache line boundary so that
	// each 16-lane store is one line and store-to-load forwarding works.
	LEAQ 63(SP), R8
	ANDQ $~63, R8

	MOVL $0x400000, AX // features.MaxCount
	VPBROADCASTD AX, Z31
	MOVL $0x10000, AX // features.FixedOne
	VPBROADCASTD AX, Z30
	MOVL $0x37800000, AX // float32 2^-16
	VPBROADCASTD AX, Z29
	MOVL $0x3f800000, AX // float32 1
	VPBROADCASTD AX, Z28
	MOVL $0x3f317218, AX // float32 ln 2
	VPBROADCASTD AX, Z27
	VBROADCASTSS ·log1pPoly+0(SB), Z20
	VBROADCASTSS ·log1pPoly+4(SB), Z21
	VBROADCASTSS ·log1pPoly+8(SB), Z22
	VBROADCASTSS ·log1pPoly+12(SB), Z23
	VBROADCASTSS ·log1pPoly+16(SB), Z24
	VBROADCASTSS ·log1pPoly+20(SB), Z25
	VBROADCASTSS ·log1pPoly+24(SB), Z26

	LOG1P16(0, K1)
	LOG1P16(64, K2)
	LOG1P16(128, K3)
	LOG1P16(192, K4)

	// AX = 64-bit mask of the nonzero counts.
	KMOVW K1, AX
	KMOVW K2, BX
	SHLQ $16, BX
	ORQ BX, AX
	KMOVW K3, BX
	SHLQ $32, BX
	ORQ BX, AX
	KMOVW K4, BX
	SHLQ $48, BX
	ORQ BX, AX

	// Four accumulators, in turn, so that the FMA latency chain is a quarter as long.
	// The loop's only serial chain is BLSR on AX: one cycle per nonzero count.
	VMOVUPS 4096(DI), Z4
	VPXORD Z5, Z5, Z5
	VPXORD Z8, Z8, Z8
	VPXORD Z9, Z9, Z9
	TESTQ AX, AX
	JZ done

loop:
	COLUMN(Z6, Z4)
	JZ done
	COLUMN(Z7, Z5)
	JZ done
	COLUMN(Z10, Z8)
	JZ done
	COLUMN(Z11, Z9)
	JNZ loop

done:
	VADDPS Z5, Z4, Z4
	VADDPS Z9, Z8, Z8
	VADDPS Z8, Z4, Z4
	VPXORD Z6, Z6, Z6
	VMAXPS Z6, Z4, Z4 // ReLU
	VMULPS 4160(DI), Z4, Z4
	VEXTRACTF64X4 $1, Z4, Y5
	VADDPS Y5, Y4, Y4
	VEXTRACTF128 $1, Y4, X5
	VADDPS X5, X4, X4
	VPERMILPS $0x4e, X4, X5
	VADDPS X5, X4, X4
	VPERMILPS $0xb1, X4, X5
	VADDPS X5, X4, X4
	VADDSS 4224(DI), X4, X4
	VMOVSS X4, ret+16(FP)
	// VZEROUPPER clears only Z0-Z15; the constants held in Z20-Z31 stay dirty otherwise.
	VPXORD Z20, Z20, Z20
	VPXORD Z21, Z21, Z21
	VPXORD Z22, Z22, Z22
	VPXORD Z23, Z23, Z23
	VPXORD Z24, Z24, Z24
	VPXORD Z25, Z25, Z25
	VPXORD Z26, Z26, Z26
	VPXORD Z27, Z27, Z27
	VPXORD Z28, Z28, Z28
	VPXORD Z29, Z29, Z29
	VPXORD Z30, Z30, Z30
	VPXORD Z31, Z31, Z31
	VZEROUPPER
	RET


// func sigmoidAVX512(z float32) float32
// sigmoid32 with VEX/EVEX scalar instructions: after the AVX-512 kernel, Go's SSE float code
// ran several times slower than on its own. Same method: clamp, t = -z*log2(e),
// 2^t = 2^floor(t) * poly(t - floor(t)) (VSCALEFSS), then 1/(1+2^t).
TEXT ·sigmoidAVX512(SB), NOSPLIT, $0-12
	VMOVSS z+0(FP), X0
	MOVL $0x42ae0000, AX // 87
	VMOVD AX, X1
	VMINSS X1, X0, X0
	MOVL $0xc2ae0000, AX // -87
	VMOVD AX, X1
	VMAXSS X1, X0, X0
	MOVL $0xbfb8aa3b, AX // -log2(e)
	VMOVD AX, X1
	VMULSS X1, X0, X0 // t
	VROUNDSS $9, X0, X0, X1 // floor(t)
	VSUBSS X1, X0, X2 // f in [0, 1)
	VMOVSS ·exp2Poly+20(SB), X3
	VFMADD213SS ·exp2Poly+16(SB), X2, X3
	VFMADD213SS ·exp2Poly+12(SB), X2, X3
	VFMADD213SS ·exp2Poly+8(SB), X2, X3
	VFMADD213SS ·exp2Poly+4(SB), X2, X3
	VFMADD213SS ·exp2Poly+0(SB), X2, X3
	VSCALEFSS X1, X3, X3 // 2^t
	MOVL $0x3f800000, AX // 1
	VMOVD AX, X4
	VADDSS X4, X3, X3
	VDIVSS X3, X4, X0
	VMOVSS X0, ret+8(FP)
	RET
