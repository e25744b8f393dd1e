package sched

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"math/big"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/mlsched/mlsched/bpf"
	"github.com/mlsched/mlsched/features"
	"github.com/mlsched/mlsched/model"
)

// A synthetic stream, as model/online_test.go's: every bucket nonzero with probability 1/4
// (uniform up to 6.0), buckets 9 and 20 always (uniform up to 4.0); a rule on the counts
// gives the label, flipped with probability noise.
func adaptSample(rng *rand.Rand, bucket int, noise float64, in *[features.NumInputs]uint32) bool {
	*in = [features.NumInputs]uint32{}
	for j := range features.Counts(in) {
		in[j] = 0
		if rng.IntN(4) == 0 {
			in[j] = uint32(1 + rng.IntN(6*features.FixedOne))
		}
	}
	in[9] = uint32(1 + rng.IntN(4*features.FixedOne))
	in[20] = uint32(1 + rng.IntN(4*features.FixedOne))
	y := bucket >= 0 && in[bucket] > 2*features.FixedOne
	if rng.Float64() < noise {
		y = !y
	}
	return y
}

var (
	adaptBaseOnce  sync.Once
	adaptBaseModel *model.Model
)

// adaptBase is a model of the rule "bucket 9 > 2.0" (normalisation fitted on the stream, then
// trained by the learner itself), with `hidden` units: the active net the tests start from.
func adaptBase(t testing.TB) *model.Model {
	t.Helper()
	adaptBaseOnce.Do(func() {
		rng := rand.New(rand.NewPCG(11, 12))
		const hidden = 8
		m := model.New(hidden, 1_000_000)
		var in [features.NumInputs]uint32
		var sum, sum2 [features.NumInputs]float64
		const nfit = 20000
		for range nfit {
			adaptSample(rng, 9, 0, &in)
			for j, v := range in {
				x := model.InputValue(j, v)
				sum[j] += x
				sum2[j] += x * x
			}
		}
		for j := range m.Mean {
			mu := sum[j] / nfit
			m.Mean[j] = float32(mu)
			m.Std[j] = float32(math.Sqrt(max(sum2[j]/nfit-mu*mu, 1e-6)))
		}
		lim1, lim2 := math.Sqrt(6.0/model.NumInputs), math.Sqrt(6.0/(hidden+1))
		for i := range m.W1 {
			m.W1[i] = float32((2*rng.Float64() - 1) * lim1)
		}
		for k := range m.W2 {
			m.W2[k] = float32((2*rng.Float64() - 1) * lim2)
		}
		m.Meta.Data = model.DataSummary{Samples: 1000, Positives: 500, Traces: []string{"synthetic"}}
		m.Meta.CreatedUnixNs = 1_760_000_000_000_000_000
		m.Meta.Notes = map[string]string{"trainer": "adapt_test"}
		l, err := model.NewLearner(m, model.LearnerConfig{LearnRate: 0.05, ClipNorm: 10, PosRateSamples: 4096})
		if err != nil {
			panic(err)
		}
		for range 60000 {
			y := adaptSample(rng, 9, 0.02, &in)
			l.Learn(&in, y)
		}
		adaptBaseModel = l.Model()
	})
	if adaptBaseModel == nil {
		t.Fatal("no synthetic base model")
	}
	return adaptBaseModel
}

// testLearnRate is the learner's step on the synthetic streams (unless a test sets its own):
// they change the rule and expect the adapter to follow within seconds of stream time, ten
// times as fast as the default step, chosen on real programs, would.
const testLearnRate = 0.01

// testAdapter is an adapter on the stream's own clock, logging to the test.
func testAdapter(t testing.TB, m *model.Model, cfg AdaptConfig) (*Adapter, *[]SliceResult) {
	t.Helper()
	if cfg.Learner == (model.LearnerConfig{}) {
		cfg.Learner = model.DefaultLearnerConfig()
		cfg.Learner.LearnRate = testLearnRate
	}
	var res []SliceResult
	cfg.OnSlice = func(r SliceResult) { res = append(res, r) }
	if cfg.Log == nil {
		cfg.Log = io.Discard
	}
	a, err := NewAdapter(m, cfg, &Stats{})
	if err != nil {
		t.Fatal(err)
	}
	a.clock = nil
	return a, &res
}

// feedOne hands the adapter one explored outcome as the Decider does, the active net's
// verdict computed as BPF would (the active kernel form), and drains it.
func feedOne(a *Adapter, in *[features.NumInputs]uint32, label bool, wakeNs uint64) {
	if !a.admit(wakeNs) {
		return
	}
	r := a.reserve()
	if r == nil {
		return
	}
	flags := uint8(features.WakeVerdict | features.WakeExplore)
	if a.activeKF.KeepLocal(in) {
		flags |= features.WakeKeep
	}
	r.feats, r.wakeNs, r.tsNs, r.flags, r.label = *in, wakeNs, wakeNs+500_000, flags, label
	a.commit()
	a.Drain()
}

// feedStream feeds the adapter n outcomes of the rule on bucket (label noise 5%) at 10,000
// outcomes/s of stream time from 1 s.
func feedStream(a *Adapter, rng *rand.Rand, bucket, n int) {
	var in [features.NumInputs]uint32
	ts := uint64(1e9)
	for range n {
		y := adaptSample(rng, bucket, 0.05, &in)
		feedOne(a, &in, y, ts)
		ts += 100_000
	}
}

// binomTail is P(Bin(m, 1/2) >= b), exactly (big rationals): signTail's reference.
func binomTail(b, c int) float64 {
	m := b + c
	if b <= 0 {
		return 1
	}
	sum, term := new(big.Int), new(big.Int).Binomial(int64(m), int64(b))
	for k := b; k <= m; k++ { // term = C(m, k)
		sum.Add(sum, term)
		term.Mul(term, big.NewInt(int64(m-k)))
		term.Quo(term, big.NewInt(int64(k+1)))
	}
	p, _ := new(big.Rat).SetFrac(sum, new(big.Int).Lsh(big.NewInt(1), uint(m))).Float64()
	return p
}

// checkDecision recomputes a slice's promotion test from its counts with the exact reference
// and fails unless the adapter decided the same: no promotion without the evidence.
func checkDecision(t *testing.T, r SliceResult, alpha, minGain float64) {
	t.Helper()
	if r.Comparison == 0 {
		if r.Promoted || r.Pass {
			t.Errorf("%s: promoted without a candidate scored", r)
		}
		return
	}
	aj := alpha / float64(r.Comparison*(r.Comparison+1))
	pA, pK, pM := binomTail(r.B, r.C), binomTail(r.KeepB, r.KeepC), binomTail(r.MigB, r.MigC)
	for _, p := range [][2]float64{{pA, r.PActive}, {pK, r.PKeep}, {pM, r.PMig}} {
		if math.Abs(p[0]-p[1]) > 1e-9*max(p[0], 1e-300)+1e-300 && math.Abs(p[0]-p[1]) > 1e-12 {
			t.Errorf("%s: p-value %.6g, exact %.6g", r, p[1], p[0])
		}
	}
	gainA := float64(r.CandRight-r.ActiveRight) / float64(r.N)
	gainM := r.CandidateAccuracy() - r.MajorityAccuracy()
	want := max(pA, pK, pM) <= aj && gainA >= minGain && gainM >= minGain
	if r.Pass != want || r.Promoted != want {
		t.Errorf("%s: pass %v promoted %v, the evidence says %v (alpha_j %.3g, gains %.4f %.4f)", r, r.Pass, r.Promoted, want, aj, gainA, gainM)
	}
	if r.B+r.C+(r.N-r.B-r.C) != r.N || r.KeepB+r.KeepC+r.MigB+r.MigC != r.N {
		t.Errorf("%s: pairs do not add up to %d", r, r.N)
	}
}

func TestSignTail(t *testing.T) {
	for m := 0; m <= 70; m++ {
		for b := 0; b <= m; b++ {
			got, want := signTail(b, m-b), binomTail(b, m-b)
			if math.Abs(got-want) > 1e-12 && math.Abs(got-want) > 1e-9*want {
				t.Fatalf("signTail(%d, %d) = %.17g, exact %.17g", b, m-b, got, want)
			}
		}
	}
	for _, c := range []struct{ b, c int }{{5000, 5000}, {5200, 4800}, {4000, 6000}, {6000, 4000}, {20000, 0}, {1, 19999}, {10400, 9600}} {
		got, want := signTail(c.b, c.c), binomTail(c.b, c.c)
		if math.Abs(got-want) > 1e-9*max(want, 1e-300) && math.Abs(got-want) > 1e-13 {
			t.Errorf("signTail(%d, %d) = %.17g, exact %.17g", c.b, c.c, got, want)
		}
	}
	if s := alphaSpent(1, 1) + alphaSpent(1, 2) + alphaSpent(1, 3); math.Abs(s-0.75) > 1e-15 {
		t.Errorf("alpha spent over three comparisons %v, want 3/4", s)
	}
	if allocs := testing.AllocsPerRun(100, func() { signTail(20000, 19000) }); allocs != 0 {
		t.Errorf("signTail: %v allocs", allocs)
	}
}

// The live net is wrong on the stream's rule (bucket 20, it knows bucket 9) and the learner can
// fix it: candidates are promoted, each only on the evidence the rule asks for, never on the
// first slice (no candidate has been scored), and after them the active net beats the majority
// class on later slices. The promoted net is in BPF's image (the next generation) and the
// model file, with its provenance.
func TestAdaptPromotes(t *testing.T) {
	base := adaptBase(t)
	dir := t.TempDir()
	save := filepath.Join(dir, "adapted.bin")
	var log bytes.Buffer
	a, res := testAdapter(t, base, AdaptConfig{Budget: 1e9, SliceOutcomes: 1000, SliceTime: -1, SaveModel: save, Log: &log,
		Source: "file base.bin", Explore: 0.02})
	var nets [][]byte
	a.attach(func(b []byte) error { nets = append(nets, append([]byte(nil), b...)); return nil })
	feedStream(a, rand.New(rand.NewPCG(5, 6)), 20, 16000)
	if len(*res) < 15 {
		t.Fatalf("%d slices closed, want 16", len(*res))
	}
	first := -1
	for i, r := range *res {
		t.Logf("%s", r)
		checkDecision(t, r, DefaultAdaptAlpha, DefaultAdaptMinGain)
		if r.Promoted && first < 0 {
			first = i
		}
	}
	if (*res)[0].Comparison != 0 || (*res)[0].Promoted {
		t.Errorf("first slice: %s; want no candidate scored", (*res)[0])
	}
	if first < 0 {
		t.Fatal("no promotion on a stream the live net gets wrong")
	}
	// After the first promotion, the active net (what BPF runs) beats the majority class on
	// every later slice, by a clear margin (0.1) once a second promotion has come.
	promotions := 0
	for _, r := range (*res)[first+1:] {
		gain := 0.05
		if promotions > 0 {
			gain = 0.1
		}
		if r.ActiveAccuracy() < r.MajorityAccuracy()+gain {
			t.Errorf("after %d promotions: %s; want the active net %.2f above the majority", promotions+1, r, gain)
		}
		if r.Promoted {
			promotions++
		}
	}
	p := a.Promotions()
	if p == 0 || len(nets) != p || a.stats.Promotions.Load() != uint64(p) {
		t.Fatalf("%d promotions, %d nets written to BPF", p, len(nets))
	}
	// Each net written is the next generation of the candidate's kernel form; the last one is
	// the active model's.
	for i, b := range nets {
		if g := binary.LittleEndian.Uint64(b[8:]); g != uint64(i+1) {
			t.Errorf("net %d has generation %d, want %d", i, g, i+1)
		}
	}
	kf, err := model.NewKernelForm(a.Active())
	if err != nil {
		t.Fatal(err)
	}
	kf.Generation = uint64(p)
	if img, _ := kf.MarshalBinary(); !bytes.Equal(img, nets[p-1]) {
		t.Error("the last net in BPF is not the active model's kernel form")
	}
	// The model file: the active model, valid, with its provenance; nothing else left behind.
	saved, err := model.Load(save)
	if err != nil {
		t.Fatal(err)
	}
	if !equalWeights(saved, a.Active()) {
		t.Error("the saved model is not the active one")
	}
	n := saved.Meta.Notes
	if n[NoteAdaptPromotion] != fmt.Sprint(p) || !strings.Contains(n[NoteAdaptEvidence], "promoted") ||
		!strings.Contains(n[NoteAdaptStart], "file base.bin") || n[model.NoteOnlineLearned] == "" || n["trainer"] != "adapt_test" {
		t.Errorf("notes %v", n)
	}
	a.Close()
	if _, err := model.Load(save); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("the model directory holds %d entries, want the model file alone", len(ents))
	}
	if !strings.Contains(log.String(), "adapt: promotion 1:") {
		t.Errorf("log %q", log.String())
	}
	if a.stats.Learned.Load() != 16000 || a.stats.AdaptTaken.Load() != 16000 {
		t.Errorf("learned %d, taken %d, want 16000", a.stats.Learned.Load(), a.stats.AdaptTaken.Load())
	}
	if c := a.stats.CandidateAccuracy(); math.IsNaN(c) || c < 0.8 {
		t.Errorf("candidate accuracy %v", c)
	}
}

// The candidate's threshold is re-chosen on the learned outcomes (AdaptConfig.Learner's
// ThresholdWindow, --adapt-threshold accuracy): with a learning rate of 0 the weights never
// move, so on a stream of the base's own rule with its threshold set far too low (0.02),
// only the re-chosen threshold can win, and does, back near the base's own;
// with the threshold kept the candidate equals the active net and nothing is promoted.
func TestAdaptRechoosesThreshold(t *testing.T) {
	good := adaptBase(t)
	bad, err := cloneModel(good)
	if err != nil {
		t.Fatal(err)
	}
	bad.Threshold = 0.02
	for _, window := range []int{0, 1000} {
		lc := model.DefaultLearnerConfig()
		lc.LearnRate, lc.ThresholdWindow, lc.ThresholdFor = 0, window, model.ThresholdAccuracy
		a, res := testAdapter(t, bad, AdaptConfig{Budget: 1e9, SliceOutcomes: 1000, SliceTime: -1, Learner: lc})
		a.attach(func([]byte) error { return nil })
		feedStream(a, rand.New(rand.NewPCG(8, 9)), 9, 6000)
		for _, r := range *res {
			t.Logf("window %d: %s", window, r)
		}
		thr := a.Active().Threshold
		if window == 0 {
			if a.Promotions() != 0 || thr != bad.Threshold {
				t.Errorf("threshold kept, learning rate 0: %d promotions, threshold %v; want none and %v", a.Promotions(), thr, bad.Threshold)
			}
			continue
		}
		if a.Promotions() == 0 {
			t.Fatal("no promotion of a re-chosen threshold over one far too low")
		}
		if math.Abs(float64(thr-good.Threshold)) > 0.25 || !equalWeightsOnly(a.Active(), bad) {
			t.Errorf("promoted threshold %v (base %v, bad %v), weights changed %v; want near the base's, weights unchanged",
				thr, good.Threshold, bad.Threshold, !equalWeightsOnly(a.Active(), bad))
		}
		last := (*res)[len(*res)-1]
		if last.ActiveAccuracy() < last.MajorityAccuracy()+0.1 {
			t.Errorf("after the promotion: %s; want the active net 0.1 above the majority", last)
		}
	}
}

// equalWeightsOnly compares the nets' weights, not their thresholds.
func equalWeightsOnly(a, b *model.Model) bool {
	c := *a
	c.Threshold = b.Threshold
	return equalWeights(&c, b)
}

func equalWeights(a, b *model.Model) bool {
	if a.Hidden != b.Hidden || a.B2 != b.B2 || a.Threshold != b.Threshold {
		return false
	}
	for i := range a.W1 {
		if a.W1[i] != b.W1[i] {
			return false
		}
	}
	for k := range a.W2 {
		if a.W2[k] != b.W2[k] || a.B1[k] != b.B1[k] {
			return false
		}
	}
	return true
}

// With slices too small to show it, a real gain is not promoted at once: the evidence has to
// reach alpha_j first (on 20 outcomes the sign test reaches alpha_1 = 0.005 only with at least
// 8 discordant pairs all in the candidate's favour).
func TestAdaptWaitsForEvidence(t *testing.T) {
	base := adaptBase(t)
	a, res := testAdapter(t, base, AdaptConfig{Budget: 1e9, SliceOutcomes: 20, SliceTime: -1})
	feedStream(a, rand.New(rand.NewPCG(7, 8)), 20, 400)
	for _, r := range *res {
		checkDecision(t, r, DefaultAdaptAlpha, DefaultAdaptMinGain)
		if r.Promoted && max(r.PActive, r.PKeep, r.PMig) > r.AlphaJ {
			t.Errorf("promoted on p %v > alpha_j %v", max(r.PActive, r.PKeep, r.PMig), r.AlphaJ)
		}
	}
	// The slice test itself: a candidate right on 14 of 20 discordant pairs (p = 0.058) is
	// not promoted at the first comparison (alpha_1 = 0.005); on 19 of 20 (p = 2.0e-5) it is.
	var r SliceResult
	s := sliceCounts{n: 100, pos: 50, candRight: 80, actRight: 74, b: 14, c: 6, candKeep: 50, candKeepPos: 40}
	promotionTest(&s, 1, DefaultAdaptAlpha, DefaultAdaptMinGain, &r)
	if r.Pass {
		t.Errorf("14:6 passed: %s", r)
	}
	s = sliceCounts{n: 100, pos: 50, candRight: 80, actRight: 62, b: 19, c: 1, candKeep: 50, candKeepPos: 40}
	promotionTest(&s, 1, DefaultAdaptAlpha, DefaultAdaptMinGain, &r)
	if !r.Pass {
		t.Errorf("19:1 did not pass: %s", r)
	}
	// The same evidence at the 20th comparison since the last promotion (alpha_20 = 2.4e-5)
	// is just enough; at the 30th (1.1e-5) it is not.
	promotionTest(&s, 20, DefaultAdaptAlpha, DefaultAdaptMinGain, &r)
	if !r.Pass {
		t.Errorf("19:1 did not pass at comparison 20: %s", r)
	}
	promotionTest(&s, 30, DefaultAdaptAlpha, DefaultAdaptMinGain, &r)
	if r.Pass {
		t.Errorf("19:1 passed at comparison 30: %s", r)
	}
	// A gain below MinGain is not promoted however significant (a huge slice).
	s = sliceCounts{n: 1_000_000, pos: 500_000, candRight: 900_000, actRight: 896_000, b: 6000, c: 2000, candKeep: 500_000, candKeepPos: 450_000}
	promotionTest(&s, 1, DefaultAdaptAlpha, DefaultAdaptMinGain, &r)
	if r.Pass || r.PActive > 1e-100 {
		t.Errorf("a 0.4-point gain on a million outcomes: %s", r)
	}
}

// The promotion test's level, simulated on slices where nothing is better than the active net
// (a million-odd outcomes, no learner): the chance of any promotion over a run of comparisons
// stays under alpha. Two nulls: the candidate exactly as good as the active net and both far
// better than the majority (only the test against the active net protects), and labels
// independent of both verdicts (nothing beats the majority).
func TestPromotionTestLevel(t *testing.T) {
	const alpha, comparisons, n = 0.2, 10, 300
	runs := 4000
	if testing.Short() {
		runs = 1000
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for _, null := range []string{"equal", "noise"} {
		promotedRuns, rejects, tests := 0, 0, 0
		for range runs {
			promoted := false
			for j := 1; j <= comparisons && !promoted; j++ {
				var s sliceCounts
				for range n {
					y := rng.IntN(2) == 0
					var cand, act bool
					switch null {
					case "equal": // each right 80% of the time, independently
						cand, act = y == (rng.Float64() < 0.8), y == (rng.Float64() < 0.8)
					case "noise":
						cand, act = rng.IntN(2) == 0, rng.IntN(2) == 0
					}
					s.add(cand, act, y)
				}
				var r SliceResult
				promotionTest(&s, j, alpha, 0, &r)
				promoted = r.Pass
				tests++
				if r.PActive <= 0.05 {
					rejects++
				}
			}
			if promoted {
				promotedRuns++
			}
		}
		rate := float64(promotedRuns) / float64(runs)
		bound := alpha * comparisons / (comparisons + 1)
		sigma := math.Sqrt(bound * (1 - bound) / float64(runs))
		t.Logf("%s: %d of %d runs of %d comparisons promoted (%.4f; alpha spent %.4f); the sign test alone at 0.05 rejected %.4f of %d",
			null, promotedRuns, runs, comparisons, rate, bound, float64(rejects)/float64(tests), tests)
		if rate > bound+3*sigma {
			t.Errorf("%s: false promotions in %.4f of runs, above the %.4f spent", null, rate, bound)
		}
		if r := float64(rejects) / float64(tests); r > 0.05+3*math.Sqrt(0.05*0.95/float64(tests)) {
			t.Errorf("%s: the sign test at 0.05 rejected %.4f", null, r)
		}
	}
	// Power, for scale: a candidate right 85% against the active's 80% is promoted at the
	// first comparison on slices of 2048.
	hits := 0
	for range 200 {
		var s sliceCounts
		for range 2048 {
			y := rng.IntN(2) == 0
			s.add(y == (rng.Float64() < 0.85), y == (rng.Float64() < 0.8), y)
		}
		var r SliceResult
		promotionTest(&s, 1, DefaultAdaptAlpha, DefaultAdaptMinGain, &r)
		if r.Pass {
			hits++
		}
	}
	t.Logf("power: +5 points at n=2048, first comparison: %d of 200", hits)
	if hits < 150 {
		t.Errorf("a 5-point gain on 2048 outcomes promoted in %d of 200 slices", hits)
	}
}

// End to end, with the learner: a stream whose labels the features do not predict (nothing can
// beat the majority class, and no candidate the active net), over many seeds and slices:
// promotions stay rare (alpha 0.01 per run: at most one run in a hundred, expected).
func TestAdaptNoFalsePromotions(t *testing.T) {
	base := adaptBase(t)
	seeds, slices := 24, 8
	if testing.Short() {
		seeds = 6
	}
	var mu sync.Mutex
	promotedSeeds, comparisons := 0, 0
	var wg sync.WaitGroup
	sem := make(chan struct{}, max(runtime.GOMAXPROCS(0), 1))
	for seed := range seeds {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			a, res := testAdapter(t, base, AdaptConfig{Budget: 1e9, SliceOutcomes: 400, SliceTime: -1})
			rng := rand.New(rand.NewPCG(uint64(seed), 77))
			var in [features.NumInputs]uint32
			ts := uint64(1e9)
			pos := 0.5 + 0.2*float64(seed%2) // balanced, or a majority class of 0.7
			for range slices * 400 {
				adaptSample(rng, -1, 0, &in)
				feedOne(a, &in, rng.Float64() < pos, ts)
				ts += 100_000
			}
			mu.Lock()
			defer mu.Unlock()
			for _, r := range *res {
				if r.Comparison > 0 {
					comparisons++
				}
			}
			if a.Promotions() > 0 {
				promotedSeeds++
				for _, r := range *res {
					if r.Promoted {
						t.Logf("seed %d: %s", seed, r)
					}
				}
			}
		}()
	}
	wg.Wait()
	t.Logf("null stream: %d of %d seeds promoted, over %d comparisons", promotedSeeds, seeds, comparisons)
	if promotedSeeds > 1 {
		t.Errorf("%d of %d seeds promoted a candidate on labels the features do not predict", promotedSeeds, seeds)
	}
}

// The budget: at 50,000 usable outcomes per second of stream time the adapter takes (and
// learns from) at most Budget per second, plus the burst; the rest are counted as skipped.
func TestAdaptBudget(t *testing.T) {
	base := adaptBase(t)
	a, _ := testAdapter(t, base, AdaptConfig{SliceOutcomes: 1 << 30})
	rng := rand.New(rand.NewPCG(9, 10))
	var in [features.NumInputs]uint32
	const rate, seconds = 50000, 4
	ts := uint64(1e9)
	for range rate * seconds {
		y := adaptSample(rng, 9, 0.05, &in)
		feedOne(a, &in, y, ts)
		ts += 1e9 / rate
	}
	learned := a.stats.Learned.Load()
	limit := DefaultAdaptBudget*seconds + DefaultAdaptBudget*adaptBurstNs/1e9 + 1
	t.Logf("learned %d of %d in %d s of stream (budget %d/s), skipped %d", learned, rate*seconds, seconds, DefaultAdaptBudget, a.stats.AdaptSkipped.Load())
	if learned > uint64(limit) || learned < uint64(0.97*DefaultAdaptBudget*seconds) {
		t.Errorf("learned %d, want at most %.0f and about %d", learned, limit, DefaultAdaptBudget*seconds)
	}
	if learned+a.stats.AdaptSkipped.Load() != rate*seconds {
		t.Errorf("learned %d + skipped %d != %d", learned, a.stats.AdaptSkipped.Load(), rate*seconds)
	}
}

// Through the Decider: only the outcomes whose action did not follow the verdict reach the
// adapter and (with exploration) the guard; explored ones are counted; an outcome from
// another CPU never reaches either; the label's time is the wakeup's plus min(leave, H).
func TestDeciderFeedsAdapter(t *testing.T) {
	base := adaptBase(t)
	st := &Stats{}
	a, err := NewAdapter(base, AdaptConfig{Budget: 1e9, SliceOutcomes: 1 << 30}, st)
	if err != nil {
		t.Fatal(err)
	}
	g := NewGuard(1000, st)
	d := NewDecider(base, g, st)
	d.UnbiasedGuard = true
	d.SetAdapter(a)
	w := &fakeWriter{}
	rng := rand.New(rand.NewPCG(3, 4))
	var in [features.NumInputs]uint32
	explored := 0
	for seq := uint64(1); seq <= 400; seq++ {
		adaptSample(rng, 9, 0, &in)
		ev := rawWake(seq, 10, 1, 4, &in)
		ev[2] = features.WakeNoDecision | features.WakeVerdict
		if seq%4 == 0 {
			ev[2] |= features.WakeExplore
			explored++
		}
		if seq%3 == 0 {
			ev[2] |= features.WakeBase // a migrate verdict that found no idle CPU: not unbiased
		}
		handle(ev, d, w)
		cpu := uint16(1)
		if seq == 8 {
			cpu = 2 // misattributed
		}
		handle(rawOutcome(seq, cpu, 10, true, 300_000), d, w)
	}
	if got := a.head.Load(); got != uint64(explored-1) || st.ExploreOutcomes.Load() != uint64(explored-1) {
		t.Errorf("%d records, %d explored outcomes; want %d", got, st.ExploreOutcomes.Load(), explored-1)
	}
	if g.n != explored-1 {
		t.Errorf("the guard scored %d outcomes, want the %d explored", g.n, explored-1)
	}
	if _, maj := g.Accuracy(); st.LiveMajority() != maj || maj != 1 { // every label 1
		t.Errorf("live majority %v, the guard's %v", st.LiveMajority(), maj)
	}
	r := &a.ring[0]
	if r.wakeNs != 4000 || r.tsNs != 4000+300_000 || !r.label || r.flags&features.WakeExplore == 0 {
		t.Errorf("first record: wake %d ts %d label %v flags %#x", r.wakeNs, r.tsNs, r.label, r.flags)
	}
	// While the guard holds the base queue, base outcomes are unbiased too.
	g.tripped = true
	before := a.head.Load()
	ev := rawWake(1000, 10, 1, 4, &in)
	ev[2] = features.WakeNoDecision | features.WakeVerdict | features.WakeBase
	handle(ev, d, w)
	handle(rawOutcome(1000, 1, 10, false, 5_000_000), d, w)
	if a.head.Load() != before+1 || a.ring[before%adaptRingLen].tsNs != 1000*1000+1_000_000 {
		t.Errorf("a base outcome while the guard holds did not reach the adapter (or its time is not wake + H)")
	}
	// No allocation per event, adapter attached (its ring full or not).
	g.tripped = false
	ev2 := benchExploredEvents(512)
	i := 0
	allocs := testing.AllocsPerRun(4000, func() {
		handle(ev2[i%len(ev2)], d, w)
		i++
		if i%64 == 0 {
			a.Drain()
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocs per event with the adapter", allocs)
	}
}

// benchExploredEvents are n explored wake events, each followed by its outcome.
func benchExploredEvents(n int) [][]byte {
	ev := benchEvents(n)
	for i := 0; i < len(ev); i += 2 {
		ev[i][2] = features.WakeNoDecision | features.WakeVerdict | features.WakeExplore
	}
	return ev
}

// Processing an outcome (score, learn) allocates nothing; only a slice's end does (the
// snapshot and kernel form of the next candidate).
func TestAdaptNoAllocs(t *testing.T) {
	base := adaptBase(t)
	a, _ := testAdapter(t, base, AdaptConfig{Budget: 1e9, SliceOutcomes: 1 << 30})
	a.freeze() // a candidate to score
	rng := rand.New(rand.NewPCG(1, 1))
	var in [features.NumInputs]uint32
	ts := uint64(1e9)
	allocs := testing.AllocsPerRun(2000, func() {
		y := adaptSample(rng, 9, 0.05, &in)
		feedOne(a, &in, y, ts)
		ts += 20_000
	})
	if allocs != 0 || a.slice.n == 0 {
		t.Errorf("%v allocs per outcome (%d scored)", allocs, a.slice.n)
	}
}

// Under --shadow the adapter learns and scores but never promotes; Close writes the starting
// model, saying so in its notes.
func TestAdaptNoPromote(t *testing.T) {
	base := adaptBase(t)
	save := filepath.Join(t.TempDir(), "m.bin")
	a, res := testAdapter(t, base, AdaptConfig{Budget: 1e9, SliceOutcomes: 1000, SliceTime: -1, NoPromote: true, SaveModel: save})
	feedStream(a, rand.New(rand.NewPCG(5, 6)), 20, 6000)
	passed := 0
	for _, r := range *res {
		if r.Pass {
			passed++
		}
		if r.Promoted {
			t.Errorf("promoted with NoPromote: %s", r)
		}
	}
	if passed == 0 || a.Active() != base {
		t.Errorf("%d slices passed, active changed %v", passed, a.Active() != base)
	}
	a.Close()
	m, err := model.Load(save)
	if err != nil {
		t.Fatal(err)
	}
	if !equalWeights(m, base) || m.Meta.Notes[NoteAdaptPromotion] != "0" || m.Meta.Notes["trainer"] != "adapt_test" {
		t.Errorf("saved: notes %v", m.Meta.Notes)
	}
}

// The adapter's goroutine: Start drains when notified, Close stops it (after a last drain);
// its Drains' thread CPU time is measured.
func TestAdaptStartClose(t *testing.T) {
	base := adaptBase(t)
	a, err := NewAdapter(base, AdaptConfig{Budget: 1e9, SliceOutcomes: 1 << 30}, &Stats{})
	if err != nil {
		t.Fatal(err)
	}
	a.Start()
	rng := rand.New(rand.NewPCG(5, 6))
	var in [features.NumInputs]uint32
	for i := range 500 {
		y := adaptSample(rng, 9, 0, &in)
		if a.admit(uint64(i) * 1000) {
			r := a.reserve()
			r.feats, r.label, r.tsNs = in, y, uint64(i)*1000
			a.commit()
		}
		if i == 250 {
			a.notify()
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for a.stats.Learned.Load() < 251 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if l := a.stats.Learned.Load(); l < 251 {
		t.Errorf("learned %d after the notification, want at least 251", l)
	}
	a.Close() // drains the rest
	a.Close()
	if a.stats.Learned.Load() != 500 || a.stats.AdaptCPUNs.Load() == 0 {
		t.Errorf("learned %d, adapter CPU %d ns", a.stats.Learned.Load(), a.stats.AdaptCPUNs.Load())
	}
}

// The dispatch loop wakes the adapter once it has read a batch (it polls: BPF wakes nobody):
// outcomes written by a BPF program without wakeups are learned from while the loop runs, not
// only when the adapter closes.
func TestLoopKicksAdapter(t *testing.T) {
	m := testRing(t)
	base := adaptBase(t)
	// Each pair is its own wakeup (seq, time) and outcome: one writer program each.
	const pairs = 50
	rng := rand.New(rand.NewPCG(1, 2))
	var progs []*ebpf.Program
	defer func() {
		for _, p := range progs {
			p.Close()
		}
	}()
	for i := range uint64(pairs) {
		var in [features.NumInputs]uint32
		adaptSample(rng, 9, 0, &in)
		wake := rawWake(1000*(i+1), 10, 1, 4, &in)
		wake[2] = features.WakeNoDecision | features.WakeVerdict | features.WakeExplore
		progs = append(progs, noWakeupWriter(t, m, wake[:features.WakeHeaderSize+4*features.NumBuckets]),
			noWakeupWriter(t, m, rawOutcome(1000*(i+1), 1, 10, true, 300_000)))
	}
	rd, err := ringbuf.NewReader(m)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	st := &Stats{}
	a, err := NewAdapter(base, AdaptConfig{Budget: 1e9, SliceOutcomes: 1 << 30}, st)
	if err != nil {
		t.Fatal(err)
	}
	a.Start()
	defer a.Close()
	d := NewDecider(base, NewGuard(100, st), st)
	d.UnbiasedGuard = true
	d.SetAdapter(a)
	var stop atomic.Bool
	done := make(chan error, 1)
	go func() { done <- loop(rd, d, &fakeWriter{}, nil, &stop, 20*time.Millisecond) }()
	for _, p := range progs {
		if ret, err := p.Run(&ebpf.RunOptions{Data: make([]byte, 64)}); err != nil || ret != 0 {
			t.Fatalf("writer: ret %d, %v", ret, err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for st.Learned.Load() < pairs && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	stop.Store(true)
	rd.Flush()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if st.Learned.Load() != pairs || st.ExploreOutcomes.Load() != pairs {
		t.Errorf("learned %d, explored outcomes %d while the loop ran; want %d", st.Learned.Load(), st.ExploreOutcomes.Load(), pairs)
	}
}

// The CPU governor: two seconds' worth of MaxCPU to start, refilled at MaxCPU per ns of wall
// time, emptied by what each Drain took (into debt if it took more); in debt the waiting records
// are shed, not drained. End to end, under a tiny
// cap, the adapter's measured CPU stays within the cap plus one Drain.
func TestAdaptCPUGovernor(t *testing.T) {
	base := adaptBase(t)
	a, _ := testAdapter(t, base, AdaptConfig{})
	const s = uint64(time.Second)
	if !a.cpuAllowed(10 * s) {
		t.Fatal("the governor starts closed")
	}
	a.chargeCPU(45 * time.Millisecond) // 40 ms allowed, 5 ms of debt
	if a.cpuAllowed(10*s + s/10) {
		t.Errorf("allowed in debt (tokens %v ns)", a.cpuTokens)
	}
	if !a.cpuAllowed(10*s + 3*s/10) {
		t.Errorf("still closed after the debt is repaid (tokens %v ns)", a.cpuTokens)
	}
	a.cpuAllowed(100 * s)
	if a.cpuTokens != 0.02*2e9 {
		t.Errorf("after a long idle spell %v ns, want two seconds' worth, 40 ms", a.cpuTokens)
	}
	// shed drops what waits, counted.
	var in [features.NumInputs]uint32
	for range 10 {
		a.reserve().feats = in
		a.commit()
	}
	a.shed()
	if a.stats.AdaptShed.Load() != 10 || a.head.Load() != a.tail.Load() || a.stats.Learned.Load() != 0 {
		t.Errorf("shed %d, head %d tail %d, learned %d", a.stats.AdaptShed.Load(), a.head.Load(), a.tail.Load(), a.stats.Learned.Load())
	}

	st := &Stats{}
	const maxCPU = 0.001 // 1 ms of CPU per second
	g, err := NewAdapter(base, AdaptConfig{Budget: 1e9, SliceOutcomes: 1 << 30, MaxCPU: maxCPU}, st)
	if err != nil {
		t.Fatal(err)
	}
	g.Start()
	rng := rand.New(rand.NewPCG(3, 3))
	t0 := time.Now()
	pushed := 0
	for time.Since(t0) < time.Second {
		for range 200 {
			adaptSample(rng, 9, 0, &in)
			if r := g.reserve(); r != nil {
				r.feats, r.label, r.tsNs = in, rng.IntN(2) == 0, uint64(pushed)*1000
				g.commit()
				pushed++
			}
		}
		g.notify()
		time.Sleep(10 * time.Millisecond)
	}
	g.Close()
	wall := time.Since(t0)
	cpu := time.Duration(st.AdaptCPUNs.Load())
	t.Logf("cap %.1f%%: %d pushed in %v, learned %d, shed %d, adapter CPU %v", 100*maxCPU, pushed, wall.Round(time.Millisecond), st.Learned.Load(), st.AdaptShed.Load(), cpu)
	if st.AdaptShed.Load() == 0 || st.Learned.Load()+st.AdaptShed.Load() != uint64(pushed) {
		t.Errorf("learned %d + shed %d != %d pushed, or nothing shed", st.Learned.Load(), st.AdaptShed.Load(), pushed)
	}
	// Two seconds' worth to start, MaxCPU of the wall time, and the last Drain's overshoot
	// (a Drain of at most a ring's worth: 4096 learns, ~3 ms).
	if limit := time.Duration(maxCPU*float64(cpuBurst)) + time.Duration(maxCPU*float64(wall)) + 10*time.Millisecond; cpu > limit {
		t.Errorf("adapter CPU %v over %v, above %v", cpu, wall, limit)
	}
}

// The --stats section and its absence.
func TestAdaptLine(t *testing.T) {
	st := &Stats{}
	var cur, prev bpf.SchedCounters
	if s := adaptLine(time.Second, &cur, &prev, st, 0); s != "" {
		t.Errorf("without exploration or adaptation: %q", s)
	}
	st.Explore, st.Adapt = true, true
	cur[bpf.SCKernelKeep], cur[bpf.SCSelectMigrate], cur[bpf.SCExplore] = 600, 400, 20
	st.Promotions.Store(2)
	st.Learned.Store(1234)
	st.ExploreOutcomes.Store(77)
	st.AdaptSlices.Store(5)
	st.setCandidateAccuracy(math.NaN())
	st.AdaptShed.Store(3)
	got := adaptLine(2*time.Second, &cur, &prev, st, 10*time.Millisecond)
	want := " adapt explore=2.00% xout=77 maj=- promotions=2 learned=1234 shed=3 slices=5 cand=- act=- smaj=- acpu=0.50%"
	if got != want {
		t.Errorf("adaptLine = %q, want %q", got, want)
	}
	st.setCandidateAccuracy(0.8125)
	st.setSliceActiveAccuracy(0.75)
	st.setSliceMajority(0.625)
	st.setLiveMajority(0.7)
	if got := adaptLine(time.Second, &cur, &prev, st, 0); !strings.Contains(got, "cand=0.812 act=0.750 smaj=0.625") || !strings.Contains(got, "maj=0.700") {
		t.Errorf("adaptLine = %q", got)
	}
}

// BenchmarkAdaptOutcome is the whole cost of adaptation per usable outcome, at 50,000 of them
// per second of stream time with the default configuration (admission 15,000/s, slices of
// >= 2048 outcomes and 10 s, the default model): the loop's part (admission, the feature copy
// into the side table, the ring record) and the adapter's (score the candidate's kernel form,
// learn, close slices: snapshot and kernel form), on one thread. core%@50k is the share of one
// core at that rate; the bound is 2%.
func BenchmarkAdaptOutcome(b *testing.B) {
	m, err := model.Default()
	if err != nil {
		b.Fatal(err)
	}
	st := &Stats{}
	// The learner as `run --adapt` configures it by default: the threshold re-chosen for
	// accuracy on a window of learned outcomes.
	lc := model.DefaultLearnerConfig()
	lc.ThresholdWindow, lc.ThresholdFor = model.DefaultThresholdWindow, model.ThresholdAccuracy
	a, err := NewAdapter(m, AdaptConfig{Learner: lc}, st)
	if err != nil {
		b.Fatal(err)
	}
	a.clock = nil
	rng := rand.New(rand.NewPCG(1, 2))
	var ins [256][features.NumInputs]uint32
	for i := range ins {
		for range 12 { // a typical task's 12 nonzero counts of 64
			ins[i][rng.IntN(features.NumBuckets)] = uint32(1 + rng.IntN(8*features.FixedOne))
		}
	}
	var pend pendSample
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	b.ReportAllocs()
	cpu0 := threadCPU()
	ts, n := uint64(1e9), 0
	for ; b.Loop(); n++ {
		ts += 20_000 // 50,000/s
		in := &ins[n%len(ins)]
		if a.admit(ts) { // Decider.Wake
			pend.seq, pend.wakeNs, pend.flags, pend.feats = uint64(n), ts, features.WakeVerdict|features.WakeExplore, *in
			if r := a.reserve(); r != nil { // Decider.toAdapter
				r.feats, r.wakeNs, r.flags, r.label = pend.feats, pend.wakeNs, pend.flags, n%3 == 0
				r.tsNs = ts + 500_000
				a.commit()
			}
		}
		if n%1024 == 0 {
			a.Drain()
		}
	}
	a.Drain()
	cpu := float64(threadCPU() - cpu0)
	b.ReportMetric(cpu/float64(n), "cpu-ns/outcome")
	b.ReportMetric(100*cpu/float64(n)*50000/1e9, "core%@50k")
	b.ReportMetric(float64(st.Learned.Load())/(float64(n)/50000), "learned/s")
	b.ReportMetric(float64(st.AdaptSlices.Load()), "slices")
}

// BenchmarkDispatchAdapt is BenchmarkDispatch on explored kernel verdicts (what the loop sees
// with --infer kernel), without and with an adapter attached (drained every 64 decisions on
// the same thread, its learning included): the loop's added cost per scored outcome.
func BenchmarkDispatchAdapt(b *testing.B) {
	for _, withAdapter := range []bool{false, true} {
		name := "verdicts"
		if withAdapter {
			name = "verdicts+adapter"
		}
		b.Run(name, func(b *testing.B) {
			st := &Stats{}
			m := testModel(b, 1)
			d := NewDecider(m, NewGuard(2000, st), st)
			d.UnbiasedGuard = true
			var a *Adapter
			if withAdapter {
				var err error
				if a, err = NewAdapter(m, AdaptConfig{}, st); err != nil {
					b.Fatal(err)
				}
				a.clock = nil
				d.SetAdapter(a)
			}
			w := &fakeWriter{}
			ev := benchExploredEvents(4096)
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			cpu0 := threadCPU()
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				j := (2 * i) % len(ev)
				handle(ev[j], d, w)
				handle(ev[j+1], d, w)
				if a != nil && i%64 == 0 {
					a.Drain()
				}
			}
			b.StopTimer()
			if cpu := threadCPU() - cpu0; cpu > 0 {
				b.ReportMetric(float64(cpu)/float64(b.N), "cpu-ns/decision")
			}
		})
	}
}
