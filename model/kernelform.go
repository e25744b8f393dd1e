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
// The arithmetic, for the counts v_j of a task (Q16; zero counts contribute nothing) and its
// extras v_j, j >= 64 (features.SetExtras, already integers on the float net's scale * 2^13):
//
//	x_j   = Table, interpolated: ~ log1p(min(v_j, MaxCount)/2^16) * 2^13   (<= 34197 < 2^16)
//	x_j   = v_j for an extra                                                (<= 15360)
//	acc_k = B1[k] + sum_j W1[j][k] * (x_j << XShift[j])                    (s64)
//	h_k   = max(acc_k, 0) >> Shift                                         (< 2^31)
//	logit = sum_k W2[k] * h_k                                              (s64)
//	keep local iff logit >= Bound
//
// The normalisation is folded into the first layer as in Predictor: with w_kj = W1[k][j]/Std_j
// (float), unit k's pre-activation is b_k + sum_j w_kj*log1p(v_j), with b_k = the model's
// B1[k] - sum_j w_kj*Mean_j. Unit k has a scale s_k from its largest |w_kj|, which it puts at 32767 * 2^15
// (lowered so that |B1[k]| <= 2^52 where the bias is that large), and each input j a shift
// XShift[j] in 0..15, the least that keeps round(w_kj * s_k / 2^XShift[j]) = W1[j][k] within
// s16 for every unit: every weight is resolved to 15 bits of its input's largest, not of its
// unit's largest (a rare syscall's tiny Std gives its input weights thousands of times the
// others', which a scale per unit alone would round the others away for). B1[k] = round(b_k *
// s_k * 2^13). The second layer folds 2^Shift/(s_k * 2^13) into W2 with one output scale
// OutScale, so that Logit ~ (float logit - B2) * OutScale, and Bound = ceil((log(p/(1-p)) -
// B2) * OutScale) for the model's threshold p: no sigmoid, and b2 lives in the bound.
//
// No overflow by construction: |W1[j][k] * (x_j << XShift[j])| <= 32767 * 34197 * 2^15 <
// 2^45.1, so |acc_k| < 2^52 + 68 * 2^45.1 < 2^53; Shift makes every reachable h_k < 2^31;
// |W2| <= 2^26, so |logit| < 16 * 2^31 * 2^26 = 2^61; Bound is clamped to +-2^62, beyond any
// reachable logit, so the clamp changes no decision.
//
// The input error is the table's, at most KernelTableMaxErr in log1p units (measured 3.3e-4
// over every count, TestKernelTableError); a weight's rounding is half a unit of W1, at most
// 2^-15 of its input's largest weight (of its unit's largest divided by 2^15 where all of its
// input's weights are that small); the shift and W2 lose less than 2^-26 of the largest term.
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

	B1     [KernelMaxHidden]int64            // per unit, at scale s_k * 2^13
	W2     [KernelMaxHidden]int32            // per unit: W2_k * 2^Shift/(s_k*2^13) * OutScale
	Table  [KernelTableLen]uint16            // the input quantisation, see kernelTable
	XShift [NumInputs]uint8                  // per input: x_j is shifted left by XShift[j]
	W1     [NumInputs][KernelMaxHidden]int16 // input-major: W1[j][k] weighs input j into unit k

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
	KernelFormVersion = 3   // MLS_NET_VERSION: the record's layout (2: schema v2's extras; 3: W1 stored offset by 2^15)
	KernelMaxHidden   = 16  // MLS_NET_HIDDEN
	KernelTableLen    = 512 // MLS_NET_TABLE_LEN: a power of two, the index is masked with it
	// KernelInputShift: the quantised input is log1p(v) * 2^13.
	KernelInputShift = 13
	// KernelTableMant is how many bits below a count's leading bit pick its table segment
	// (MLS_NET_MANT in bpf/net.h): 16 segments per octave.
	KernelTableMant = 4
	// KernelMinAgreement: NewKernelForm refuses a form whose decisions agree with the float
	// net's (Predictor.KeepLocal) on fewer of its kernelCheckInputs inputs.
	KernelMinAgreement = 0.99
	// KernelTableMaxErr bounds |x/2^13 - log1p(min(v, MaxCount)/2^16)| over every count v:
	// half the largest chord error of log1p on a segment 1/16 of its octave wide, 1/(16*16*16)
	// (the knots are raised by half their segments' chord errors), and one unit of 2^-13 for
	// the knots' rounding and the interpolation's truncation.
	KernelTableMaxErr = 1.0/(16*16*16) + 1.0/(1<<KernelInputShift)
)

const (
	kernelMaxW1       = math.MaxInt16
	kernelMaxXShift   = 15 // XShift[j] <= 15: a unit's largest weight sits at 32767 << 15
	kernelMaxB1       = 1 << 52
	kernelHiddenBits  = 31 // every reachable h_k < 2^31
	kernelMaxW2       = 1 << 26
	kernelMaxBound    = 1 << 62
	kernelCheckInputs = 4096
)

// kernelLastKnot is the last table entry a count <= MaxCount reads (MaxCount's own, plus one
// for the interpolation): 305. The entries after it are 0 and never read.
var kernelLastKnot = func() int { i, _ := kernelIndex(features.MaxCount); return int(i) + 1 }()

// ErrKernelForm is wrapped by NewKernelForm's refusals (with errors.Is); the message names the
// limit. A model that fails Validate is refused with Validate's error.
var ErrKernelForm = errors.New("model does not fit the BPF kernel form")

// kernelKnot is the count whose log1p Table[i] holds. A count v has segment s =
// bits.Len32(v >> (KernelTableMant+1)) and index i = s<<KernelTableMant + v>>s: below
// 2^(KernelTableMant+1) units every count is a knot (s = 0, i = v); above, segment s >= 1
// spans [top<<s, (top+1)<<s) for top in [16, 32), and v is interpolated between knots i and i+1.
func kernelKnot(i int) uint64 {
	if i < 2<<KernelTableMant {
		return uint64(i)
	}
	s := i>>KernelTableMant - 1
	top := i&(1<<KernelTableMant-1) + 1<<KernelTableMant
	return uint64(top) << s
}

// kernelTable is the one quantisation table (it depends on no model): Table[i] =
// round((log1p(knot_i/2^16) + d_i) * 2^13). Below 32 units every count is a knot and d_i = 0
// (so Table[0] = 0: a zero count adds nothing). Above, the interpolation runs along chords of
// the concave log1p, below it by up to E (a segment's chord error, at most 1/(8*16*16)) and
// truncates by up to one unit, so each knot is raised by half its two segments' mean E and
// half a unit: d_i = (E_{i-1} + E_i)/4 + 2^-14.
var kernelTable = func() (t [KernelTableLen]uint16) {
	for i := 0; i <= kernelLastKnot; i++ {
		d := 0.0
		if i >= 2<<KernelTableMant {
			d = (kernelChordErr(i-1)+kernelChordErr(i))/4 + 0.5/(1<<KernelInputShift)
		}
		t[i] = uint16(math.Round((log1pKnot(i) + d) * (1 << KernelInputShift)))
	}
	return t
}()

func log1pKnot(i int) float64 { return math.Log1p(float64(kernelKnot(i)) / features.FixedOne) }

// kernelChordErr is the largest distance between log1p and its chord from knot i to knot i+1
// (0 below 32 units, where nothing is interpolated).
func kernelChordErr(i int) float64 {
	if i < 2<<KernelTableMant {
		return 0
	}
	a, b := float64(kernelKnot(i)), float64(kernelKnot(i+1))
	la := log1pKnot(i)
	slope := (log1pKnot(i+1) - la) / (b - a)
	v := 1/slope - features.FixedOne // where log1p's slope is the chord's
	return math.Log1p(v/features.FixedOne) - (la + slope*(v-a))
}

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
	kf := &KernelForm{Hidden: m.Hidden, Table: kernelTable, B2: float64(m.B2)}
	xmax := kf.input(features.MaxCount) // the largest input: the table grows with the count
	var scale [KernelMaxHidden]float64  // s_k
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
	// Each input's shift: the least that keeps its weights within s16 in every unit.
	for j := range NumInputs {
		col := 0.0
		for k := range m.Hidden {
			col = max(col, math.Abs(folded[k][j])*scale[k]/kernelMaxW1)
		}
		e := 0
		if col > 1 {
			e = min(int(math.Ceil(math.Log2(col))), kernelMaxXShift)
		}
		kf.XShift[j] = uint8(e)
		for k := range m.Hidden {
			kf.W1[j][k] = int16(clampRound(math.Ldexp(folded[k][j]*scale[k], -e), kernelMaxW1))
		}
	}
	// The largest reachable acc_k sets the shift. A unit that can never be positive adds
	// nothing: it gets no second-layer weight (else a dead unit's scale could set OutScale).
	var hmax int64
	var c [KernelMaxHidden]float64 // float logit per unit of h_k
	live := [KernelMaxHidden]bool{}
	for k := range m.Hidden {
		pos := kf.B1[k]
		for j := range NumInputs {
			xm := xmax
			if j >= features.NumBuckets {
				xm = features.MaxExtraInput
			}
			pos += int64(max(kf.W1[j][k], 0)) * xm << kf.XShift[j]
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

// kernelIndex is the table entry of count v's segment (see kernelKnot), before the mask, and
// the segment's shift s.
func kernelIndex(v uint32) (i, s uint) {
	s = uint(bits.Len32(v >> (KernelTableMant + 1)))
	return s<<KernelTableMant + uint(v>>s), s
}

// input is the quantised log1p of count v: log1p(min(v, MaxCount)/2^16) * 2^KernelInputShift,
// interpolated between two knots of Table (mls_net_input in bpf/net.h).
func (kf *KernelForm) input(v uint32) int64 {
	v = min(v, features.MaxCount)
	i, s := kernelIndex(v)
	t0 := int64(kf.Table[i%KernelTableLen])
	t1 := int64(kf.Table[(i+1)%KernelTableLen])
	return t0 + (t1-t0)*int64(v&(1<<s-1))>>s
}

// Logit is the integer logit BPF computes for the input vector feats (the counts, a snapshot:
// zero counts contribute nothing; then the extras): about (float logit - b2) * OutScale. BPF
// sums the same terms in another order (mls_net_counts, then mls_net_finish): every sum is
// exact, so the result is the same.
func (kf *KernelForm) Logit(feats *[NumInputs]uint32) int64 {
	acc := kf.B1
	for j := features.NumBuckets; j < NumInputs; j++ {
		x := int64(min(feats[j], features.MaxExtraInput)) << (kf.XShift[j] & 31)
		for k, w := range &kf.W1[j] {
			acc[k] += int64(w) * x
		}
	}
	for nz := nonzeroMask(features.Counts(feats)); nz != 0; nz &= nz - 1 {
		j := bits.TrailingZeros64(nz) % features.NumBuckets
		x := kf.input(feats[j]) << (kf.XShift[j] & 31)
		row := &kf.W1[j]
		for k, w := range row {
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
	netOffTable      = netOffW2 + 4*KernelMaxHidden
	netOffXShift     = netOffTable + 2*KernelTableLen
	netOffW1         = netOffXShift + NumInputs
	// NetSize is sizeof(struct mls_net).
	NetSize = netOffW1 + 2*NumInputs*KernelMaxHidden + 4
)

// NetRecord is struct mls_net as MarshalBinary lays it out.
var NetRecord = features.Record{Name: "mls_net", Size: NetSize, Fields: []features.Field{
	{Name: "version", Offset: netOffVersion, Size: 4}, {Name: "hidden", Offset: netOffHidden, Size: 4},
	{Name: "generation", Offset: netOffGeneration, Size: 8},
	{Name: "bound", Offset: netOffBound, Size: 8}, {Name: "lower", Offset: netOffLower, Size: 8},
	{Name: "upper", Offset: netOffUpper, Size: 8},
	{Name: "shift", Offset: netOffShift, Size: 4}, {Name: "_pad", Offset: netOffShift + 4, Size: 4},
	{Name: "b1", Offset: netOffB1, Size: 8 * KernelMaxHidden}, {Name: "w2", Offset: netOffW2, Size: 4 * KernelMaxHidden},
	{Name: "table", Offset: netOffTable, Size: 2 * KernelTableLen},
	{Name: "x_shift", Offset: netOffXShift, Size: NumInputs},
	{Name: "w1", Offset: netOffW1, Size: 2 * NumInputs * KernelMaxHidden},
	{Name: "_pad2", Offset: netOffW1 + 2*NumInputs*KernelMaxHidden, Size: 4},
}}

// MarshalBinary returns the struct mls_net image of kf (NetSize bytes, little-endian), as BPF
// reads it from a map value.
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
	for i, t := range kf.Table {
		le.PutUint16(b[netOffTable+2*i:], t)
	}
	copy(b[netOffXShift:], kf.XShift[:])
	for j, row := range kf.W1 {
		for k, w := range row {
			le.PutUint16(b[netOffW1+2*(j*KernelMaxHidden+k):], uint16(w)^0x8000) // w + 2^15
		}
	}
	return b, nil
}
