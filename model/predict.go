package model

import (
	"math"
	"math/bits"

	"github.com/mlsched/mlsched/features"
)

// Predictor is a Model prepared for fast, allocation-free inference.
//
// NewPredictor folds the input standardisation into the first layer,
//
//	W1[k][j] * (log1p(v_j) - mean_j) / std_j  =  (W1[k][j]/std_j) * log1p(v_j)  -  W1[k][j]*mean_j/std_j
//
// so that a zero count (log1p(0) = 0) contributes nothing and only the nonzero counts of a task
// (typically 5-15 of 64) cost work, and KeepLocal compares the logit with logit(Threshold)
// so that deciding needs no exp.
//
// A Predictor holds scratch space: use it from one goroutine at a time (one per dispatch
// loop). It is immutable otherwise; build another for another model.
type Predictor struct {
	hidden int
	// Folded first layer, input-major: w1t[j*hidden+k] = W1[k][j] / Std[j].
	w1t []float32
	// b1[k] = B1[k] - sum_j W1[k][j]*Mean[j]/Std[j].
	b1             []float32
	w2             []float32
	b2             float32
	logitThreshold float32
	margin         float32   // the abstention band: |logit - logitThreshold| < margin
	h              []float32 // scratch for the generic path
	k16            *kernel16 // the Hidden == 16 fast path, 64-byte aligned
}

// kernel16 is the parameter block of the Hidden == 16 kernels. The assembly reads it by the
// offsets named k16* in kernel_amd64.s; TestKernel16Layout checks that they agree.
type kernel16 struct {
	w1t [features.NumBuckets][16]float32 // 0: folded first layer, one column per input
	b1  [16]float32                      // 4096
	w2  [16]float32                      // 4160
	b2  [16]float32                      // 4224: b2 in lane 0, zeros (added to w2*relu(h) by one FMA)
	// The same output layer times -log2(e): the probability kernel computes
	// t = -log2(e) * logit directly and returns 1/(1+2^t).
	w2e [16]float32 // 4288
	b2e [16]float32 // 4352
	// log1p tables on the top five mantissa bits i of 1+v: inv[i] ~ 1/(1+i/32) and
	// lnc[i] = -log(inv[i]) exactly, so that log(m) = lnc[i] + log1p(m*inv[i] - 1).
	lnc  [32]float32  // 4416
	inv  [32]float32  // 4544
	c    kernelConsts // 4672
	_    [8]byte
	iota [64]uint8 // 4736: 0..63, which the VBMI2 kernels compress to the nonzero buckets' numbers
}

// kernelConsts are the kernels' scalar constants, broadcast from memory.
type kernelConsts struct {
	maxCount, fixedOne uint32  // features.MaxCount, features.FixedOne
	sixteen, ln2       float32 // log2(FixedOne), ln 2
	negOne             float32
	q                  [2]float32 // log1p(r) ~ r + r^2*(q0 + q1*r) for r in [0, 1/32]
	exp2               [6]float32 // 2^f for f in [-1/2, 1/2], Estrin's scheme
	thirtyTwo          uint32
}

// Offsets of kernel16's fields, for the test that checks the assembly's view of the layout.
const (
	k16B1, k16W2, k16B2, k16W2e, k16B2e, k16Lnc, k16Inv, k16C, k16Iota = 4096, 4160, 4224, 4288, 4352, 4416, 4544, 4672, 4736
)

// NewPredictor prepares m, which must be valid (see Validate), for inference.
func NewPredictor(m *Model) *Predictor {
	n, h := m.Inputs, m.Hidden
	p := &Predictor{
		hidden:         h,
		w1t:            make([]float32, n*h),
		b1:             make([]float32, h),
		w2:             append([]float32(nil), m.W2...),
		b2:             m.B2,
		logitThreshold: float32(math.Log(float64(m.Threshold) / (1 - float64(m.Threshold)))),
		margin:         m.AbstainMargin,
		h:              make([]float32, h),
	}
	for k := range h {
		b := float64(m.B1[k])
		for j := range n {
			w := float64(m.W1[k*n+j]) / float64(m.Std[j])
			p.w1t[j*h+k] = float32(w)
			b -= w * float64(m.Mean[j])
		}
		p.b1[k] = float32(b)
	}
	if h == 16 {
		p.k16 = newKernel16()
		for j := range features.NumBuckets {
			copy(p.k16.w1t[j][:], p.w1t[j*16:])
		}
		copy(p.k16.b1[:], p.b1)
		copy(p.k16.w2[:], p.w2)
		p.k16.b2[0] = p.b2
		for k, w := range p.w2 {
			p.k16.w2e[k] = float32(-math.Log2E * float64(w))
		}
		p.k16.b2e[0] = float32(-math.Log2E * float64(p.b2))
		p.k16.initConsts()
	}
	return p
}

// Logit returns the model's logit for the input vector in (R's counts, then its extras;
// features.Sample's Feats): log(p / (1-p)).
func (p *Predictor) Logit(in *[NumInputs]uint32) float32 {
	if p.k16 != nil {
		c := p.prep16(in)
		if useVBMI2 {
			return logit16VBMI2(c, p.k16)
		}
		if useAVX512 {
			return logit16AVX512(c, p.k16)
		}
		return p.k16.logitGo(c)
	}
	return p.logitGeneric(in)
}

// prep16 puts the extras' terms into the Hidden == 16 kernels' first-layer bias (the kernels
// read only the counts) and returns the counts.
func (p *Predictor) prep16(in *[NumInputs]uint32) *[features.NumBuckets]uint32 {
	b := (*[16]float32)(p.b1)
	for k := range b {
		p.k16.b1[k] = b[k]
	}
	for e := features.NumBuckets; e < NumInputs; e++ {
		x := extraFloat(in[e])
		col := (*[16]float32)(p.w1t[e*16 : e*16+16])
		for k := range col {
			p.k16.b1[k] += col[k] * x
		}
	}
	return features.Counts(in)
}

func extraFloat(v uint32) float32 {
	return float32(min(v, features.MaxExtraInput)) * (1.0 / features.ExtraInputScale)
}

// Predict returns the probability that the running task yields its CPU within the horizon.
func (p *Predictor) Predict(in *[NumInputs]uint32) float32 {
	if p.k16 != nil && useVBMI2 {
		return prob16VBMI2(p.prep16(in), p.k16)
	}
	if p.k16 != nil && useAVX512 {
		return prob16AVX512(p.prep16(in), p.k16)
	}
	return sigmoid32(p.Logit(in))
}

// KeepLocal reports whether Predict(in) >= Threshold, decided on the logit without exp.
// (Within float32 rounding of the threshold's logit, the two may disagree at the boundary.)
func (p *Predictor) KeepLocal(in *[NumInputs]uint32) bool {
	return p.Logit(in) >= p.logitThreshold
}

// Abstains reports whether in's logit lies within the model's abstention band around the
// threshold (no opinion: the base queue places the task).
func (p *Predictor) Abstains(in *[NumInputs]uint32) bool {
	if p.margin == 0 {
		return false
	}
	d := p.Logit(in) - p.logitThreshold
	return d < p.margin && -d < p.margin
}

// sigmoid32 is 1/(1+exp(-z)) in float32, within 4e-6 relative of the float64 value (about
// ten times faster than through math.Exp). exp(-z) = 2^t, t = -z*log2(e), split into an
// integer part (the float32 exponent) and a fraction f in [0, 1) (a polynomial).
func sigmoid32(z float32) float32 {
	z = min(max(z, -87), 87) // keeps 2^i a normal float32; sigmoid(+-87) is 1 or 1.6e-38
	t := -z * math.Log2E
	i := int32(t)
	if float32(i) > t {
		i-- // floor for negative t
	}
	f := t - float32(i)
	c := &exp2Poly
	p := c[0] + f*(c[1]+f*(c[2]+f*(c[3]+f*(c[4]+f*c[5]))))
	return 1 / (1 + p*math.Float32frombits(uint32(i+127)<<23))
}

// exp2Poly approximates 2^f on [0, 1) within 1.8e-7 relative (degree 5, Chebyshev nodes).
var exp2Poly = [6]float32{0.9999999, 0.6931545, 0.24014182, 0.055860337, 0.008949591, 0.001893754}

// logitGeneric is the portable path for any hidden width: sparse over nonzero inputs.
func (p *Predictor) logitGeneric(in *[NumInputs]uint32) float32 {
	hidden := p.hidden
	h := p.h[:hidden]
	copy(h, p.b1)
	for e := features.NumBuckets; e < NumInputs; e++ {
		x := extraFloat(in[e])
		for k, w := range p.w1t[e*hidden : e*hidden+hidden] {
			h[k] += w * x
		}
	}
	for nz := nonzeroMask(features.Counts(in)); nz != 0; nz &= nz - 1 {
		j := bits.TrailingZeros64(nz)
		x := log1pFixed(in[j])
		col := p.w1t[j*hidden : j*hidden+hidden]
		for k, w := range col {
			h[k] += w * x
		}
	}
	out := p.b2
	w2 := p.w2[:hidden]
	for k, x := range h {
		if x > 0 {
			out += w2[k] * x
		}
	}
	return out
}

// nonzeroMask has bit j set when in[j] != 0. It is branch-free: which of a task's buckets are
// nonzero is close to random, and a branch per bucket would mispredict often.
func nonzeroMask(in *[features.NumBuckets]uint32) uint64 {
	var m uint64
	for j, v := range in {
		m |= uint64((v|-v)>>31) << j
	}
	return m
}

// logitGo is the portable Hidden == 16 path: sparse over nonzero inputs. The nonzero counts'
// log1p values and columns are listed first; then two passes of 8 accumulators each, which the
// compiler keeps in registers (16 at once did not fit, and every column spilled them).
func (k *kernel16) logitGo(in *[features.NumBuckets]uint32) float32 {
	var xs [features.NumBuckets]float32
	var cols [features.NumBuckets]*[16]float32
	n := 0
	for nz := nonzeroMask(in); nz != 0; nz &= nz - 1 {
		j := bits.TrailingZeros64(nz) % features.NumBuckets
		xs[n%features.NumBuckets] = log1pFixed(in[j])
		cols[n%features.NumBuckets] = &k.w1t[j]
		n++
	}
	out := k.b2[0]
	for half := 0; half < 16; half += 8 {
		b := (*[8]float32)(k.b1[half : half+8])
		a0, a1, a2, a3, a4, a5, a6, a7 := b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]
		for i := range n {
			x := xs[i]
			c := (*[8]float32)(cols[i][half : half+8])
			a0 += c[0] * x
			a1 += c[1] * x
			a2 += c[2] * x
			a3 += c[3] * x
			a4 += c[4] * x
			a5 += c[5] * x
			a6 += c[6] * x
			a7 += c[7] * x
		}
		w := (*[8]float32)(k.w2[half : half+8])
		out += w[0]*max(a0, 0) + w[1]*max(a1, 0) + w[2]*max(a2, 0) + w[3]*max(a3, 0) +
			w[4]*max(a4, 0) + w[5]*max(a5, 0) + w[6]*max(a6, 0) + w[7]*max(a7, 0)
	}
	return out
}

// initConsts fills the tables and constants of the assembly kernels.
func (k *kernel16) initConsts() {
	for i := range k.inv {
		inv := float32(32 / float64(32+i))
		k.inv[i] = inv
		k.lnc[i] = float32(-math.Log(float64(inv)))
	}
	k.c = kernelConsts{
		maxCount:  features.MaxCount,
		fixedOne:  features.FixedOne,
		sixteen:   features.FixedShift,
		ln2:       math.Ln2,
		negOne:    -1,
		q:         log1pQ,
		exp2:      exp2Estrin,
		thirtyTwo: 32,
	}
	for i := range k.iota {
		k.iota[i] = uint8(i)
	}
}

// log1pQ: log1p(r) ~ r + r^2*(q0 + q1*r) on [0, 1/32], within 9.1e-7 relative (least squares
// at Chebyshev nodes).
var log1pQ = [2]float32{-0.4999704, 0.32569963}

// exp2Estrin approximates 2^f on [-1/2, 1/2] within 2.7e-7 relative (degree 5, least squares
// in relative error at Chebyshev nodes), evaluated as (c0+c1 f) + f^2 (c2+c3 f) + f^4 (c4+c5 f).
var exp2Estrin = [6]float32{1.0000001, 0.69314694, 0.24022122, 0.055507425, 0.00967546, 0.0013266971}

// log1p of a fixed-point count by table: the count's top tableMant+1 significant bits pick a
// segment, and linear interpolation inside it gives at most 3.1e-6 relative error (exact below
// 2^(tableMant+1) units, where the table has every value). See docs/MODEL_FORMAT.md.
const tableMant = 7

type log1pEntry struct{ base, slope float32 }

// Segments: shift s in 0..maxShift, top bits in [0, 2^(tableMant+1)).
const maxShift = 23 - (tableMant + 1) // bits.Len32(features.MaxCount) == 23

var log1pTab [(maxShift + 2) << tableMant]log1pEntry

func init() {
	for s := 0; s <= maxShift; s++ {
		for top := 0; top < 2<<tableMant; top++ {
			if s > 0 && top < 1<<tableMant {
				continue // those counts use a smaller shift
			}
			lo, hi := float64(top<<s), float64((top+1)<<s)
			base := math.Log1p(lo / features.FixedOne)
			log1pTab[s<<tableMant+top] = log1pEntry{
				base:  float32(base),
				slope: float32((math.Log1p(hi/features.FixedOne) - base) / float64(int(1)<<s)),
			}
		}
	}
}

// log1pFixed returns log1p(v / 2^FixedShift) for v clamped to features.MaxCount.
func log1pFixed(v uint32) float32 {
	v = min(v, features.MaxCount)
	s := uint(max(bits.Len32(v)-(tableMant+1), 0))
	e := &log1pTab[(s<<tableMant+uint(v>>s))%uint(len(log1pTab))]
	return e.base + float32(v&(1<<s-1))*e.slope
}
