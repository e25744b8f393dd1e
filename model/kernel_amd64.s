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

// kernel16 offsets (TestKernel16Layout checks them against the Go struct).
#define k16B1 4096
#define k16W2 4160
#define k16B2 4224
#define k16W2e 4288
#define k16B2e 4352
#define k16Lnc 4416
#define k16Inv 4544
#define kMaxCount 4672
#define kFixedOne 4676
#define kSixteen 4680
#define kLn2 4684
#define kNegOne 4688
#define kQ0 4692
#define kQ1 4696
#define kExp2 4700
#define kThirtyTwo 4724
#define k16Iota 4736

// LOG1PZ5 stores log1p(min(v, MaxCount) / 65536) of the 16 counts v in Z5 to off(R8), the
// 64-byte aligned scratch. w = v + 65536 is exact in float32 (< 2^23); w = 2^e * m with m in
// [1, 2) and log1p(v/65536) = (e-16)*ln2 + log(m). The top five mantissa bits i pick
// inv[i] ~ 1/(1+i/32) and lnc[i] = -log(inv[i]) (VPERMI2PS from Z12:Z13, Z14:Z15, which read
// only the index's low five bits); r = m*inv[i] - 1 is in [0, 1/32] and
// log(m) = (lnc[i] + r) + r^2*(q0 + q1*r). Expects Z10 = q1. Uses Z5-Z9 and Z11 (renamed, so
// that successive uses overlap).
#define LOG1PZ5(off) \
	VPMINUD.BCST kMaxCount(DI), Z5, Z5; \
	VPADDD.BCST kFixedOne(DI), Z5, Z5; \
	VCVTDQ2PS Z5, Z5; \
	VGETEXPPS Z5, Z6; \
	VGETMANTPS $0, Z5, Z7; \
	VPSRLD $18, Z5, Z8; \
	VMOVAPS Z8, Z9; \
	VPERMI2PS Z15, Z14, Z9; \
	VPERMI2PS Z13, Z12, Z8; \
	VSUBPS.BCST kSixteen(DI), Z6, Z6; \
	VFMADD231PS.BCST kLn2(DI), Z6, Z8; \
	VFMADD213PS.BCST kNegOne(DI), Z7, Z9; \
	VMOVAPS Z9, Z11; \
	VFMADD213PS.BCST kQ0(DI), Z10, Z11; \
	VMULPS Z9, Z9, Z7; \
	VADDPS Z9, Z8, Z8; \
	VFMADD213PS Z8, Z7, Z11; \
	VMOVAPS Z11, off(R8)

// LOG1P16 loads 16 counts from off(SI), sets mask to their nonzero lanes, and stores their
// log1p to off(R8) (LOG1PZ5: expects Z10 = q1 and the tables in Z12-Z15).
#define LOG1P16(off, mask) \
	VMOVDQU32 off(SI), Z5; \
	VPTESTMD Z5, Z5, mask; \
	LOG1PZ5(off)

// One nonzero count, AX != 0: CX = its bucket (the lowest set bit of AX), cleared from AX
// with ZF set when AX becomes 0; adds its log1p times column CX (at DI + CX*8*8) to acc.
// Needs BMI1. (An XORL CX, CX before TZCNT, against a false dependency some CPUs have,
// measured 20% slower on dense inputs here.)
#define COLUMN(tmp, acc) \
	TZCNTQ AX, CX; \
	LEAQ (CX*8), DX; \
	BLSRQ AX, AX; \
	VBROADCASTSS (R8)(CX*4), tmp; \
	VFMADD231PS (DI)(DX*8), tmp, acc

// HIDDEN16 leaves in Z4 the 16 hidden pre-activations b1 + W1' log1p(in) of in (SI) for the
// kernel k (DI), with R8 pointing at 256 bytes of 64-byte aligned scratch. Uses Z0-Z15 only,
// so that VZEROUPPER leaves the vector state clean.
#define HIDDEN16 \
	VMOVUPS k16Lnc(DI), Z12; \
	VMOVUPS k16Lnc+64(DI), Z13; \
	VMOVUPS k16Inv(DI), Z14; \
	VMOVUPS k16Inv+64(DI), Z15; \
	VBROADCASTSS kQ1(DI), Z10; \
	LOG1P16(0, K1); \
	LOG1P16(64, K2); \
	LOG1P16(128, K3); \
	LOG1P16(192, K4); \
	KUNPCKWD K1, K2, K1; \
	KUNPCKWD K3, K4, K3; \
	KUNPCKDQ K1, K3, K1; \
	KMOVQ K1, AX; \
	VMOVUPS k16B1(DI), Z4; \
	VPXORD Z5, Z5, Z5; \
	VPXORD Z8, Z8, Z8; \
	VPXORD Z9, Z9, Z9; \
	TESTQ AX, AX; \
	JZ sum; \
loop: \
	COLUMN(Z6, Z4); \
	JZ sum; \
	COLUMN(Z7, Z5); \
	JZ sum; \
	COLUMN(Z10, Z8); \
	JZ sum; \
	COLUMN(Z11, Z9); \
	JNZ loop; \
sum: \
	VADDPS Z5, Z4, Z4; \
	VADDPS Z9, Z8, Z8; \
	VADDPS Z8, Z4, Z4

// GATHER16 sets Z5 to the counts of the 16 buckets numbered by the bytes of xidx, from the
// four 16-count groups in Z0-Z3 (index bits 0-4 pick within a pair, bit 5 the pair).
#define GATHER16(xidx) \
	VPMOVZXBD xidx, Z6; \
	VMOVDQA32 Z6, Z7; \
	VMOVDQA32 Z6, Z8; \
	VPERMI2D Z1, Z0, Z7; \
	VPERMI2D Z3, Z2, Z8; \
	VPTESTMD.BCST kThirtyTwo(DI), Z6, K5; \
	VPBLENDMD Z8, Z7, K5, Z5

// COLUMNC is COLUMN for the compressed log1p values: the k-th nonzero count's at disp(R8)(R9).
#define COLUMNC(tmp, acc, disp) \
	TZCNTQ AX, CX; \
	LEAQ (CX*8), DX; \
	BLSRQ AX, AX; \
	VBROADCASTSS disp(R8)(R9*1), tmp; \
	VFMADD231PS (DI)(DX*8), tmp, acc

// HIDDEN16C is HIDDEN16 with the nonzero counts compressed first: log1p of 16 at a time, as
// many rounds as needed (one for a typical task). Needs AVX512_VBMI2 and POPCNT.
#define HIDDEN16C \
	VMOVDQU32 0(SI), Z0; \
	VMOVDQU32 64(SI), Z1; \
	VMOVDQU32 128(SI), Z2; \
	VMOVDQU32 192(SI), Z3; \
	VPTESTMD Z0, Z0, K1; \
	VPTESTMD Z1, Z1, K2; \
	VPTESTMD Z2, Z2, K3; \
	VPTESTMD Z3, Z3, K4; \
	KUNPCKWD K1, K2, K1; \
	KUNPCKWD K3, K4, K3; \
	KUNPCKDQ K1, K3, K1; \
	KMOVQ K1, AX; \
	VMOVDQU8 k16Iota(DI), Z4; \
	VPCOMPRESSB.Z Z4, K1, Z4; \
	VMOVUPS k16Lnc(DI), Z12; \
	VMOVUPS k16Lnc+64(DI), Z13; \
	VMOVUPS k16Inv(DI), Z14; \
	VMOVUPS k16Inv+64(DI), Z15; \
	VBROADCASTSS kQ1(DI), Z10; \
	GATHER16(X4); \
	LOG1PZ5(0); \
	POPCNTQ AX, BX; \
	CMPQ BX, $16; \
	JLE cols; \
	VEXTRACTI32X4 $1, Z4, X6; \
	GATHER16(X6); \
	LOG1PZ5(64); \
	CMPQ BX, $32; \
	JLE cols; \
	VEXTRACTI32X4 $2, Z4, X6; \
	GATHER16(X6); \
	LOG1PZ5(128); \
	CMPQ BX, $48; \
	JLE cols; \
	VEXTRACTI32X4 $3, Z4, X6; \
	GATHER16(X6); \
	LOG1PZ5(192); \
cols: \
	VMOVUPS k16B1(DI), Z4; \
	VPXORD Z5, Z5, Z5; \
	VPXORD Z8, Z8, Z8; \
	VPXORD Z9, Z9, Z9; \
	XORL R9, R9; \
	TESTQ AX, AX; \
	JZ sum; \
loop: \
	COLUMNC(Z6, Z4, 0); \
	JZ sum; \
	COLUMNC(Z7, Z5, 4); \
	JZ sum; \
	COLUMNC(Z10, Z8, 8); \
	JZ sum; \
	COLUMNC(Z11, Z9, 12); \
	LEAQ 16(R9), R9; \
	JNZ loop; \
sum: \
	VADDPS Z5, Z4, Z4; \
	VADDPS Z9, Z8, Z8; \
	VADDPS Z8, Z4, Z4

// OUTPUT16 sets X4 = b + w . relu(Z4) for the 16-float vectors w at wOff(DI), b at bOff(DI)
// (b's value in lane 0, zeros elsewhere).
#define OUTPUT16(wOff, bOff) \
	VPXORD Z6, Z6, Z6; \
	VMAXPS Z6, Z4, Z4; \
	VMOVUPS bOff(DI), Z7; \
	VFMADD132PS wOff(DI), Z7, Z4; \
	VEXTRACTF64X4 $1, Z4, Y5; \
	VADDPS Y5, Y4, Y4; \
	VEXTRACTF128 $1, Y4, X5; \
	VADDPS X5, X4, X4; \
	VPERMILPS $0x4e, X4, X5; \
	VADDPS X5, X4, X4; \
	VPERMILPS $0xb1, X4, X5; \
	VADDPS X5, X4, X4

// SIGMOID_X4_X0 sets X0 = 1/(1+2^X4) (see prob16AVX512).
#define SIGMOID_X4_X0 \
	VREDUCESS $8, X4, X4, X1; \
	VSUBSS X1, X4, X2; \
	VMOVSS kExp2+4(DI), X5; \
	VFMADD213SS kExp2+0(DI), X1, X5; \
	VMOVSS kExp2+12(DI), X6; \
	VFMADD213SS kExp2+8(DI), X1, X6; \
	VMOVSS kExp2+20(DI), X7; \
	VFMADD213SS kExp2+16(DI), X1, X7; \
	VMULSS X1, X1, X3; \
	VMULSS X3, X3, X8; \
	VFMADD231SS X6, X3, X5; \
	VFMADD231SS X7, X8, X5; \
	VSCALEFSS X2, X5, X5; \
	MOVL $0x3f800000, AX; \
	VMOVD AX, X9; \
	VADDSS X9, X5, X5; \
	VDIVSS X5, X9, X0

// func logit16AVX512(in *[64]uint32, k *kernel16) float32
// Requires AVX-512F, AVX-512DQ, AVX-512BW (KUNPCKWD/DQ, KMOVQ) and BMI1.
TEXT ·logit16AVX512(SB), NOSPLIT, $320-20
	MOVQ in+0(FP), SI
	MOVQ k+8(FP), DI
	// R8: 256 bytes of scratch for the 64 log1p values, on a cache line boundary so that
	// each 16-lane store is one line and store-to-load forwarding works.
	LEAQ 63(SP), R8
	ANDQ $~63, R8
	HIDDEN16
	OUTPUT16(k16W2, k16B2)
	VMOVSS X4, ret+16(FP)
	VZEROUPPER
	RET

// func prob16AVX512(in *[64]uint32, k *kernel16) float32
// The network with the output layer times -log2(e) gives t = -log2(e)*logit, and
// sigmoid(logit) = 1/(1+2^t): f = t - round(t) (VREDUCESS), 2^f by a degree-5 polynomial on
// [-1/2, 1/2] in Estrin's scheme, times 2^round(t) (VSCALEFSS). No clamp: a huge t gives
// 2^t = +Inf or 0, so 0 or 1, as it should.
TEXT ·prob16AVX512(SB), NOSPLIT, $320-20
	MOVQ in+0(FP), SI
	MOVQ k+8(FP), DI
	LEAQ 63(SP), R8
	ANDQ $~63, R8
	HIDDEN16
	OUTPUT16(k16W2e, k16B2e)
	SIGMOID_X4_X0
	VMOVSS X0, ret+16(FP)
	VZEROUPPER
	RET

// func logit16VBMI2(in *[64]uint32, k *kernel16) float32
// Requires AVX-512F, AVX-512DQ, AVX-512BW, AVX512_VBMI2, BMI1 and POPCNT.
TEXT ·logit16VBMI2(SB), NOSPLIT, $320-20
	MOVQ in+0(FP), SI
	MOVQ k+8(FP), DI
	LEAQ 63(SP), R8
	ANDQ $~63, R8
	HIDDEN16C
	OUTPUT16(k16W2, k16B2)
	VMOVSS X4, ret+16(FP)
	VZEROUPPER
	RET

// func prob16VBMI2(in *[64]uint32, k *kernel16) float32
TEXT ·prob16VBMI2(SB), NOSPLIT, $320-20
	MOVQ in+0(FP), SI
	MOVQ k+8(FP), DI
	LEAQ 63(SP), R8
	ANDQ $~63, R8
	HIDDEN16C
	OUTPUT16(k16W2e, k16B2e)
	SIGMOID_X4_X0
	VMOVSS X0, ret+16(FP)
	VZEROUPPER
	RET
