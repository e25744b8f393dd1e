package model

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"math/rand/v2"

	"github.com/mlsched/mlsched/features"
)

// KernelForm is a Model in the integer form that BPF evaluates (bpf/net.h), with no floating
// point. Its byte image (MarshalBinary) is struct mls_net of bpf/abi.h; NetRecord names every
// field's offset and size, and bpf/abi_test.go checks them against every object's BTF.
//
// The arithmetic, for the counts v_b of a task (Q16; zero counts contribute nothing) and its
// extras x_j (features.SetExtras, already integers on the float net's scale * 2^13):
//
//	lane_k = sum over the buckets b of C[b][KernelLevel(v_b)][k]            (each sum < 2^31)
//	acc_k  = B1[k] + lane_k << CShift + sum_j W1[j][k] * (x_j << XShift[j])  (s64)
//	h_k    = max(acc_k, 0) >> Shift                                       (< 2^31)
//	logit  = sum_k W2[k] * h_k                                            (s64)
//	keep local iff logit >= Bound
//
// The normalisation is folded into the first layer as in Predictor: with w_kj = W1[k][j]/Std_j
// (float), unit k's pre-activation is b_k + sum_j w_kj*input_j, with b_k = the model's B1[k] -
// sum_j w_kj*Mean_j. Unit k has a scale s_k from its largest |w_kj|, which it puts at 32767 *
// 2^15 (lowered so that |B1[k]| <= 2^52 where the bias is that large); B1[k] = round(b_k * s_k
// * 2^13).
//
// A count enters through its level, the nearest of 32 knots per octave (KernelLevel), and C
// holds every bucket's term at every level for every unit, already multiplied: C[b][i][k] =
// round(w_kb * log1p(knot_i) * s_k * 2^13 / 2^CShift), with CShift the least shift that keeps,
// in every unit, the sum over the buckets of each bucket's largest |C| within an s32 (one for
// all units: the scales s_k already put every unit's largest weight alike): so BPF adds two
// units' terms as one u64 (struct mls_net) and multiplies nothing per bucket. Each extra j has
// a shift XShift[j] in 0..15, the least that keeps round(w_kj * s_k / 2^XShift[j]) = W1[j][k]
// within s16 for every unit. The second layer folds 2^Shift/(s_k * 2^13) into W2 with one
// output scale OutScale, so that Logit ~ (float logit - B2) * OutScale, and Bound =
// ceil((log(p/(1-p)) - B2) * OutScale) for the model's threshold p: no sigmoid, and b2 lives in
// the bound.
//
// No overflow by construction: |lane_k| < 2^31 and CShift <= KernelMaxCShift, so |lane_k <<
// CShift| < 2^52; |W1[j][k] * (x_j << XShift[j])| <= 32767 * 15360 * 2^15 < 2^44, so |acc_k| <
// 2^52 + 2^52 + 4 * 2^44 < 2^54; Shift makes every reachable h_k < 2^31; |W2| <= 2^26, so
// |logit| < 16 * 2^31 * 2^26 = 2^61; Bound is clamped to +-2^62, beyond any reachable logit,
// so the clamp changes no decision.
//
// The input error is the level's, at most KernelLevelMaxErr in log1p units (measured by
// TestKernelLevelError); a term's rounding is half a unit of C, at most 2^-31 of the largest
// unit's sum of its largest terms; the shift and W2 lose less than 2^-26 of the largest term.
//
// NewKernelForm fills the fields; change them only to test. Logit and KeepLocal are the Go
// reference of the BPF code, bit for bit (bpf/net_test.go), and allocate nothing.
type KernelForm struct {
	// Generation names this net in the record: a reader that sees it change knows the net
	// was swapped. NewKernelForm leaves it 0; the writer sets it (one more per swap).
	Generation uint64
	Hidden     int // the model's hidden units, 1..KernelMaxHidden; the rest are all zero

	// Bound is the decision: keep local iff Logit >= Bound. Lower and Upper are the
	// abstention band (Lower <= logit < Upper: no opinion), the model's AbstainMargin around
	// its threshold; without one both are Bound.
	Bound, Lower, Upper int64
	Shift               uint32 // right shift of the ReLU outputs, < 64

	B1     [KernelMaxHidden]int64                     // per unit, at scale s_k * 2^13
	W2     [KernelMaxHidden]int32                     // per unit: W2_k * 2^Shift/(s_k*2^13) * OutScale
	CShift uint32                                     // every unit's lane of the counts' sum is shifted left by this
	XShift [features.NumExtras]uint8                  // per extra: x_j is shifted left by XShift[j]
	W1     [features.NumExtras][KernelMaxHidden]int16 // the extras' rows: W1[j][k] weighs extra j into unit k
	// C is the counts' terms: C[b][i][k] is bucket b's at level i in unit k (see above).
	C [features.NumBuckets][KernelLevels][KernelMaxHidden]int32

	// OutScale converts Logit back to the float logit: logit ~ B2 + Logit/OutScale.
	OutScale float64
	B2       float64

	// Check is how the form agreed with the float net on NewKernelForm's inputs.
	Check KernelCheck
}

// KernelCheck is the agreement of a KernelForm with the float net on a set of inputs.
type KernelCheck struct {
	Inputs, Agree int
	// MaxLogitErr is the largest |FloatLogit - the float64 reference logit|; MaxRelLogitErr
	// the largest such error over max(1, |reference|). A rare syscall's input can carry
	// weights in the thousands (its Std is tiny): its logits, and their errors, are large
	// and far from any threshold.
	MaxLogitErr, MaxRelLogitErr float64
}

// Rate is the fraction of inputs on which both decided alike.
func (c KernelCheck) Rate() float64 { return float64(c.Agree) / float64(max(c.Inputs, 1)) }

// Limits of the kernel form (struct mls_net, bpf/abi.h: MLS_NET_*).
const (
	KernelFormVersion = 4  // MLS_NET_VERSION: the record's layout (2: schema v2's extras; 3: W1 stored offset by 2^15; 4: the counts' terms tabulated, C)
	KernelMaxHidden   = 16 // MLS_NET_HIDDEN
	// KernelInputShift: the extras' inputs are on the float net's scale * 2^13, and so is
	// every term of a unit's sum (times s_k).
	KernelInputShift = 13
	// KernelLevelMant is how many bits below a count's leading bit pick its level
	// (MLS_NET_MANT in bpf/net.h): 32 knots per octave.
	KernelLevelMant = 5
	// KernelLevels is MLS_NET_LEVELS: MaxCount's level is the last.
	KernelLevels = 577
	// KernelMinAgreement: NewKernelForm refuses a form whose decisions agree with the float
	// net's (Predictor.KeepLocal) on fewer of its kernelCheckInputs inputs.
	KernelMinAgreement = 0.99
	// KernelLevelMaxErr bounds |log1p(knot)/2^16 - log1p(v/2^16)| over every count v <=
	// MaxCount and its level's knot: half a knot spacing, which is at most 1/32 of the count
	// (0 below 64 units, where every count is a knot).
	KernelLevelMaxErr = 1.0 / 64
	// KernelMaxCShift bounds CShift: a unit's counts' sum stays below 2^(31 + KernelMaxCShift).
	KernelMaxCShift = 21
)

const (
	kernelMaxW1       = math.MaxInt16
	kernelMaxXShift   = 15 // XShift[j] <= 15: a unit's largest weight sits at 32767 << 15
	kernelMaxB1       = 1 << 52
	kernelMaxLane     = math.MaxInt32 // every lane's sum, over every bucket's largest term
	kernelHiddenBits  = 31            // every reachable h_k < 2^31
	kernelMaxW2       = 1 << 26
	kernelMaxBound    = 1 << 62
	kernelCheckInputs = 4096
)

// ErrKernelForm is wrapped by NewKernelForm's refusals (with errors.Is); the message names the
// limit. A model that fails Validate is refused with Validate's error.
var ErrKernelForm = errors.New("model does not fit the BPF kernel form")

// KernelLevel is count v's level, the index of the knot nearest to min(v, MaxCount)
// (mls_net_level in bpf/net.h): with s the bit length of v >> (KernelLevelMant+1), (s <<
// KernelLevelMant) + (v >> s), plus one when the bit below v >> s is set. Below 2^(KernelLevelMant+1)
// units every count is a knot (s = 0, level v); above, the knots of segment s >= 1 are
// top << s for top in [32, 64), and a count rounds to the nearest (64 << s is the next
// segment's first).
func KernelLevel(v uint32) int {
	v = min(v, features.MaxCount)
	s := uint(bits.Len32(v >> (KernelLevelMant + 1)))
	return int(s<<KernelLevelMant + uint(v>>s) + uint((v<<1)>>s)&1)
}

// kernelKnot is the count level i stands for (see KernelLevel).
func kernelKnot(i int) uint32 {
	if i < 2<<KernelLevelMant {
		return uint32(i)
	}
	s := i>>KernelLevelMant - 1
	top := i&(1<<KernelLevelMant-1) + 1<<KernelLevelMant
	return uint32(top) << s
}

// kernelLog1p is log1p of every level's knot, in count units (Log1pCount).
var kernelLog1p = func() (t [KernelLevels]float64) {
	for i := range t {
		t[i] = Log1pCount(kernelKnot(i))
	}
	return t
}()

// NewKernelForm turns a valid model into its kernel form, or refuses it with an error that
// names the limit: Hidden > KernelMaxHidden, a folded parameter that is not finite, or
// decisions that agree with the float net's on fewer than KernelMinAgreement of a fixed,
// deterministic set of realistic inputs (kernelCheckInputs of them; Check reports the figures).
func NewKernelForm(m *Model) (*KernelForm, error) {
	kf, err := newKernelForm(m)
	if err != nil {
		return nil, err
	}
	rng := rand.New(rand.NewPCG(0x6d6c73636865640a, 12))
	kf.Check = kf.agreement(m, kernelCheckInputs, func(in *[NumInputs]uint32) { KernelCheckInput(rng, in) })
	if r := kf.Check.Rate(); r < KernelMinAgreement {
		return nil, fmt.Errorf("integer decisions agree with the float net's on %.2f%% of %d inputs, need %.0f%% (largest relative logit error %.3g): %w",
			100*r, kf.Check.Inputs, 100*KernelMinAgreement, kf.Check.MaxRelLogitErr, ErrKernelForm)
	}
	return kf, nil
}

// newKernelForm is NewKernelForm without the agreement check.
func newKernelForm(m *Model) (*KernelForm, error) {
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("kernel form: %w", err)
	}
	if m.Hidden > KernelMaxHidden {
		return nil, fmt.Errorf("hidden %d > %d, the most struct mls_net holds: %w", m.Hidden, KernelMaxHidden, ErrKernelForm)
	}
	kf := &KernelForm{Hidden: m.Hidden, B2: float64(m.B2)}
	var scale [KernelMaxHidden]float64 // s_k
	var folded [KernelMaxHidden][NumInputs]float64
	for k := range m.Hidden {
		w, b, maxw := m.foldedUnit(k)
		if !finite(b) || !finite(maxw) {
			return nil, fmt.Errorf("hidden unit %d: folded bias %v, largest folded weight %v, not finite: %w", k, b, maxw, ErrKernelForm)
		}
		// The unit's largest weight at 32767 << kernelMaxXShift, unless the bias would
		// pass 2^52 (then the bias at 2^52); a unit with neither has any scale.
		s := math.Inf(1)
		if maxw > 0 {
			s = kernelMaxW1 * (1 << kernelMaxXShift) / maxw
		}
		s = min(s, kernelMaxB1/(math.Abs(b)*(1<<KernelInputShift)))
		if math.IsInf(s, 0) {
			s = 1
		}
		scale[k] = s
		folded[k] = w
		kf.B1[k] = int64(clampRound(b*s*(1<<KernelInputShift), kernelMaxB1))
	}
	// Each extra's shift: the least that keeps its weights within s16 in every unit.
	for e := range features.NumExtras {
		j := features.NumBuckets + e
		col := 0.0
		for k := range m.Hidden {
			col = max(col, math.Abs(folded[k][j])*scale[k]/kernelMaxW1)
		}
		sh := 0
		if col > 1 {
			sh = min(int(math.Ceil(math.Log2(col))), kernelMaxXShift)
		}
		kf.XShift[e] = uint8(sh)
		for k := range m.Hidden {
			kf.W1[e][k] = int16(clampRound(math.Ldexp(folded[k][j]*scale[k], -sh), kernelMaxW1))
		}
	}
	// The counts' terms: one shift for all units, the largest of each unit's least that keeps
	// its lane within an s32 (a larger shift never makes a rounded term larger); then
	// the table in one pass, in memory order. A term grows with the level (log1p does, from 0
	// at level 0), so lanePos[k], the largest sum of positive terms a task can reach (for Shift
	// below), is the sum of the last level's positive terms.
	for k := range m.Hidden {
		sh := countShift(folded[k][:features.NumBuckets], scale[k]*(1<<KernelInputShift))
		if sh < 0 {
			return nil, fmt.Errorf("hidden unit %d: its counts' terms need a shift past %d: %w", k, KernelMaxCShift, ErrKernelForm)
		}
		kf.CShift = max(kf.CShift, uint32(sh))
	}
	var f [KernelMaxHidden]float64
	for k := range m.Hidden {
		f[k] = math.Ldexp(scale[k]*(1<<KernelInputShift), -int(kf.CShift))
	}
	var lanePos [KernelMaxHidden]int64
	for b := range features.NumBuckets {
		for i := range KernelLevels {
			row := &kf.C[b][i]
			for k := range m.Hidden {
				row[k] = int32(math.Round(folded[k][b] * f[k] * kernelLog1p[i]))
			}
		}
		for k := range m.Hidden {
			lanePos[k] += int64(max(kf.C[b][KernelLevels-1][k], 0))
		}
	}
	// The largest reachable acc_k sets the shift. A unit that can never be positive adds
	// nothing: it gets no second-layer weight (else a dead unit's scale could set OutScale).
	var hmax int64
	var c [KernelMaxHidden]float64 // float logit per unit of h_k
	live := [KernelMaxHidden]bool{}
	for k := range m.Hidden {
		pos := kf.B1[k] + lanePos[k]<<kf.CShift
		for e := range features.NumExtras {
			pos += int64(max(kf.W1[e][k], 0)) * features.MaxExtraInput << kf.XShift[e]
		}
		hmax = max(hmax, pos)
		live[k] = pos > 0
	}
	kf.Shift = uint32(max(bits.Len64(uint64(hmax))-kernelHiddenBits, 0))
	cmax := 0.0
	for k := range m.Hidden {
		if live[k] {
			c[k] = float64(m.W2[k]) * math.Ldexp(1, int(kf.Shift)) / (scale[k] * (1 << KernelInputShift))
			cmax = max(cmax, math.Abs(c[k]))
		}
	}
	kf.OutScale = 1
	if cmax > 0 {
		kf.OutScale = kernelMaxW2 / cmax
	}
	for k := range m.Hidden {
		kf.W2[k] = int32(clampRound(c[k]*kf.OutScale, kernelMaxW2))
	}
	p := float64(m.Threshold)
	t := math.Log(p / (1 - p))
	clamp := func(x float64) int64 { return int64(max(min(x, kernelMaxBound), -kernelMaxBound)) }
	at := func(logit float64) int64 { return clamp(math.Ceil((logit - kf.B2) * kf.OutScale)) }
	if !finite(kf.OutScale) || math.IsNaN((t-kf.B2)*kf.OutScale) {
		return nil, fmt.Errorf("output scale %v, threshold logit %v, not finite: %w", kf.OutScale, t, ErrKernelForm)
	}
	kf.Bound = at(t)
	kf.Lower, kf.Upper = kf.Bound, kf.Bound
	if mg := float64(m.AbstainMargin); mg > 0 {
		// |logit - t| < margin, on the integer logit: Lower <= Logit < Upper.
		kf.Lower, kf.Upper = clamp(math.Floor((t-mg-kf.B2)*kf.OutScale)+1), at(t+mg)
		if kf.Lower > kf.Bound {
			kf.Lower = kf.Bound
		}
		if kf.Upper < kf.Bound {
			kf.Upper = kf.Bound
		}
	}
	return kf, nil
}

// foldedUnit is hidden unit k with the standardisation folded in, in float64: its weights
// W1[k][j]/Std[j], its bias B1[k] - sum_j W1[k][j]*Mean[j]/Std[j] and its largest |weight|.
func (m *Model) foldedUnit(k int) (w [NumInputs]float64, b, maxw float64) {
	b = float64(m.B1[k])
	for j := range w {
		w[j] = float64(m.W1[k*m.Inputs+j]) / float64(m.Std[j])
		b -= w[j] * float64(m.Mean[j])
		maxw = max(maxw, math.Abs(w[j]))
	}
	return w, b, maxw
}

// countShift is the least shift that keeps a unit's lane within an s32 for its folded count
// weights w at acc scale sc (s_k * 2^13): the sum over the buckets of each bucket's largest
// |term|, at the last level, rounded as the table will be. -1: none up to KernelMaxCShift.
func countShift(w []float64, sc float64) int {
	for sh := 0; sh <= KernelMaxCShift; sh++ {
		f := math.Ldexp(sc, -sh)
		var sum float64
		for _, wb := range w {
			sum += math.Abs(math.Round(wb * f * kernelLog1p[KernelLevels-1]))
		}
		if sum <= kernelMaxLane {
			return sh
		}
	}
	return -1
}

func finite(x float64) bool { return !math.IsNaN(x) && !math.IsInf(x, 0) }

// clampRound rounds x to an integer within +-lim.
func clampRound(x, lim float64) float64 { return max(min(math.Round(x), lim), -lim) }

// agreement compares KeepLocal with the float net's Predictor.KeepLocal on n inputs from gen,
// and the logit with the float64 reference.
func (kf *KernelForm) agreement(m *Model, n int, gen func(*[NumInputs]uint32)) KernelCheck {
	p := NewPredictor(m)
	x := make([]float64, m.Inputs)
	var in [NumInputs]uint32
	c := KernelCheck{Inputs: n}
	for range n {
		gen(&in)
		if kf.KeepLocal(&in) == p.KeepLocal(&in) {
			c.Agree++
		}
		m.Normalize(&in, x)
		ref := m.forwardLogit(x)
		e := math.Abs(kf.FloatLogit(&in) - ref)
		c.MaxLogitErr = max(c.MaxLogitErr, e)
		c.MaxRelLogitErr = max(c.MaxRelLogitErr, e/max(1, math.Abs(ref)))
	}
	return c
}

// KernelCheckInput fills in with counts like a real task's: 5 to 15 nonzero buckets. Three in
// four are a live task's steady mix (a skewed share each of a total that has built up over
// 1 to 4096 syscalls towards 64.0, some buckets aged by later syscalls of others); the rest are
// spread log-uniformly over [1, MaxCount] units, for the corners. The scheduling state is
// KernelCheckState's.
func KernelCheckInput(rng *rand.Rand, in *[NumInputs]uint32) {
	st := KernelCheckState(rng)
	features.SetExtras(in, &st)
	kernelCheckCounts(rng, features.Counts(in))
}

// KernelCheckState is a scheduling state like a real task's: times log-uniform over 1 µs to
// 1 s (0 one time in eight), a voluntary average uniform (0, 1 or unknown one time in eight each).
func KernelCheckState(rng *rand.Rand) features.SchedState {
	t := func() uint64 {
		if rng.IntN(8) == 0 {
			return 0
		}
		return uint64(math.Exp(math.Log(1e3) + rng.Float64()*math.Log(1e6)))
	}
	st := features.SchedState{OnCPUNs: t(), StintNs: t(), GapNs: t(), Vol: rng.Uint32N(features.VolOne + 1)}
	switch rng.IntN(8) {
	case 0:
		st.Vol = 0
	case 1:
		st.Vol = features.VolOne
	case 2:
		st.Vol = features.VolUnknown
	}
	return st
}

func kernelCheckCounts(rng *rand.Rand, in *[features.NumBuckets]uint32) {
	*in = [features.NumBuckets]uint32{}
	var perm [features.NumBuckets]uint8
	for i := range perm {
		perm[i] = uint8(i)
	}
	n := 5 + rng.IntN(11)
	for i := range n { // the first n of a random permutation
		j := i + rng.IntN(features.NumBuckets-i)
		perm[i], perm[j] = perm[j], perm[i]
	}
	if rng.IntN(4) == 0 {
		for _, b := range perm[:n] {
			in[b] = max(uint32(math.Exp(rng.Float64()*math.Log(features.MaxCount))), 1)
		}
		return
	}
	var share [features.NumBuckets]float64
	sum := 0.0
	for i := range n {
		share[i] = math.Pow(rng.ExpFloat64(), 2)
		sum += share[i]
	}
	calls := math.Exp(rng.Float64() * math.Log(4096))
	total := float64(features.MaxCount) * (1 - math.Pow(float64(features.DecayNum)/features.DecayDen, calls))
	for i, b := range perm[:n] {
		v := total * share[i] / sum
		if rng.IntN(3) == 0 { // aged: last used a while ago
			v *= math.Pow(float64(features.DecayNum)/features.DecayDen, rng.Float64()*600)
		}
		in[b] = max(uint32(v), 1)
	}
}

// Logit is the integer logit BPF computes for the input vector feats (the counts, a snapshot:
// zero counts contribute nothing; then the extras): about (float logit - b2) * OutScale. BPF
// sums the same terms in another order (mls_net_counts, two units per addition, then
// mls_net_finish): every sum is exact, so the result is the same.
func (kf *KernelForm) Logit(feats *[NumInputs]uint32) int64 {
	var lane [KernelMaxHidden]int64
	for nz := nonzeroMask(features.Counts(feats)); nz != 0; nz &= nz - 1 {
		b := bits.TrailingZeros64(nz) % features.NumBuckets
		row := &kf.C[b][KernelLevel(feats[b])%KernelLevels]
		for k, c := range row {
			lane[k] += int64(c)
		}
	}
	acc := kf.B1
	for k := range acc {
		acc[k] += lane[k] << (kf.CShift & 63)
	}
	for e := range features.NumExtras {
		x := int64(min(feats[features.NumBuckets+e], features.MaxExtraInput)) << (kf.XShift[e] & 31)
		for k, w := range &kf.W1[e] {
			acc[k] += int64(w) * x
		}
	}
	sh := kf.Shift & 63
	var out int64
	for k, a := range acc {
		out += int64(kf.W2[k]) * ((a &^ (a >> 63)) >> sh)
	}
	return out
}

// KeepLocal is the kernel form's decision: Logit(feats) >= Bound.
func (kf *KernelForm) KeepLocal(feats *[NumInputs]uint32) bool {
	return kf.Logit(feats) >= kf.Bound
}

// Abstains is the kernel form's abstention: Lower <= Logit(feats) < Upper.
func (kf *KernelForm) Abstains(feats *[NumInputs]uint32) bool {
	l := kf.Logit(feats)
	return l >= kf.Lower && l < kf.Upper
}

// Decide is the kernel form's whole answer from one evaluation: keep, or no opinion (abstain;
// keep is then the answer without the band).
func (kf *KernelForm) Decide(feats *[NumInputs]uint32) (keep, abstain bool) {
	l := kf.Logit(feats)
	return l >= kf.Bound, l >= kf.Lower && l < kf.Upper
}

// FloatLogit is Logit back on the float net's scale: B2 + Logit/OutScale.
func (kf *KernelForm) FloatLogit(feats *[NumInputs]uint32) float64 {
	return kf.B2 + float64(kf.Logit(feats))/kf.OutScale
}

// Byte offsets of struct mls_net (bpf/abi.h), little-endian.
const (
	netOffVersion    = 0
	netOffHidden     = 4
	netOffGeneration = 8
	netOffBound      = 16
	netOffLower      = 24
	netOffUpper      = 32
	netOffShift      = 40
	netOffB1         = 48
	netOffW2         = netOffB1 + 8*KernelMaxHidden
	netOffCShift     = netOffW2 + 4*KernelMaxHidden
	netOffXShift     = netOffCShift + 4
	netOffW1         = netOffXShift + features.NumExtras
	netOffC          = netOffW1 + 2*features.NumExtras*KernelMaxHidden
	// NetSize is sizeof(struct mls_net).
	NetSize = netOffC + 8*features.NumBuckets*KernelLevels*KernelMaxHidden/2
)

// NetRecord is struct mls_net as MarshalBinary lays it out.
var NetRecord = features.Record{Name: "mls_net", Size: NetSize, Fields: []features.Field{
	{Name: "version", Offset: netOffVersion, Size: 4}, {Name: "hidden", Offset: netOffHidden, Size: 4},
	{Name: "generation", Offset: netOffGeneration, Size: 8},
	{Name: "bound", Offset: netOffBound, Size: 8}, {Name: "lower", Offset: netOffLower, Size: 8},
	{Name: "upper", Offset: netOffUpper, Size: 8},
	{Name: "shift", Offset: netOffShift, Size: 4}, {Name: "_pad", Offset: netOffShift + 4, Size: 4},
	{Name: "b1", Offset: netOffB1, Size: 8 * KernelMaxHidden}, {Name: "w2", Offset: netOffW2, Size: 4 * KernelMaxHidden},
	{Name: "c_shift", Offset: netOffCShift, Size: 4},
	{Name: "x_shift", Offset: netOffXShift, Size: features.NumExtras},
	{Name: "w1", Offset: netOffW1, Size: 2 * features.NumExtras * KernelMaxHidden},
	{Name: "c", Offset: netOffC, Size: NetSize - netOffC},
}}

// MarshalBinary returns the struct mls_net image of kf (NetSize bytes, little-endian), as BPF
// reads it from a map value: C's units in pairs, unit 2p in the low lane of a u64 whose value
// is C[2p+1] * 2^32 + C[2p] (a negative low lane borrows from the high one; BPF undoes it).
func (kf *KernelForm) MarshalBinary() ([]byte, error) {
	b := make([]byte, NetSize)
	le := binary.LittleEndian
	le.PutUint32(b[netOffVersion:], KernelFormVersion)
	le.PutUint32(b[netOffHidden:], uint32(kf.Hidden))
	le.PutUint64(b[netOffGeneration:], kf.Generation)
	le.PutUint64(b[netOffBound:], uint64(kf.Bound))
	le.PutUint64(b[netOffLower:], uint64(kf.Lower))
	le.PutUint64(b[netOffUpper:], uint64(kf.Upper))
	le.PutUint32(b[netOffShift:], kf.Shift)
	for k := range KernelMaxHidden {
		le.PutUint64(b[netOffB1+8*k:], uint64(kf.B1[k]))
		le.PutUint32(b[netOffW2+4*k:], uint32(kf.W2[k]))
	}
	le.PutUint32(b[netOffCShift:], kf.CShift)
	copy(b[netOffXShift:], kf.XShift[:])
	for e, row := range kf.W1 {
		for k, w := range row {
			le.PutUint16(b[netOffW1+2*(e*KernelMaxHidden+k):], uint16(w)^0x8000) // w + 2^15
		}
	}
	off := netOffC
	for bk := range kf.C {
		for i := range kf.C[bk] {
			row := &kf.C[bk][i]
			for p := 0; p < KernelMaxHidden; p += 2 {
				le.PutUint64(b[off:], uint64(int64(row[p+1])<<32+int64(row[p])))
				off += 8
			}
		}
	}
	return b, nil
}
