package training

import (
	"bytes"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/mlsched/mlsched/features"
)

func nearF32(a, b float32) bool { return math.Abs(float64(a-b)) < 1e-5 }

func log1pUs(ns float64) float32 { return float32(math.Log1p(ns / 1e3)) }

// One task's history by hand: the horizon rule, one update per stint, the 1/8 average, a
// censored stint, and the off-CPU gap.
func TestReconstructExtrasByHand(t *testing.T) {
	const H = 1_000_000
	vol, pre, tmo := features.OutcomeVoluntary, features.OutcomePreempted, features.OutcomeTimeout
	s := func(ts, oncpu, leave uint64, tid uint32, o features.Outcome) features.Sample {
		x := features.Sample{TsNs: ts, ROnCPUNs: oncpu, LeaveNs: leave, RTid: tid, Outcome: o}
		if o == vol {
			x.Label = 1
		}
		return x
	}
	samples := []features.Sample{
		// R=7's first stint: switched in at 10 ms, two wakeups during it, left voluntarily at
		// 10 ms + 50 µs (stint 50 µs).
		s(10_020_000, 20_000, 30_000, 7, vol), // 0
		s(10_040_000, 40_000, 10_000, 7, vol), // 1: same stint
		// Another task meanwhile.
		s(10_500_000, 5_000, 0, 9, tmo), // 2
		// 10.9 ms: nothing of R=7 is known yet (0 is known at 11.02 ms).
		s(10_900_000, 100_000, 200_000, 7, pre), // 3: stint from 10.8 ms, preempted at 11.1 ms (300 µs)
		// 11.5 ms: samples 0 and 1 known (one stint of 50 µs, voluntary); 2 known (tid 9).
		s(11_500_000, 1_000, 4_000, 7, vol), // 4: stint from 11.499 ms, 5 µs
		// 12 ms: 3 known too (300 µs, preempted).
		s(12_000_000, 2_000, 0, 7, tmo), // 5: stint from 11.998 ms, still running at 13 ms
		// 14 ms: 4 (5 µs, voluntary) and 5 (censored: 2 µs + H) known.
		s(14_000_000, 3_000, 1_000, 7, vol), // 6
	}
	// Scrambled input order: the replay sorts by time itself.
	perm := []int{3, 6, 0, 5, 2, 4, 1}
	in := make([]features.Sample, len(perm))
	for i, p := range perm {
		in[i] = samples[p]
	}
	got := ReconstructExtras(in, H, false)
	ex := make([][NumExtras]float32, len(samples))
	for i, p := range perm {
		ex[p] = got[i]
	}
	fresh := func(oncpu float64) [NumExtras]float32 {
		var e [NumExtras]float32
		e[ExtraOnCPU], e[ExtraVol], e[ExtraPreempt] = log1pUs(oncpu), 0.5, 0.5
		return e
	}
	check := func(i int, want [NumExtras]float32) {
		t.Helper()
		for k := range want {
			if !nearF32(ex[i][k], want[k]) {
				t.Errorf("sample %d %s = %v, want %v", i, ExtraNames[k], ex[i][k], want[k])
			}
		}
	}
	for _, i := range []int{0, 1, 2, 3} {
		check(i, fresh(float64(samples[i].ROnCPUNs)))
	}
	// Sample 4: one stint of 50 µs (0 and 1 share their switch-in at 10 ms), voluntary;
	// off the CPU from 10.05 ms to 11.499 ms.
	w := [NumExtras]float32{log1pUs(1000), float32(math.Log1p(50)), 1, 0, log1pUs(11_499_000 - 10_050_000), 1.0 / 8}
	check(4, w)
	// Sample 5: + the 300 µs preempted stint: avg 50 + (300-50)/8, vol 7/8, preempt 1/8; the
	// latest known end is 11.1 ms.
	st := 50 + (300-50)/8.0
	w = [NumExtras]float32{log1pUs(2000), float32(math.Log1p(st)), 7.0 / 8, 1.0 / 8, log1pUs(11_998_000 - 11_100_000), 2.0 / 8}
	check(5, w)
	// Sample 6: + 5 µs voluntary, + the censored 2 µs + 1 ms, not voluntary; the latest known end
	// is still 11.504 ms (sample 4's).
	st += (5 - st) / 8
	st += (1002 - st) / 8
	v := 7.0/8 + (1-7.0/8)/8
	v += (0 - v) / 8
	p := 1.0 / 8 * 7 / 8 * 7 / 8
	w = [NumExtras]float32{log1pUs(3000), float32(math.Log1p(st)), float32(v), float32(p), log1pUs(13_997_000 - 11_504_000), 4.0 / 8}
	check(6, w)

	// R's current stint never counts: tid 5 runs from 19.99 ms past two wakeups' horizons;
	// the first (known at 21 ms) counts only once R is in a new stint (30 ms), as a censored
	// 10 µs + 1 ms stint, not voluntary; the second shares its stint.
	cur := ReconstructExtras([]features.Sample{
		s(20_000_000, 10_000, 0, 5, tmo),
		s(21_500_000, 1_510_000, 0, 5, tmo),
		s(30_000_000, 5_000, 1_000, 5, vol),
	}, H, false)
	for k, want := range fresh(1_510_000) {
		if !nearF32(cur[1][k], want) {
			t.Errorf("current stint: %s = %v, want %v", ExtraNames[k], cur[1][k], want)
		}
	}
	w = [NumExtras]float32{log1pUs(5000), float32(math.Log1p(1010)), 0, 0, 0, 1.0 / 8}
	for k := range w {
		if !nearF32(cur[2][k], w[k]) {
			t.Errorf("next stint: %s = %v, want %v", ExtraNames[k], cur[2][k], w[k])
		}
	}

	// Known at the switch-out: at 10.9 ms, samples 0 and 1 (left at 10.05 ms) are known.
	got = ReconstructExtras(samples, H, true)
	w = [NumExtras]float32{log1pUs(100_000), float32(math.Log1p(50)), 1, 0, log1pUs(10_800_000 - 10_050_000), 1.0 / 8}
	for k := range w {
		if !nearF32(got[3][k], w[k]) {
			t.Errorf("at leave: sample 3 %s = %v, want %v", ExtraNames[k], got[3][k], w[k])
		}
	}
}

// No future information: changing the outcome of every sample not yet known at sample i's
// wakeup, of i itself and of every sample in a stint starting no earlier than i's leaves i's
// extra inputs as they were, under either rule.
func TestReconstructNoFutureInformation(t *testing.T) {
	const H = 1_000_000
	rng := rand.New(rand.NewPCG(3, 4))
	// Five tasks, each a sequence of stints (log-uniform 1 µs - 3 ms, then off the CPU up to
	// 0.5 ms), with 0-3 wakeups on its CPU during each.
	var samples []features.Sample
	for tid := uint32(1); tid <= 5; tid++ {
		t := uint64(rng.IntN(1_000_000))
		for len(samples) < int(tid)*600 {
			l := uint64(math.Exp(rng.Float64()*math.Log(3e6/1e3))) * 1e3
			voluntary := rng.IntN(2) == 0
			for w := rng.IntN(4); w > 0; w-- {
				ts := t + uint64(rng.Int64N(int64(l)))
				s := features.Sample{TsNs: ts, RTid: tid, ROnCPUNs: ts - t, Outcome: features.OutcomeTimeout}
				if t+l-ts <= H {
					s.LeaveNs = t + l - ts
					s.Outcome = features.OutcomePreempted
					if voluntary {
						s.Outcome, s.Label = features.OutcomeVoluntary, 1
					}
				}
				samples = append(samples, s)
			}
			t += l + uint64(rng.IntN(500_000))
		}
	}
	n := len(samples)
	for _, atLeave := range []bool{false, true} {
		base := ReconstructExtras(samples, H, atLeave)
		for trial := 0; trial < 20; trial++ {
			i := rng.IntN(n)
			mod := append([]features.Sample(nil), samples...)
			for j := range mod {
				known := mod[j].TsNs + H // the rule, written out independently of the code under test
				if atLeave && mod[j].Outcome != features.OutcomeTimeout {
					known = mod[j].TsNs + mod[j].LeaveNs
				}
				if j != i && mod[j].TsNs < samples[i].TsNs && known <= samples[i].TsNs &&
					switchIn(mod[j].TsNs, mod[j].ROnCPUNs) < switchIn(samples[i].TsNs, samples[i].ROnCPUNs) {
					continue
				}
				// An outcome not known at i's wakeup, or of R's current stint (or another task's
				// in a stint starting as late): flip it, keeping it consistent (a changed
				// switch-out can only come later than i's wakeup).
				if mod[j].Outcome == features.OutcomeTimeout {
					mod[j].Outcome, mod[j].Label = features.OutcomeVoluntary, 1
					mod[j].LeaveNs = max(samples[i].TsNs-min(mod[j].TsNs, samples[i].TsNs)+1, uint64(rng.IntN(H)))
				} else {
					mod[j].Outcome, mod[j].Label, mod[j].LeaveNs = features.OutcomeTimeout, 0, 0
				}
				if atLeave && mod[j].Outcome != features.OutcomeTimeout && mod[j].TsNs+mod[j].LeaveNs <= samples[i].TsNs {
					mod[j].LeaveNs = samples[i].TsNs - mod[j].TsNs + 1
				}
			}
			got := ReconstructExtras(mod, H, atLeave)
			if got[i] != base[i] {
				t.Fatalf("atLeave %v: sample %d's inputs changed with outcomes unknown at its wakeup: %v vs %v", atLeave, i, got[i], base[i])
			}
		}
	}
}

// A synthetic program pair whose label is "R has been on the CPU less than 5 µs", with the
// counts pure noise: the counts alone stay near chance, the on-CPU input learns the rule, time-held-out and
// leave-one-program-out alike.
func TestAblationLearnsOnCPU(t *testing.T) {
	const H = 1_000_000
	var traces [][]byte
	for prog := 0; prog < 2; prog++ {
		rng := rand.New(rand.NewPCG(uint64(prog)+10, 2))
		samples := make([]features.Sample, 10000)
		for i := range samples {
			s := features.Sample{TsNs: uint64(i+1) * 20_000, RTid: uint32(rng.IntN(50)), WTid: 1}
			for b := range features.Counts(&s.Feats) {
				if rng.IntN(4) == 0 {
					s.Feats[b] = uint32(rng.IntN(8 * features.FixedOne))
				}
			}
			s.ROnCPUNs = uint64(math.Exp(rng.Float64() * math.Log(1e6)))
			if s.ROnCPUNs < 5000 != (rng.IntN(20) == 0) { // 5% label noise
				s.Outcome, s.Label, s.LeaveNs = features.OutcomeVoluntary, 1, 2000
			} else {
				s.Outcome = features.OutcomeTimeout
			}
			samples[i] = s
		}
		traces = append(traces, writeTrace(t, H, samples))
	}
	d := &AblationData{ValFrac: 0.25}
	for i, b := range traces {
		if err := d.AddTrace("p"+strconv.Itoa(i), bytes.NewReader(b)); err != nil {
			t.Fatal(err)
		}
	}
	if d.Rows() != 20000 || d.Programs[1].First != 10000 || d.Programs[1].Early != 7500 {
		t.Fatalf("rows %d, program 1 %+v", d.Rows(), d.Programs[1])
	}
	sets := []AblationInputs{{Name: "a", Counts: true}, {Name: "b", Counts: true, Extras: []int{ExtraOnCPU}}, {Name: "f1", Extras: []int{ExtraOnCPU}}}
	res, err := RunAblation(d, sets, AblationSettings{Epochs: 10, Seed: 1, Workers: 2})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res {
		t.Logf("%s: time acc %.3f bal %.3f; lopo bal %.3f %.3f", r.Inputs.Name, r.Time.Net.Accuracy, r.Time.Net.BalancedAccuracy,
			r.LOPO[0].Net.BalancedAccuracy, r.LOPO[1].Net.BalancedAccuracy)
	}
	if b := res[0].LOPO[0].Net.BalancedAccuracy; b > 0.6 {
		t.Errorf("counts alone, leave-one-program-out: balanced %.3f on noise", b)
	}
	for _, r := range res[1:] {
		if r.Time.Net.BalancedAccuracy < 0.9 || r.LOPO[0].Net.BalancedAccuracy < 0.9 || r.LOPO[1].Net.BalancedAccuracy < 0.9 {
			t.Errorf("%s: balanced accuracy %.3f (time), %.3f %.3f (lopo); want >= 0.9", r.Inputs.Name,
				r.Time.Net.BalancedAccuracy, r.LOPO[0].Net.BalancedAccuracy, r.LOPO[1].Net.BalancedAccuracy)
		}
		if r.Time.Net.N != 5000 || r.LOPO[0].Net.N != 10000 {
			t.Errorf("%s: scored %d and %d rows", r.Inputs.Name, r.Time.Net.N, r.LOPO[0].Net.N)
		}
	}
	var out strings.Builder
	FormatAblation(&out, d, res)
	if !strings.Contains(out.String(), "| b | counts + oncpu | 65 |") {
		t.Errorf("table:\n%s", out.String())
	}
}

// TestAblationTraces runs the schema v2 ablation (docs/TRAINING.md) on the traces named in
// MLSCHED_ABLATION_TRACES (space-separated, one per program); skipped without them.
// MLSCHED_ABLATION_OUT names a file for the markdown tables; MLSCHED_ABLATION_EPOCHS,
// _TRAIN_PER_PROGRAM, _SELECT_PER_PROGRAM, _WORKERS, _SEED and _AT_LEAVE=1 change the defaults
// (8, 60000, 20000, 2, 1, horizon rule); _SETS picks input sets by name (e.g. "a b e"; also those of MoreAblationInputs).
func TestAblationTraces(t *testing.T) {
	paths := strings.Fields(os.Getenv("MLSCHED_ABLATION_TRACES"))
	if len(paths) == 0 {
		t.Skip("MLSCHED_ABLATION_TRACES not set")
	}
	env := func(k string, def int) int {
		if v := os.Getenv("MLSCHED_ABLATION_" + k); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil {
				t.Fatalf("MLSCHED_ABLATION_%s: %v", k, err)
			}
			return n
		}
		return def
	}
	d, err := LoadAblation(paths, 0.2, 0, os.Getenv("MLSCHED_ABLATION_AT_LEAVE") == "1")
	if err != nil {
		t.Fatal(err)
	}
	sets := DefaultAblationInputs()
	if names := strings.Fields(os.Getenv("MLSCHED_ABLATION_SETS")); len(names) > 0 {
		var pick []AblationInputs
		for _, s := range append(sets, MoreAblationInputs()...) {
			for _, n := range names {
				if s.Name == n {
					pick = append(pick, s)
				}
			}
		}
		sets = pick
	}
	st := AblationSettings{
		Epochs:              env("EPOCHS", 8),
		MaxTrainPerProgram:  env("TRAIN_PER_PROGRAM", 60000),
		MaxSelectPerProgram: env("SELECT_PER_PROGRAM", 20000),
		Workers:             env("WORKERS", 2),
		Seed:                uint64(env("SEED", 1)),
		Progress:            func(s string) { t.Log(s) },
	}
	res, err := RunAblation(d, sets, st)
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	FormatAblation(&out, d, res)
	t.Log("\n" + out.String())
	if p := os.Getenv("MLSCHED_ABLATION_OUT"); p != "" {
		if err := os.WriteFile(filepath.Clean(p), []byte(out.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
