package model

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"unsafe"

	"github.com/mlsched/mlsched/features"
)

// randomInput returns counts with nonzero nonzero buckets, spread over the whole range
// (small counts near one unit, large ones near MaxCount).
func randomInput(rng *rand.Rand, nonzero int) *[features.NumInputs]uint32 {
	var in [features.NumInputs]uint32
	for _, j := range rng.Perm(features.NumBuckets)[:nonzero] {
		// log-uniform in [1, MaxCount]
		in[j] = uint32(math.Exp(rng.Float64() * math.Log(features.MaxCount)))
	}
	st := KernelCheckState(rng)
	features.SetExtras(&in, &st)
	return &in
}

// refLogit is the reference: Normalize, then the float64 forward pass.
func refLogit(m *Model, in *[features.NumInputs]uint32) float64 {
	x := make([]float64, m.Inputs)
	m.Normalize(in, x)
	return m.forwardLogit(x)
}

// availableKernels lists the inference paths this machine can run.
func availableKernels() []string {
	ks := []string{"go"}
	if hasAVX512() {
		ks = append(ks, "avx512")
	}
	if hasAVX512() && hasVBMI2() {
		ks = append(ks, "vbmi2")
	}
	return ks
}

// useKernel selects an inference path ("go", "avx512" without VBMI2, "vbmi2") and returns the
// function that restores the previous choice.
func useKernel(name string) func() {
	a, v := useAVX512, useVBMI2
	useAVX512, useVBMI2 = name != "go", name == "vbmi2"
	return func() { useAVX512, useVBMI2 = a, v }
}

// paths runs f once per inference path available on this machine.
func paths(t *testing.T, f func(t *testing.T)) {
	ks := availableKernels()
	for _, k := range ks {
		t.Run(k, func(t *testing.T) {
			defer useKernel(k)()
			f(t)
		})
	}
	if len(ks) < 3 {
		t.Logf("this machine runs only %v: the other assembly paths are not tested", ks)
	}
}

func TestPredictMatchesReference(t *testing.T) {
	paths(t, func(t *testing.T) {
		for _, hidden := range []int{16, 1, 5, 32} {
			rng := rand.New(rand.NewPCG(11, uint64(hidden)))
			m := testModel(rng, hidden)
			p := NewPredictor(m)
			for i := range 3000 {
				nz := []int{0, 1, 3, 12, 40, 64}[i%6]
				in := randomInput(rng, nz)
				if i%7 == 0 { // past MaxCount: clamped on every path
					in[rng.IntN(64)] = math.MaxUint32 - uint32(rng.IntN(1000))
				}
				want := refLogit(m, in)
				got := float64(p.Logit(in))
				if d := math.Abs(got - want); d > 1e-4*math.Max(1, math.Abs(want)) {
					t.Fatalf("hidden %d nonzero %d: logit %v, reference %v (diff %g)\nin %v", hidden, nz, got, want, d, in)
				}
				x := make([]float64, NumInputs)
				m.Normalize(in, x)
				wantP := m.Forward(x)
				if d := math.Abs(float64(p.Predict(in)) - wantP); d > 1e-4 {
					t.Fatalf("probability %v, reference %v", p.Predict(in), wantP)
				}
				if p.KeepLocal(in) != (want >= math.Log(float64(m.Threshold)/(1-float64(m.Threshold)))) &&
					math.Abs(wantP-float64(m.Threshold)) > 1e-4 {
					t.Fatalf("KeepLocal %v at probability %v, threshold %v", p.KeepLocal(in), wantP, m.Threshold)
				}
			}
		}
	})
}

// The extreme model that Validate allows must not overflow float32 anywhere.
func TestPredictExtremeModelFinite(t *testing.T) {
	paths(t, func(t *testing.T) {
		for _, hidden := range []int{16, MaxHidden} {
			m := New(hidden, 1)
			for i := range m.Std {
				m.Mean[i] = -MaxAbsMean
				m.Std[i] = MinStd
			}
			for _, xs := range [][]float32{m.W1, m.B1, m.W2} {
				for i := range xs {
					xs[i] = MaxAbsWeight
				}
			}
			m.B2 = MaxAbsWeight
			if err := m.Validate(); err != nil {
				t.Fatal(err)
			}
			p := NewPredictor(m)
			var in [features.NumInputs]uint32
			for i := range in {
				in[i] = features.MaxCount
			}
			if l := p.Logit(&in); math.IsInf(float64(l), 0) || math.IsNaN(float64(l)) {
				t.Fatalf("hidden %d: logit %v", hidden, l)
			}
		}
	})
}

func TestKeepLocalThreshold(t *testing.T) {
	paths(t, func(t *testing.T) {
		m := New(DefaultHidden, 1)
		var in [features.NumInputs]uint32
		for _, c := range []struct {
			b2, thr float32
			keep    bool
		}{{0, 0.5, true}, {0.1, 0.5, true}, {-0.1, 0.5, false}, {2, 0.9, false}, {2.2, 0.9, true}} {
			m.B2, m.Threshold = c.b2, c.thr
			p := NewPredictor(m)
			if got := p.KeepLocal(&in); got != c.keep {
				t.Errorf("b2 %v threshold %v: KeepLocal %v, probability %v", c.b2, c.thr, got, p.Predict(&in))
			}
		}
	})
}

// TestLog1pFixed checks the table against math.Log1p for every count up to MaxCount.
func TestLog1pFixed(t *testing.T) {
	worst := 0.0
	for v := uint32(0); v <= features.MaxCount; v++ {
		want := math.Log1p(float64(v) / features.FixedOne)
		got := float64(log1pFixed(v))
		if v == 0 {
			if got != 0 {
				t.Fatalf("log1pFixed(0) = %v", got)
			}
			continue
		}
		worst = max(worst, math.Abs(got-want)/want)
	}
	t.Logf("worst relative error %.3g", worst)
	if worst > 1e-4 {
		t.Fatalf("worst relative error %g", worst)
	}
	if got, want := log1pFixed(math.MaxUint32), log1pFixed(features.MaxCount); got != want {
		t.Fatalf("not clamped: %v vs %v", got, want)
	}
}

// TestLog1pKernel checks the AVX-512 kernels' log1p method, emulated step by step in Go with
// the same float32 roundings and fused multiply-adds, against math.Log1p for every count.
func TestLog1pKernel(t *testing.T) {
	k := newKernel16()
	k.initConsts()
	fma := func(a, b, c float32) float32 { return float32(math.FMA(float64(a), float64(b), float64(c))) }
	worst := 0.0
	for v := 1; v <= features.MaxCount; v++ {
		w := float32(v + features.FixedOne)
		bits := math.Float32bits(w)
		e := float32(int(bits>>23) - 127)
		m := math.Float32frombits(bits&(1<<23-1) | 127<<23)
		i := bits >> 18 & 31
		z := fma(e-k.c.sixteen, k.c.ln2, k.lnc[i])
		r := fma(m, k.inv[i], k.c.negOne)
		q := fma(r, k.c.q[1], k.c.q[0])
		got := float64(fma(r*r, q, z+r))
		want := math.Log1p(float64(v) / features.FixedOne)
		worst = max(worst, math.Abs(got-want)/want)
	}
	t.Logf("worst relative error %.3g", worst)
	if worst > 1e-5 {
		t.Fatalf("worst relative error %g", worst)
	}
}

// TestKernel16Layout checks the offsets that kernel_amd64.s uses.
func TestKernel16Layout(t *testing.T) {
	var k kernel16
	for _, c := range []struct {
		name      string
		got, want uintptr
	}{
		{"b1", unsafe.Offsetof(k.b1), k16B1},
		{"w2", unsafe.Offsetof(k.w2), k16W2},
		{"b2", unsafe.Offsetof(k.b2), k16B2},
		{"w2e", unsafe.Offsetof(k.w2e), k16W2e},
		{"b2e", unsafe.Offsetof(k.b2e), k16B2e},
		{"lnc", unsafe.Offsetof(k.lnc), k16Lnc},
		{"inv", unsafe.Offsetof(k.inv), k16Inv},
		{"c", unsafe.Offsetof(k.c), k16C},
		{"iota", unsafe.Offsetof(k.iota), k16Iota},
		{"c.thirtyTwo", k16C + unsafe.Offsetof(k.c.thirtyTwo), 4724},
		{"c.q", k16C + unsafe.Offsetof(k.c.q), 4692},
		{"c.exp2", k16C + unsafe.Offsetof(k.c.exp2), 4700},
	} {
		if c.got != c.want {
			t.Errorf("kernel16.%s at %d, the assembly expects %d", c.name, c.got, c.want)
		}
	}
}

func TestPredictAllocs(t *testing.T) {
	paths(t, func(t *testing.T) {
		for _, hidden := range []int{16, 7} {
			p := NewPredictor(testModel(rand.New(rand.NewPCG(1, 2)), hidden))
			in := randomInput(rand.New(rand.NewPCG(3, 4)), 12)
			var sink float32
			var keep bool
			if n := testing.AllocsPerRun(100, func() {
				sink += p.Predict(in) + p.Logit(in)
				keep = p.KeepLocal(in)
			}); n != 0 {
				t.Fatalf("hidden %d: %v allocations per call", hidden, n)
			}
			_, _ = sink, keep
		}
	})
}

func benchPredict(b *testing.B, nonzero int) {
	p := NewPredictor(testModel(rand.New(rand.NewPCG(1, 2)), DefaultHidden))
	rng := rand.New(rand.NewPCG(5, 6))
	// A few inputs, cycled, so that branch predictors cannot learn one.
	var ins [64]*[features.NumInputs]uint32
	for i := range ins {
		ins[i] = randomInput(rng, nonzero)
	}
	b.ReportAllocs()
	var sink float32
	i := 0
	for b.Loop() {
		sink += p.Predict(ins[i%len(ins)])
		i++
	}
	_ = sink
}

// BenchmarkPredict: a realistic task, 12 of 64 buckets nonzero; input normalisation included.
func BenchmarkPredict(b *testing.B) { benchPredict(b, 12) }

// BenchmarkPredictDense: every bucket nonzero.
func BenchmarkPredictDense(b *testing.B) { benchPredict(b, 64) }

func BenchmarkKeepLocal(b *testing.B) {
	p := NewPredictor(testModel(rand.New(rand.NewPCG(1, 2)), DefaultHidden))
	in := randomInput(rand.New(rand.NewPCG(5, 6)), 12)
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		if p.KeepLocal(in) {
			n++
		}
	}
}

func BenchmarkPredictGo(b *testing.B) {
	defer useKernel("go")()
	b.Run("sparse", func(b *testing.B) { benchPredict(b, 12) })
	b.Run("dense", func(b *testing.B) { benchPredict(b, 64) })
}

// BenchmarkPredictKernels: every path this machine has, side by side, for 3, 12 and 64
// nonzero counts of 64.
func BenchmarkPredictKernels(b *testing.B) {
	for _, k := range availableKernels() {
		if k == "go" {
			continue
		}
		b.Run(k, func(b *testing.B) {
			defer useKernel(k)()
			for _, nz := range []int{3, 12, 64} {
				b.Run(fmt.Sprintf("nonzero-%d", nz), func(b *testing.B) { benchPredict(b, nz) })
			}
		})
	}
}

func BenchmarkReference(b *testing.B) {
	m := testModel(rand.New(rand.NewPCG(1, 2)), DefaultHidden)
	in := randomInput(rand.New(rand.NewPCG(5, 6)), 12)
	x := make([]float64, 64)
	b.ReportAllocs()
	for b.Loop() {
		m.Normalize(in, x)
		m.Forward(x)
	}
}

func TestSigmoid32(t *testing.T) {
	sigmoids := map[string]func(float32) float32{"sigmoid32": sigmoid32}
	// The assembly kernels' tail, fed through a network whose output is its bias alone.
	k := newKernel16()
	k.initConsts()
	var zero [features.NumBuckets]uint32
	if hasAVX512() {
		sigmoids["prob16AVX512"] = func(z float32) float32 {
			k.b2e[0] = float32(-math.Log2E * float64(z))
			return prob16AVX512(&zero, k)
		}
	}
	if hasAVX512() && hasVBMI2() {
		sigmoids["prob16VBMI2"] = func(z float32) float32 {
			k.b2e[0] = float32(-math.Log2E * float64(z))
			return prob16VBMI2(&zero, k)
		}
	}
	for name, sigmoid := range sigmoids {
		worst := 0.0
		for z := -100.0; z <= 100; z += 1.0 / 1024 {
			want := 1 / (1 + math.Exp(-float64(float32(z))))
			got := float64(sigmoid(float32(z)))
			if math.IsNaN(got) || got < 0 || got > 1 {
				t.Fatalf("%s(%v) = %v", name, z, got)
			}
			if want > 1e-37 {
				worst = max(worst, math.Abs(got-want)/want)
			}
		}
		t.Logf("%s: worst relative error %.3g", name, worst)
		if worst > 1e-5 {
			t.Fatalf("%s: worst relative error %g", name, worst)
		}
		if sigmoid(float32(math.Inf(1))) != 1 || sigmoid(float32(math.Inf(-1))) > 1e-37 {
			t.Fatalf("%s at infinities", name)
		}
	}
}
