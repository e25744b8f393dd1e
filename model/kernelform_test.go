package model

import (
	"bufio"
	"cmp"
	"encoding/binary"
	"errors"
	"io"
	"math"
	"math/big"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/mlsched/mlsched/features"
)

// A count's level is its nearest knot: over every count a task can have (and clamped ones
// above), log1p of the knot is within KernelLevelMaxErr of the count's, levels rise with the
// count, every knot is its own level, and MaxCount's is the last.
func TestKernelLevelError(t *testing.T) {
	worst, at, prev := 0.0, uint32(0), 0
	for v := uint32(0); v <= features.MaxCount; v++ {
		i := KernelLevel(v)
		if i < prev || i >= KernelLevels {
			t.Fatalf("count %d: level %d after %d (of %d)", v, i, prev, KernelLevels)
		}
		prev = i
		k := kernelKnot(i)
		if e := math.Abs(kernelLog1p[i] - Log1pCount(v)); e > worst {
			worst, at = e, v
		}
		// The nearest: no other knot is closer.
		for _, j := range []int{i - 1, i + 1} {
			if j >= 0 && j < KernelLevels {
				if d, dk := absDiff(kernelKnot(j), v), absDiff(k, v); d < dk {
					t.Fatalf("count %d: level %d (knot %d), but knot %d of level %d is nearer", v, i, k, kernelKnot(j), j)
				}
			}
		}
	}
	t.Logf("levels: %d, worst log1p error %.3g at count %d; bound %.3g", KernelLevels, worst, at, KernelLevelMaxErr)
	if worst > KernelLevelMaxErr {
		t.Fatalf("worst error %g at %d > %g", worst, at, KernelLevelMaxErr)
	}
	for i := range KernelLevels {
		if KernelLevel(kernelKnot(i)) != i {
			t.Fatalf("knot %d of level %d has level %d", kernelKnot(i), i, KernelLevel(kernelKnot(i)))
		}
	}
	if KernelLevel(features.MaxCount) != KernelLevels-1 || kernelKnot(KernelLevels-1) != features.MaxCount || kernelLog1p[0] != 0 {
		t.Fatalf("MaxCount's level %d, last knot %d, level 0's log1p %v", KernelLevel(features.MaxCount), kernelKnot(KernelLevels-1), kernelLog1p[0])
	}
	for _, v := range []uint32{features.MaxCount + 1, 1 << 30, math.MaxUint32} {
		if KernelLevel(v) != KernelLevels-1 {
			t.Errorf("count %d not clamped to MaxCount", v)
		}
	}
}

func absDiff(a, b uint32) uint32 { return max(a, b) - min(a, b) }

// taskInput fills in with the snapshot of a simulated task: 5 to 15 syscalls of distinct
// buckets, Zipf-like frequencies, 20 to 3000 syscalls made (features.TaskState, the mirror of
// the BPF decay).
func taskInput(rng *rand.Rand, in *[features.NumInputs]uint32) {
	var byBucket [features.NumBuckets][]uint32
	for nr := range uint32(features.SyscallTableLen) {
		b := features.Bucket(nr)
		byBucket[b] = append(byBucket[b], nr)
	}
	var nrs []uint32
	for _, b := range rng.Perm(features.NumBuckets) {
		if len(byBucket[b]) > 0 && len(nrs) < 5+rng.IntN(11) {
			nrs = append(nrs, byBucket[b][rng.IntN(len(byBucket[b]))])
		}
	}
	var st features.TaskState
	for range 20 + rng.IntN(2981) {
		// Zipf-like: the i-th syscall about 1/(i+1) as often as the first.
		i := int(math.Exp(rng.Float64()*math.Log(float64(len(nrs)+1)))) - 1
		st.Syscall(nrs[min(i, len(nrs)-1)])
	}
	st.Snapshot(features.Counts(in))
	sched := KernelCheckState(rng)
	features.SetExtras(in, &sched)
}

// defaultForm is the embedded default model and its kernel form.
func defaultForm(t testing.TB) (*Model, *KernelForm) {
	t.Helper()
	m, err := Default()
	if err != nil {
		t.Fatal(err)
	}
	kf, err := NewKernelForm(m)
	if err != nil {
		t.Fatal(err)
	}
	return m, kf
}

// logCheck reports c and fails below KernelMinAgreement.
func logCheck(t *testing.T, what string, c KernelCheck) { logCheckGoal(t, what, c, KernelMinAgreement) }

func logCheckGoal(t *testing.T, what string, c KernelCheck, goal float64) {
	t.Helper()
	t.Logf("%s: agree on %d of %d (%.3f%%), largest logit error %.3g, relative %.3g",
		what, c.Agree, c.Inputs, 100*c.Rate(), c.MaxLogitErr, c.MaxRelLogitErr)
	if c.Rate() < goal {
		t.Errorf("%s: agreement %.3f%% < %.1f%%", what, 100*c.Rate(), 100*goal)
	}
}

// defaultAgreementGoal is issue 12's bar for the default model: its kernel form decides as the
// float net (Predictor.KeepLocal) on at least this fraction of the decisions.
const defaultAgreementGoal = 0.995

// The embedded default model: the kernel form decides as the float net does on at least 99.5%
// of realistic inputs, of both generators. (The default model's training traces are not in
// the repository; TestKernelFormTraceAgreement measures real traces when given them.)
func TestKernelFormDefaultAgreement(t *testing.T) {
	m, kf := defaultForm(t)
	t.Logf("default model: hidden %d, shift %d, bound %d, out scale %.4g, x shifts %v", kf.Hidden, kf.Shift, kf.Bound, kf.OutScale, kf.XShift)
	logCheck(t, "NewKernelForm's own check", kf.Check)
	rng := rand.New(rand.NewPCG(21, 22))
	n := 200_000
	if testing.Short() {
		n = 20_000
	}
	logCheckGoal(t, "KernelCheckInput", kf.agreement(m, n, func(in *[features.NumInputs]uint32) { KernelCheckInput(rng, in) }), defaultAgreementGoal)
	logCheckGoal(t, "simulated tasks", kf.agreement(m, n/10, func(in *[features.NumInputs]uint32) { taskInput(rng, in) }), defaultAgreementGoal)
}

// The default model's kernel form on real traces: the time-held-out last 20% of each trace
// named in MLSCHED_KERNEL_TRACES (space-separated; captured as `make default-model` does),
// split as training splits them (by timestamp). Skipped without it.
//
//	MLSCHED_KERNEL_TRACES="a.trace b.trace" go test -run TraceAgreement -v ./model
func TestKernelFormTraceAgreement(t *testing.T) {
	paths := strings.Fields(os.Getenv("MLSCHED_KERNEL_TRACES"))
	if len(paths) == 0 {
		t.Skip("MLSCHED_KERNEL_TRACES names no traces")
	}
	m, kf := defaultForm(t)
	var all KernelCheck
	for _, path := range paths {
		val := heldOut(t, path, 0.2)
		i := 0
		c := kf.agreement(m, len(val), func(in *[features.NumInputs]uint32) { *in = val[i]; i++ })
		logCheckGoal(t, path+", last 20%", c, defaultAgreementGoal)
		all.Inputs += c.Inputs
		all.Agree += c.Agree
		all.MaxLogitErr, all.MaxRelLogitErr = max(all.MaxLogitErr, c.MaxLogitErr), max(all.MaxRelLogitErr, c.MaxRelLogitErr)
	}
	logCheckGoal(t, "all traces, last 20%", all, defaultAgreementGoal)
}

// heldOut is the counts of the last frac of trace path's samples by timestamp.
func heldOut(t *testing.T, path string, frac float64) [][features.NumInputs]uint32 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr, err := features.NewTraceReader(bufio.NewReader(f))
	if err != nil {
		t.Fatal(err)
	}
	type sample struct {
		ts    uint64
		feats [features.NumInputs]uint32
	}
	var ss []sample
	var s features.Sample
	for {
		if err := tr.Next(&s); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		ss = append(ss, sample{s.TsNs, s.Feats})
	}
	slices.SortStableFunc(ss, func(a, b sample) int { return cmp.Compare(a.ts, b.ts) })
	out := make([][features.NumInputs]uint32, 0, len(ss))
	for _, x := range ss[len(ss)-int(float64(len(ss))*frac):] {
		out = append(out, x.feats)
	}
	return out
}

// handModel is a model with Std 1, Mean 0 and only the given parameters set.
func handModel(hidden int, set func(m *Model)) *Model {
	m := New(hidden, 1)
	set(m)
	return m
}

// Small models made by hand decide like the float net, on the inputs where the answer is
// known exactly.
func TestKernelFormHandMade(t *testing.T) {
	// One unit on bucket 3: logit = log1p(v3) - log(2), keep iff v3 >= 1.0 (beyond half a knot
	// spacing from it, 1,024 units there: within, the level decides).
	one := handModel(1, func(m *Model) { m.W1[3], m.W2[0], m.B2 = 1, 1, -math.Ln2 })
	kf, err := NewKernelForm(one)
	if err != nil {
		t.Fatal(err)
	}
	var in [features.NumInputs]uint32
	for _, c := range []struct {
		v    uint32
		keep bool
	}{{0, false}, {1, false}, {65536 - 1100, false}, {65536 + 1100, true}, {features.MaxCount, true}} {
		in[3] = c.v
		if got := kf.KeepLocal(&in); got != c.keep {
			t.Errorf("one unit, count %d: keep %v, want %v (logit %d, bound %d)", c.v, got, c.keep, kf.Logit(&in), kf.Bound)
		}
	}
	// The zero net: the decision is b2 against the threshold alone, whatever the counts.
	for _, c := range []struct {
		b2, thr float32
		keep    bool
	}{{0, 0.5, true}, {0.1, 0.5, true}, {-0.1, 0.5, false}, {2, 0.9, false}, {2.2, 0.9, true}} {
		kf, err := NewKernelForm(handModel(16, func(m *Model) { m.B2, m.Threshold = c.b2, c.thr }))
		if err != nil {
			t.Fatal(err)
		}
		in := randomInput(rand.New(rand.NewPCG(1, 1)), 12)
		if kf.KeepLocal(in) != c.keep || kf.Logit(in) != 0 {
			t.Errorf("zero net, b2 %v threshold %v: keep %v logit %d, want %v", c.b2, c.thr, kf.KeepLocal(in), kf.Logit(in), c.keep)
		}
	}
	rng := rand.New(rand.NewPCG(31, 32))
	models := map[string]*Model{
		// A rare syscall's input: a tiny Std makes its weights thousands of times the rest.
		"rare bucket": func() *Model {
			m := testModel(rng, 8)
			m.Std[10], m.Std[23] = 0.0005, 0.0002
			return m
		}(),
		// A unit whose bias dwarfs its weights, and one that is all zero.
		"big bias": func() *Model {
			m := testModel(rng, 4)
			m.B1[1] = 5000
			m.W2[1] = 1e-3
			for j := range NumInputs {
				m.W1[2*NumInputs+j] = 0
			}
			m.B1[2] = 0
			return m
		}(),
		"hidden 1":  testModel(rng, 1),
		"hidden 5":  testModel(rng, 5),
		"hidden 16": testModel(rng, 16),
	}
	for name, m := range models {
		kf, err := NewKernelForm(m)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		logCheck(t, name, kf.agreement(m, 20_000, func(in *[features.NumInputs]uint32) { KernelCheckInput(rng, in) }))
	}
}

// bigLogit is Logit in exact integer arithmetic, to show that the s64 one never overflows
// (and that no lane of the counts' sum leaves an s32, which BPF's paired additions need).
func bigLogit(t *testing.T, kf *KernelForm, feats *[features.NumInputs]uint32) *big.Int {
	out := new(big.Int)
	for k := range KernelMaxHidden {
		lane := new(big.Int)
		for b, v := range feats[:features.NumBuckets] {
			if v != 0 {
				lane.Add(lane, big.NewInt(int64(kf.C[b][KernelLevel(v)][k])))
			}
		}
		if !lane.IsInt64() || lane.Int64() > math.MaxInt32 || lane.Int64() < math.MinInt32 {
			t.Fatalf("unit %d: the counts' lane %v is not an s32", k, lane)
		}
		acc := new(big.Int).Add(big.NewInt(kf.B1[k]), lane.Lsh(lane, uint(kf.CShift)))
		for e := range features.NumExtras {
			x := new(big.Int).Lsh(big.NewInt(int64(min(feats[features.NumBuckets+e], features.MaxExtraInput))), uint(kf.XShift[e]))
			acc.Add(acc, x.Mul(x, big.NewInt(int64(kf.W1[e][k]))))
		}
		if acc.Sign() > 0 {
			acc.Rsh(acc, uint(kf.Shift))
			out.Add(out, acc.Mul(acc, big.NewInt(int64(kf.W2[k]))))
		}
	}
	return out
}

// The largest model Validate allows and models of every kind: no overflow anywhere, on the
// largest inputs either.
func TestKernelFormNoOverflow(t *testing.T) {
	extreme := New(16, 1)
	for i := range extreme.Std {
		extreme.Mean[i], extreme.Std[i] = -MaxAbsMean, MinStd
	}
	for _, xs := range [][]float32{extreme.W1, extreme.B1, extreme.W2} {
		for i := range xs {
			xs[i] = MaxAbsWeight
		}
	}
	rng := rand.New(rand.NewPCG(41, 42))
	mixed := testModel(rng, 16)
	for i := range mixed.W1 {
		mixed.W1[i] = float32(rng.NormFloat64() * math.Pow(10, float64(rng.IntN(12)-6)))
	}
	mixed.Std[5] = MinStd
	for name, m := range map[string]*Model{"extreme": extreme, "mixed": mixed, "test": testModel(rng, 16)} {
		kf, err := NewKernelForm(m)
		if errors.Is(err, ErrKernelForm) { // refused for its agreement: the arithmetic must hold anyway
			kf, err = newKernelForm(m)
		}
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		var full [features.NumInputs]uint32
		for i := range full {
			full[i] = features.MaxCount
		}
		for i := range 2000 {
			in := &full
			if i > 0 {
				in = randomInput(rng, 1+rng.IntN(64))
			}
			if got, want := kf.Logit(in), bigLogit(t, kf, in); !want.IsInt64() || got != want.Int64() {
				t.Fatalf("%s: logit %d, exact %v", name, got, want)
			}
		}
	}
}

// What the kernel form cannot hold is refused, with an error naming the limit.
func TestKernelFormRefuses(t *testing.T) {
	nan := New(16, 1)
	nan.W1[5] = float32(math.NaN())
	// Unit 0 puts a large weight on every input but c (and counts for nothing); unit 1 has
	// weight 1 on c and 1e-6 on the rest, which rounds to zero at unit 1's scale: where c is 0
	// the float logit is b2 + sum of log1p, the integer one the constant b2.
	const c = 63
	lost := New(2, 1)
	for j := range NumInputs {
		if j != c {
			lost.W1[j] = 1
			lost.W1[NumInputs+j] = 1e-6
		}
	}
	lost.W1[NumInputs+c] = 1
	lost.W2[1] = 1e6
	lost.B2 = -4
	for _, tc := range []struct {
		name string
		m    *Model
		is   error
		says string
	}{
		{"hidden 17", New(17, 1), ErrKernelForm, "hidden 17 > 16"},
		{"hidden 1024", New(MaxHidden, 1), ErrKernelForm, "hidden 1024 > 16"},
		{"NaN weight", nan, ErrNonFinite, "w1[5]"},
		{"weights lost in rounding", lost, ErrKernelForm, "need 99%"},
	} {
		_, err := NewKernelForm(tc.m)
		if !errors.Is(err, tc.is) || !strings.Contains(fmtErr(err), tc.says) {
			t.Errorf("%s: %v, want %v saying %q", tc.name, err, tc.is, tc.says)
		} else {
			t.Logf("%s: %v", tc.name, err)
		}
	}
}

func fmtErr(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// MarshalBinary writes every field where NetRecord says, and NetRecord covers the record
// without gaps or overlaps.
func TestKernelFormMarshalLayout(t *testing.T) {
	rng := rand.New(rand.NewPCG(51, 52))
	kf, err := NewKernelForm(testModel(rng, 12))
	if err != nil {
		t.Fatal(err)
	}
	kf.Generation, kf.Lower, kf.Upper = 0x1122334455667788, kf.Bound-7, kf.Bound+9
	b, err := kf.MarshalBinary()
	if err != nil || len(b) != NetSize {
		t.Fatalf("%d bytes, %v; want %d", len(b), err, NetSize)
	}
	le := binary.LittleEndian
	field := func(name string) []byte {
		for _, f := range NetRecord.Fields {
			if f.Name == name {
				return b[f.Offset : f.Offset+f.Size]
			}
		}
		t.Fatalf("no field %s", name)
		return nil
	}
	if le.Uint32(field("version")) != KernelFormVersion || le.Uint32(field("hidden")) != 12 ||
		le.Uint64(field("generation")) != kf.Generation || int64(le.Uint64(field("bound"))) != kf.Bound ||
		int64(le.Uint64(field("lower"))) != kf.Lower || int64(le.Uint64(field("upper"))) != kf.Upper ||
		le.Uint32(field("shift")) != kf.Shift || le.Uint32(field("_pad")) != 0 {
		t.Fatalf("header: % x", b[:netOffB1])
	}
	b1, w2, cs, xs, w1, c := field("b1"), field("w2"), field("c_shift"), field("x_shift"), field("w1"), field("c")
	for k := range KernelMaxHidden {
		if int64(le.Uint64(b1[8*k:])) != kf.B1[k] || int32(le.Uint32(w2[4*k:])) != kf.W2[k] {
			t.Fatalf("unit %d: b1/w2 bytes differ", k)
		}
	}
	if le.Uint32(cs) != kf.CShift {
		t.Fatalf("c_shift %d, want %d", le.Uint32(cs), kf.CShift)
	}
	for e := range features.NumExtras {
		if xs[e] != kf.XShift[e] {
			t.Fatalf("x_shift[%d]", e)
		}
		for k := range KernelMaxHidden {
			if int(le.Uint16(w1[2*(e*KernelMaxHidden+k):])) != int(kf.W1[e][k])+1<<15 { // stored offset
				t.Fatalf("w1[%d][%d]", e, k)
			}
		}
	}
	// c: two units per u64, decoded as BPF does (the low lane signed, the high one the rest).
	negLow := 0
	for b := range features.NumBuckets {
		for i := range KernelLevels {
			for p := range KernelMaxHidden / 2 {
				u := le.Uint64(c[8*((b*KernelLevels+i)*KernelMaxHidden/2+p):])
				lo := int64(int32(u))
				hi := (int64(u) - lo) >> 32
				if lo != int64(kf.C[b][i][2*p]) || hi != int64(kf.C[b][i][2*p+1]) {
					t.Fatalf("c[%d][%d][%d]: lanes %d, %d; want %d, %d", b, i, p, lo, hi, kf.C[b][i][2*p], kf.C[b][i][2*p+1])
				}
				if lo < 0 {
					negLow++
				}
			}
		}
	}
	if negLow == 0 {
		t.Fatal("no negative low lane: the borrow is not tested")
	}
	end := 0
	for _, f := range NetRecord.Fields {
		if f.Offset != end {
			t.Fatalf("%s at %d, previous field ends at %d", f.Name, f.Offset, end)
		}
		end = f.Offset + f.Size
	}
	if end != NetRecord.Size || NetRecord.Size%8 != 0 {
		t.Fatalf("fields end at %d, size %d", end, NetRecord.Size)
	}
}

func TestKernelFormAllocs(t *testing.T) {
	_, kf := defaultForm(t)
	in := randomInput(rand.New(rand.NewPCG(3, 4)), 12)
	var sink int64
	var keep bool
	if n := testing.AllocsPerRun(100, func() {
		sink += kf.Logit(in)
		keep = kf.KeepLocal(in)
	}); n != 0 {
		t.Fatalf("%v allocations per call", n)
	}
	_, _ = sink, keep
}

// BenchmarkKernelFormLogit: the Go reference on typical inputs (5-15 nonzero buckets).
func BenchmarkKernelFormLogit(b *testing.B) {
	_, kf := defaultForm(b)
	rng := rand.New(rand.NewPCG(5, 6))
	var ins [64][features.NumInputs]uint32
	for i := range ins {
		KernelCheckInput(rng, &ins[i])
	}
	b.ReportAllocs()
	var sink int64
	i := 0
	for b.Loop() {
		sink += kf.Logit(&ins[i%len(ins)])
		i++
	}
	_ = sink
}
