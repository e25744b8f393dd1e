package model

import (
	"errors"
	"math"
	"math/rand/v2"
	"runtime"
	"strconv"
	"testing"

	"github.com/mlsched/mlsched/features"
)

// A synthetic stream: every bucket is nonzero with probability 1/4 (uniform up to 6.0), buckets
// 9 and 20 always (uniform up to 4.0); a rule on the counts gives the label, flipped with
// probability noise.
type synthRule func(in *[features.NumInputs]uint32) bool

func ruleBucket(j int) synthRule {
	return func(in *[features.NumInputs]uint32) bool { return in[j] > 2*features.FixedOne }
}

func synthSample(rng *rand.Rand, rule synthRule, noise float64, in *[features.NumInputs]uint32) bool {
	for j := range in {
		in[j] = 0
		if rng.IntN(4) == 0 {
			in[j] = uint32(1 + rng.IntN(6*features.FixedOne))
		}
	}
	in[9] = uint32(1 + rng.IntN(4*features.FixedOne))
	in[20] = uint32(1 + rng.IntN(4*features.FixedOne))
	y := rule(in)
	if rng.Float64() < noise {
		y = !y
	}
	return y
}

// synthBase is a model of rule A (bucket 9 > 2.0): normalisation fitted on the stream, random
// initial weights, then trained from scratch by the learner itself (no pull, every sample).
func synthBase(t testing.TB) *Model {
	t.Helper()
	rng := rand.New(rand.NewPCG(11, 12))
	m := New(DefaultHidden, 1_000_000)
	var in [features.NumInputs]uint32
	var sum, sum2 [features.NumInputs]float64
	const nfit = 20000
	for range nfit {
		synthSample(rng, ruleBucket(9), 0, &in)
		for j, v := range in {
			x := InputValue(j, v)
			sum[j] += x
			sum2[j] += x * x
		}
	}
	for j := range m.Mean {
		mu := sum[j] / nfit
		m.Mean[j] = float32(mu)
		m.Std[j] = float32(math.Sqrt(max(sum2[j]/nfit-mu*mu, 1e-6)))
	}
	lim1, lim2 := math.Sqrt(6.0/NumInputs), math.Sqrt(6.0/(DefaultHidden+1))
	for i := range m.W1 {
		m.W1[i] = float32((2*rng.Float64() - 1) * lim1)
	}
	for k := range m.W2 {
		m.W2[k] = float32((2*rng.Float64() - 1) * lim2)
	}
	m.Meta.Data = DataSummary{Samples: 1000, Positives: 500, Traces: []string{"synthetic-a"}}
	m.Meta.CreatedUnixNs = 1_760_000_000_000_000_000
	m.Meta.Notes = map[string]string{"trainer": "online_test"}
	l, err := NewLearner(m, LearnerConfig{LearnRate: 0.05, ClipNorm: 10, PosRateSamples: 4096})
	if err != nil {
		t.Fatal(err)
	}
	for range 60000 {
		y := synthSample(rng, ruleBucket(9), 0.02, &in)
		l.Learn(&in, y)
	}
	return l.Model()
}

// prequential predicts each sample of a stream with the learner, then learns from it (cfg's
// budget ignored: every sample), and returns the accuracy over the stream's second half of the
// adapted net and of the unadapted one.
func prequential(t testing.TB, m *Model, cfg LearnerConfig, rule synthRule, n int, seed uint64) (adapted, static float64) {
	t.Helper()
	l, err := NewLearner(m, cfg)
	if err != nil {
		t.Fatal(err)
	}
	fixed := NewPredictor(m)
	rng := rand.New(rand.NewPCG(seed, 99))
	var in [features.NumInputs]uint32
	var okA, okS int
	for i := range n {
		y := synthSample(rng, rule, 0.05, &in)
		if i >= n/2 {
			if l.KeepLocal(&in) == y {
				okA++
			}
			if fixed.KeepLocal(&in) == y {
				okS++
			}
		}
		l.Learn(&in, y)
	}
	half := float64(n - n/2)
	return float64(okA) / half, float64(okS) / half
}

// On a stream labelled by another rule than the model's, the adapted net's prequential
// accuracy beats the unadapted one by a clear margin; on a stream of the model's own rule it
// is no worse than a small margin. The step is 0.01 here (the synthetic rule change is abrupt
// and the stream short); the default step, chosen on real programs, is tested below with a
// lower bar.
func TestLearnerAdapts(t *testing.T) {
	base := synthBase(t)
	_, accA := prequential(t, base, DefaultLearnerConfig(), ruleBucket(9), 2000, 1)
	t.Logf("base model on its own rule: accuracy %.4f (label noise 5%%)", accA)
	if accA < 0.85 {
		t.Fatalf("the synthetic base model does not know its rule: accuracy %.4f", accA)
	}
	def := DefaultLearnerConfig()
	adapted, static := prequential(t, base, def, ruleBucket(20), 30000, 2)
	t.Logf("new rule, default step %v: prequential accuracy %.4f adapted, %.4f unadapted", def.LearnRate, adapted, static)
	if adapted < static+0.15 {
		t.Errorf("new rule, default step: adapted %.4f, unadapted %.4f: want 0.15 above", adapted, static)
	}
	cfg := DefaultLearnerConfig()
	cfg.LearnRate = 0.01
	adapted, static = prequential(t, base, cfg, ruleBucket(20), 30000, 2)
	t.Logf("new rule (bucket 20): prequential accuracy %.4f adapted, %.4f unadapted", adapted, static)
	if adapted < static+0.2 || adapted < 0.8 {
		t.Errorf("new rule: adapted %.4f, unadapted %.4f: want >= 0.8 and 0.2 above", adapted, static)
	}
	adapted, static = prequential(t, base, cfg, ruleBucket(9), 30000, 3)
	t.Logf("same rule (bucket 9): prequential accuracy %.4f adapted, %.4f unadapted", adapted, static)
	if adapted < static-0.01 {
		t.Errorf("same rule: adapted %.4f is more than 0.01 below the unadapted %.4f", adapted, static)
	}
}

// denseSGD is the reference: the same SGD step on the dense, unfactored net.
type denseSGD struct {
	m       *Model
	cfg     LearnerConfig
	w1, w10 []float64 // [k*n+j]
	b1, b10 []float64
	w2, w20 []float64
	b2, b20 float64
	posRate float64
}

func newDenseSGD(m *Model, cfg LearnerConfig) *denseSGD {
	d := &denseSGD{m: m, cfg: cfg, b2: float64(m.B2), b20: float64(m.B2), posRate: 0.5}
	for _, p := range []struct {
		dst, dst0 *[]float64
		src       []float32
	}{{&d.w1, &d.w10, m.W1}, {&d.b1, &d.b10, m.B1}, {&d.w2, &d.w20, m.W2}} {
		for _, v := range p.src {
			*p.dst = append(*p.dst, float64(v))
			*p.dst0 = append(*p.dst0, float64(v))
		}
	}
	if m.Meta.Data.Samples > 0 {
		d.posRate = float64(m.Meta.Data.Positives) / float64(m.Meta.Data.Samples)
	}
	return d
}

func (d *denseSGD) input(in *[features.NumInputs]uint32) []float64 {
	x := make([]float64, NumInputs)
	for j, v := range in {
		xj := float64(extraFloat(v))
		if j < features.NumBuckets {
			xj = float64(log1pFixed(v))
		}
		x[j] = (xj - float64(d.m.Mean[j])) / float64(d.m.Std[j])
	}
	return x
}

func (d *denseSGD) forward(x []float64) (z float64, a []float64) {
	n, h := NumInputs, d.m.Hidden
	a = make([]float64, h)
	z = d.b2
	for k := range h {
		a[k] = d.b1[k]
		for j := range n {
			a[k] += d.w1[k*n+j] * x[j]
		}
		if a[k] > 0 {
			z += d.w2[k] * a[k]
		}
	}
	return z, a
}

func (d *denseSGD) learn(in *[features.NumInputs]uint32, label bool) {
	n, h := NumInputs, d.m.Hidden
	x := d.input(in)
	z, a := d.forward(x)
	y := 0.0
	if label {
		y = 1
	}
	pr := min(max(d.posRate, 0.01), 0.99)
	w := 0.5 / (1 - pr)
	if label {
		w = 0.5 / pr
	}
	d.posRate += (y - d.posRate) / d.cfg.PosRateSamples
	dz := w * (1/(1+math.Exp(-z)) - y)
	// The whole gradient, then its norm.
	gw1 := make([]float64, h*n)
	gb1 := make([]float64, h)
	gw2 := make([]float64, h)
	sq := dz * dz
	for k := range h {
		if a[k] > 0 {
			gw2[k] = dz * a[k]
			gb1[k] = dz * d.w2[k]
			for j := range n {
				gw1[k*n+j] = gb1[k] * x[j]
			}
		}
		sq += gw2[k]*gw2[k] + gb1[k]*gb1[k]
		for j := range n {
			sq += gw1[k*n+j] * gw1[k*n+j]
		}
	}
	scale := 1.0
	if norm := math.Sqrt(sq); norm > d.cfg.ClipNorm {
		scale = d.cfg.ClipNorm / norm
	}
	lr, l2 := d.cfg.LearnRate, d.cfg.L2
	step := func(p []float64, p0 []float64, g []float64) {
		for i := range p {
			p[i] -= lr * (scale*g[i] + l2*(p[i]-p0[i]))
		}
	}
	step(d.w1, d.w10, gw1)
	step(d.b1, d.b10, gb1)
	step(d.w2, d.w20, gw2)
	d.b2 -= lr * (scale*dz + l2*(d.b2-d.b20))
}

// The factored learner is exactly SGD on the dense net: same logits sample by sample, same
// weights at the end, through several folds of the L2 decay.
func TestLearnerMatchesDenseSGD(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	m := testModel(rng, 7)
	cfg := LearnerConfig{LearnRate: 0.02, L2: 0.25, ClipNorm: 3, PosRateSamples: 50} // lr*l2 = 0.005: a fold every ~1840 samples
	l, err := NewLearner(m, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ref := newDenseSGD(m, cfg)
	folds := 0
	var maxErr float64
	for range 5000 {
		in := randomInput(rng, 1+rng.IntN(20))
		y := in[3] > in[5] || rng.IntN(10) == 0
		zl := l.Logit(in)
		zr, _ := ref.forward(ref.input(in))
		maxErr = max(maxErr, math.Abs(zl-zr)/max(1, math.Abs(zr)))
		before := l.alpha
		l.Learn(in, y)
		ref.learn(in, y)
		if l.alpha > before {
			folds++
		}
	}
	got := l.Model()
	for i, w := range got.W1 {
		if d := math.Abs(float64(w) - ref.w1[i]); d > 1e-5*max(1, math.Abs(ref.w1[i])) {
			t.Fatalf("W1[%d] = %v, dense SGD has %v", i, w, ref.w1[i])
		}
	}
	for k := range got.B1 {
		if math.Abs(float64(got.B1[k])-ref.b1[k]) > 1e-5 || math.Abs(float64(got.W2[k])-ref.w2[k]) > 1e-5 {
			t.Fatalf("unit %d: b1 %v w2 %v, dense SGD %v %v", k, got.B1[k], got.W2[k], ref.b1[k], ref.w2[k])
		}
	}
	if math.Abs(float64(got.B2)-ref.b2) > 1e-5 {
		t.Fatalf("b2 %v, dense SGD %v", got.B2, ref.b2)
	}
	t.Logf("5000 steps, %d folds: largest relative logit difference %.2g", folds, maxErr)
	if folds < 2 || maxErr > 1e-9 {
		t.Errorf("%d folds (want >= 2), logit difference %.2g (want <= 1e-9)", folds, maxErr)
	}
}

// The snapshot is a valid model that round-trips through the file format, carries the
// provenance notes and decides as the learner does.
func TestLearnerSnapshot(t *testing.T) {
	base := synthBase(t)
	base.Meta.CreatedUnixNs = 1_760_000_000_000_000_000
	before := mustMarshal(t, base)
	l, err := NewLearner(base, DefaultLearnerConfig())
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(5, 6))
	var in [features.NumInputs]uint32
	for range 5000 {
		l.Learn(&in, synthSample(rng, ruleBucket(20), 0.05, &in))
	}
	snap := l.Model()
	if err := snap.Validate(); err != nil {
		t.Fatal(err)
	}
	b, err := snap.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	back, err := Unmarshal(b)
	if err != nil {
		t.Fatal(err)
	}
	if err := back.Validate(); err != nil {
		t.Fatal(err)
	}
	b2, _ := back.MarshalBinary()
	if string(b2) != string(b) {
		t.Error("snapshot does not re-encode to the same bytes")
	}
	notes := back.Meta.Notes
	for k, want := range map[string]string{NoteOnlineLearned: "5000", NoteOnlineLearnRate: strconv.FormatFloat(DefaultLearnRate, 'g', -1, 64),
		NoteOnlineL2:          strconv.FormatFloat(DefaultL2, 'g', -1, 64),
		NoteOnlineBaseCreated: "2025-10-09T08:53:20Z", "trainer": "online_test"} {
		if notes[k] != want {
			t.Errorf("note %q = %q, want %q", k, notes[k], want)
		}
	}
	if !math.IsNaN(back.Meta.Metrics.Accuracy) || back.Threshold != base.Threshold || back.HorizonNs != base.HorizonNs ||
		back.Meta.Data.Samples != base.Meta.Data.Samples {
		t.Errorf("snapshot metadata: accuracy %v, threshold %v, horizon %v", back.Meta.Metrics.Accuracy, back.Threshold, back.HorizonNs)
	}
	for j := range base.Mean {
		if back.Mean[j] != base.Mean[j] || back.Std[j] != base.Std[j] {
			t.Fatalf("normalisation of input %d changed", j)
		}
	}
	// The snapshot's Predictor decides as the learner (float32 rounding aside).
	p := NewPredictor(back)
	agree := 0
	for range 2000 {
		synthSample(rng, ruleBucket(20), 0, &in)
		zl := l.Logit(&in)
		if d := math.Abs(float64(p.Logit(&in)) - zl); d > 1e-3*max(1, math.Abs(zl)) {
			t.Fatalf("snapshot logit %v, learner %v", p.Logit(&in), zl)
		}
		if p.KeepLocal(&in) == l.KeepLocal(&in) {
			agree++
		}
	}
	if agree < 1990 {
		t.Errorf("snapshot decides as the learner on %d of 2000", agree)
	}
	// The base model given to NewLearner is not changed by learning.
	if string(mustMarshal(t, base)) != string(before) || string(mustMarshal(t, l.base)) != string(before) {
		t.Error("learning changed the starting model")
	}
}

// A model whose std is tiny makes huge inputs; clipping keeps every step bounded and the
// snapshot valid, whatever the stream.
func TestLearnerStaysFinite(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	m := testModel(rng, 16)
	for j := range m.Std {
		m.Std[j] = 1e-9
	}
	l, err := NewLearner(m, LearnerConfig{LearnRate: 10, L2: 0, ClipNorm: 1e6, PosRateSamples: 1})
	if err != nil {
		t.Fatal(err)
	}
	for range 2000 {
		in := randomInput(rng, 1+rng.IntN(64))
		l.Learn(in, rng.IntN(2) == 0)
	}
	if err := l.Model().Validate(); err != nil {
		t.Errorf("snapshot after a hostile stream: %v", err)
	}
}

// Learn, Offer, Logit and KeepLocal do not allocate.
func TestLearnerNoAlloc(t *testing.T) {
	base, _ := Default()
	l, err := NewLearner(base, DefaultLearnerConfig())
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultLearnerConfig()
	cfg.ThresholdWindow = 64
	lw, err := NewLearner(base, cfg)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(9, 10))
	in := randomInput(rng, 12)
	ts, y := uint64(0), false
	for name, f := range map[string]func(){
		"Learn":                   func() { l.Learn(in, true) },
		"Learn, threshold window": func() { y = !y; lw.Learn(in, y) },
		"Offer":                   func() { ts += 10_000; l.Offer(ts, in, false) },
		"Logit":                   func() { l.Logit(in) },
		"KeepLocal":               func() { l.KeepLocal(in) },
	} {
		if a := testing.AllocsPerRun(1000, f); a != 0 {
			t.Errorf("%s: %v allocations per call", name, a)
		}
	}
}

// Offer learns at most Budget samples per second of its clock (plus one burst), drops the
// rest, and with Budget 0 learns from everything.
func TestLearnerBudget(t *testing.T) {
	base, _ := Default()
	cfg := DefaultLearnerConfig()
	cfg.Budget = 20000
	l, _ := NewLearner(base, cfg)
	var in [features.NumInputs]uint32
	in[3] = features.FixedOne
	// 50,000 outcomes/s for 2 s (one every 20 µs), some out of order.
	for i := range 100000 {
		ts := uint64(i) * 20_000
		if i%7 == 0 && ts > 50_000 {
			ts -= 50_000
		}
		l.Offer(ts, &in, i%3 == 0)
	}
	want := 2 * 20000.0
	if got := float64(l.Learned()); got < want-10 || got > want+cfg.Budget*BudgetBurstNs/1e9+10 || l.Offered() != 100000 ||
		l.Learned()+l.Dropped() != l.Offered() {
		t.Errorf("learned %d, dropped %d of %d offered in 2 s at budget %v/s", l.Learned(), l.Dropped(), l.Offered(), cfg.Budget)
	}
	cfg.Budget = 0
	l, _ = NewLearner(base, cfg)
	for i := range 1000 {
		l.Offer(uint64(i), &in, false)
	}
	if l.Learned() != 1000 {
		t.Errorf("budget 0 learned %d of 1000", l.Learned())
	}
}

func TestLearnerConfigRefused(t *testing.T) {
	base, _ := Default()
	for _, c := range []LearnerConfig{
		{LearnRate: -1, ClipNorm: 1, PosRateSamples: 1},
		{LearnRate: math.NaN(), ClipNorm: 1, PosRateSamples: 1},
		{LearnRate: 0.01, L2: -1, ClipNorm: 1, PosRateSamples: 1},
		{LearnRate: 0.01, Budget: -5, ClipNorm: 1, PosRateSamples: 1},
		{LearnRate: 0.01, ClipNorm: 0, PosRateSamples: 1},
		{LearnRate: 0.01, ClipNorm: 1, PosRateSamples: 0},
		{LearnRate: 0.5, L2: 2, ClipNorm: 1, PosRateSamples: 1}, // lr*l2 >= 1: the pull overshoots
		{LearnRate: 0.01, ClipNorm: 1, PosRateSamples: 1, ThresholdWindow: -1},
		{LearnRate: 0.01, ClipNorm: 1, PosRateSamples: 1, ThresholdWindow: MaxThresholdWindow + 1},
		{LearnRate: 0.01, ClipNorm: 1, PosRateSamples: 1, ThresholdFor: 7},
	} {
		if _, err := NewLearner(base, c); !errors.Is(err, ErrLearnerConfig) {
			t.Errorf("%+v: %v", c, err)
		}
	}
	bad := base.clone()
	bad.Threshold = 2
	if _, err := NewLearner(bad, DefaultLearnerConfig()); !errors.Is(err, ErrThreshold) {
		t.Errorf("invalid model: %v", err)
	}
}

// BenchmarkLearnerLearn is one SGD step of the default model (16 hidden units) on inputs with
// 12 nonzero counts of 64, a typical task's.
func BenchmarkLearnerLearn(b *testing.B) {
	benchLearner(b, 12, func(l *Learner, in *[features.NumInputs]uint32, y bool) { l.Learn(in, y) })
}

// BenchmarkLearnerLearnDense is the same with all 64 counts nonzero (the worst case).
func BenchmarkLearnerLearnDense(b *testing.B) {
	benchLearner(b, 64, func(l *Learner, in *[features.NumInputs]uint32, y bool) { l.Learn(in, y) })
}

// BenchmarkLearnerLogit is the learner's own forward pass (what eval --online predicts with).
func BenchmarkLearnerLogit(b *testing.B) {
	benchLearner(b, 12, func(l *Learner, in *[features.NumInputs]uint32, _ bool) { l.Logit(in) })
}

func benchLearner(b *testing.B, nonzero int, f func(*Learner, *[features.NumInputs]uint32, bool)) {
	base, err := Default()
	if err != nil {
		b.Fatal(err)
	}
	l, err := NewLearner(base, DefaultLearnerConfig())
	if err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	var ins [256]*[features.NumInputs]uint32
	var ys [256]bool
	for i := range ins {
		ins[i] = randomInput(rng, nonzero)
		ys[i] = rng.IntN(4) == 0
	}
	// Thread CPU time as well as wall time: on a loaded machine the wall clock also counts
	// the time other threads had the CPU.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := threadCPU()
	n := 0
	for ; b.Loop(); n++ {
		f(l, ins[n%len(ins)], ys[n%len(ys)])
	}
	b.ReportMetric(float64(threadCPU()-cpu0)/float64(n), "cpu-ns/op")
}

// BenchmarkLearnerOffer50k offers one second of outcomes at 50,000/s (one every 20 µs) with
// the default budget, and reports the CPU it took as a fraction of one core: the bound
// is 0.02.
func BenchmarkLearnerOffer50k(b *testing.B) {
	base, err := Default()
	if err != nil {
		b.Fatal(err)
	}
	l, err := NewLearner(base, DefaultLearnerConfig())
	if err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	var ins [256]*[features.NumInputs]uint32
	for i := range ins {
		ins[i] = randomInput(rng, 12)
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := threadCPU()
	ts, n := uint64(0), 0
	for ; b.Loop(); n++ {
		for i := range 50000 {
			ts += 20_000
			l.Offer(ts, ins[i%len(ins)], i%4 == 0)
		}
	}
	b.ReportMetric(float64(threadCPU()-cpu0)/float64(n)/1e9, "core-fraction")
	b.ReportMetric(float64(l.Learned())/float64(n), "learned/s")
}

// The threshold window keeps per-bin counts of exactly the last ThresholdWindow samples, and
// re-chooses the threshold as the bin edge that maximises the objective, the closest to the
// current threshold among equals.
func TestLearnerThresholdWindow(t *testing.T) {
	base, _ := Default()
	cfg := DefaultLearnerConfig()
	cfg.ThresholdWindow = 100
	l, err := NewLearner(base, cfg)
	if err != nil {
		t.Fatal(err)
	}
	// Negatives at logit -1, positives at +1; the current threshold's logit is 2.2: every edge
	// in (-1, 1] separates them, and 1.0 is the closest.
	l.logitThreshold = math.Log(0.9 / 0.1)
	for i := range 100 {
		l.window(2*float64(i%2)-1, i%2 == 1)
	}
	if l.rechosen == 0 || l.logitThreshold != 1 {
		t.Errorf("separable window: threshold logit %v after %d choices, want 1", l.logitThreshold, l.rechosen)
	}
	// 70 negatives and 30 positives, all at logit 0.5 (bin [0.5, 0.5625)): for accuracy, keep
	// none local (the edge above that bin); for balanced accuracy every cut is 0.5: unchanged.
	for _, c := range []struct {
		obj  ThresholdObjective
		want float64
	}{{ThresholdAccuracy, 0.5625}, {ThresholdBalanced, 0}} {
		cfg.ThresholdFor = c.obj
		l, _ = NewLearner(base, cfg)
		l.logitThreshold = 0
		for i := range 100 {
			l.window(0.5, i%10 < 3)
		}
		if l.logitThreshold != c.want {
			t.Errorf("objective %d: threshold logit %v, want %v", c.obj, l.logitThreshold, c.want)
		}
	}
	// The counts are those of the last 100 samples, however many went through.
	rng := rand.New(rand.NewPCG(1, 1))
	zs, ys := make([]float64, 1000), make([]bool, 1000)
	for i := range zs {
		zs[i], ys[i] = 20*rng.Float64()-10, rng.IntN(3) == 0
		l.window(zs[i], ys[i])
	}
	var pos, neg [thrBins]uint32
	for i := 900; i < 1000; i++ {
		b := int(min(max((zs[i]+thrRange)*thrScale, 0), thrBins-1))
		if ys[i] {
			pos[b]++
		} else {
			neg[b]++
		}
	}
	if pos != l.thrPos || neg != l.thrNeg {
		t.Error("window counts differ from the last 100 samples'")
	}
}

// With the net frozen (learning rate 0) and a threshold far off, re-choosing it on the window
// recovers the accuracy; the snapshot carries the chosen threshold and says how it was chosen.
func TestLearnerThresholdRechosen(t *testing.T) {
	base := synthBase(t)
	base.Threshold = 0.995
	frozen := LearnerConfig{ClipNorm: 1, PosRateSamples: 1}
	_, fixed := prequential(t, base, frozen, ruleBucket(9), 20000, 4)
	frozen.ThresholdWindow = 2048
	rechosen, _ := prequential(t, base, frozen, ruleBucket(9), 20000, 4)
	t.Logf("threshold 0.995: accuracy %.4f kept, %.4f re-chosen on a window", fixed, rechosen)
	if rechosen < fixed+0.1 || rechosen < 0.85 {
		t.Errorf("re-chosen threshold: accuracy %.4f, kept %.4f", rechosen, fixed)
	}
	l, _ := NewLearner(base, frozen)
	rng := rand.New(rand.NewPCG(4, 4))
	var in [features.NumInputs]uint32
	for range 4096 {
		l.Learn(&in, synthSample(rng, ruleBucket(9), 0.05, &in))
	}
	snap := l.Model()
	if err := snap.Validate(); err != nil || float64(snap.Threshold) > 0.9 || snap.Meta.Notes[NoteOnlineThreshold] == "" {
		t.Errorf("snapshot: %v, threshold %v, note %q", err, snap.Threshold, snap.Meta.Notes[NoteOnlineThreshold])
	}
	t.Logf("snapshot threshold %.4f: %s", snap.Threshold, snap.Meta.Notes[NoteOnlineThreshold])
}
