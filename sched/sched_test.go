package sched

import (
	"math"
	"math/rand"
	"runtime"
	"testing"
	"time"

	"github.com/mlsched/mlsched/bpf"
	"github.com/mlsched/mlsched/features"
	"github.com/mlsched/mlsched/model"
)

// testModel is a valid model with random weights: enough to exercise the hot path.
func testModel(t testing.TB, seed int64) *model.Model {
	t.Helper()
	rng := rand.New(rand.NewSource(seed))
	m := model.New(model.DefaultHidden, 1_000_000)
	for i := range m.W1 {
		m.W1[i] = float32(rng.NormFloat64() * 0.3)
	}
	for i := range m.W2 {
		m.W2[i] = float32(rng.NormFloat64())
	}
	for i := range m.Mean {
		m.Mean[i] = 0.5
	}
	if err := m.Validate(); err != nil {
		t.Fatal(err)
	}
	return m
}

// rawWake builds a scheduler wake event as BPF writes it (features.EncodeWake, itself checked
// against a hand-laid record and, through its offsets, against the objects' BTF).
func rawWake(seq uint64, wTid uint32, prevCPU, nrAllowed uint16, feats *[features.NumInputs]uint32) []byte {
	b := make([]byte, features.WakeMaxSize)
	e := features.WakeEvent{Type: features.EventSchedWake, PrevCPU: prevCPU, WakerCPU: 1, NrAllowed: nrAllowed,
		WTid: wTid, RTid: wTid + 1, TsNs: seq * 1000, ROnCPUNs: 5000, Seq: seq, Feats: *feats}
	features.EncodeWake(b, &e)
	st := e.State()
	features.SetExtras(feats, &st) // what the decoder makes of R's state
	return b                       // the full reserved size, as the scheduler submits it
}

// rawOutcome is the outcome of rawWake's sample seq: from its CPU and its R (wTid+1).
func rawOutcome(seq uint64, cpu uint16, wTid uint32, voluntary bool, leaveNs uint64) []byte {
	b := make([]byte, features.OutcomeSize)
	features.EncodeOutcome(b, &features.OutcomeEvent{Voluntary: voluntary, CPU: cpu, RTid: wTid + 1, Seq: seq, LeaveNs: leaveNs, TsNs: 99})
	return b
}

func randFeats(rng *rand.Rand) *[features.NumInputs]uint32 {
	var f [features.NumInputs]uint32
	for i := 0; i < 8; i++ {
		f[rng.Intn(features.NumBuckets)] = uint32(rng.Intn(64 * features.FixedOne))
	}
	return &f
}

// fakeWriter stands in for the user ring buffer: it keeps the last decision.
type fakeWriter struct {
	buf  [features.DecisionSize]byte
	n    int
	full bool
}

func (f *fakeWriter) Reserve(n int) (bpf.Sample, error) {
	if f.full {
		return bpf.Sample{}, bpf.ErrRingFull
	}
	return bpf.Sample{Data: f.buf[:n]}, nil
}
func (f *fakeWriter) Submit(bpf.Sample) { f.n++ }

func TestDecisionEncoding(t *testing.T) {
	d := Decision{Seq: 0x0102030405060708, WTid: 0x0a0b0c0d, CPU: 0x1234, Action: ActMigrateIdle}
	var b [features.DecisionSize]byte
	features.EncodeDecision(b[:], &d)
	want := []byte{8, 7, 6, 5, 4, 3, 2, 1, 0x0d, 0x0c, 0x0b, 0x0a, 0x34, 0x12, 2, 0}
	if string(b[:]) != string(want) {
		t.Fatalf("encoded % x, want % x", b, want)
	}
	var back Decision
	features.DecodeDecision(b[:], &back)
	if back != d {
		t.Fatalf("round trip %+v != %+v", back, d)
	}
	for a, s := range map[Action]string{ActFIFO: "fifo", ActKeepLocal: "keep_local", ActMigrateIdle: "migrate_idle"} {
		if a.String() != s {
			t.Errorf("%d: %s", a, a)
		}
	}
}

func TestDeciderPolicies(t *testing.T) {
	rng := rand.New(rand.NewSource(3))
	m := testModel(t, 1)
	pred := model.NewPredictor(m)
	st := &Stats{}
	d := NewDecider(m, NewGuard(100, st), st)
	w := &fakeWriter{}
	for seq := uint64(1); seq <= 500; seq++ {
		f := randFeats(rng)
		handle(rawWake(seq, 100, 3, 4, f), d, w)
		var dec Decision
		features.DecodeDecision(w.buf[:], &dec)
		want := ActMigrateIdle
		if pred.KeepLocal(f) {
			want = ActKeepLocal
		}
		if dec.Seq != seq || dec.WTid != 100 || dec.CPU != 3 || dec.Action != want {
			t.Fatalf("seq %d: %+v, want action %s", seq, dec, want)
		}
	}
	if st.Keep.Load()+st.Migrate.Load() != 500 || st.Keep.Load() == 0 || st.Migrate.Load() == 0 {
		t.Fatalf("keep %d migrate %d", st.Keep.Load(), st.Migrate.Load())
	}
	// A task allowed on one CPU only can't migrate.
	handle(rawWake(501, 100, 3, 1, &[features.NumInputs]uint32{}), d, w)
	var dec Decision
	features.DecodeDecision(w.buf[:], &dec)
	if pred.KeepLocal(&[features.NumInputs]uint32{}) == false && dec.Action != ActKeepLocal {
		t.Fatalf("single-CPU task: %s", dec.Action)
	}
	// FIFO policy: no model, always FIFO.
	fst := &Stats{}
	fd := NewDecider(nil, nil, fst)
	handle(rawWake(1, 5, 0, 2, randFeats(rng)), fd, w)
	features.DecodeDecision(w.buf[:], &dec)
	if dec.Action != ActFIFO || fst.FIFO.Load() != 1 {
		t.Fatalf("fifo policy: %s", dec.Action)
	}
	// A full user ring buffer is counted, not fatal.
	w.full = true
	handle(rawWake(502, 100, 3, 4, randFeats(rng)), d, w)
	if st.RingFull.Load() != 1 {
		t.Fatalf("ring full count %d", st.RingFull.Load())
	}
	// An informational event (guard at FIFO in BPF) is scored, not answered.
	w.full = false
	n := w.n
	info := rawWake(503, 100, 3, 4, randFeats(rng))
	info[2] = features.WakeNoDecision // flags
	if handle(info, d, w) || w.n != n || st.Informational.Load() != 1 {
		t.Fatalf("informational event answered (writes %d -> %d)", n, w.n)
	}
	// Garbage is counted.
	handle([]byte{features.EventSchedWake, 0, 0}, d, w)
	handle([]byte{42}, d, w)
	handle(nil, d, w)
	if st.DecodeErrors.Load() != 3 {
		t.Fatalf("decode errors %d", st.DecodeErrors.Load())
	}
}

func TestOutcomeScoring(t *testing.T) {
	m := testModel(t, 2)
	pred := model.NewPredictor(m)
	st := &Stats{}
	d := NewDecider(m, nil, st)
	w := &fakeWriter{}
	rng := rand.New(rand.NewSource(4))
	var correct uint64
	for seq := uint64(1); seq <= 300; seq++ {
		f := randFeats(rng)
		handle(rawWake(seq, 1, 0, 2, f), d, w)
		vol := seq%3 == 0
		leave := uint64(500_000)
		if seq%5 == 0 {
			leave = 2_000_000 // past the 1 ms horizon: label 0 even if voluntary
		}
		label := vol && leave <= m.HorizonNs
		if pred.KeepLocal(f) == label {
			correct++
		}
		handle(rawOutcome(seq, 0, 1, vol, leave), d, w)
	}
	if st.Correct.Load() != correct || st.Outcomes.Load() != 300 {
		t.Fatalf("correct %d want %d, outcomes %d", st.Correct.Load(), correct, st.Outcomes.Load())
	}
	// An outcome for an unknown or already scored seq is unmatched.
	handle(rawOutcome(5, 0, 1, true, 1), d, w)
	handle(rawOutcome(1<<40, 0, 1, true, 1), d, w)
	if st.Unmatched.Load() != 2 {
		t.Fatalf("unmatched %d", st.Unmatched.Load())
	}
}

// A sample that BPF decided carries its verdict: that is what is scored (the kernel form's
// answer), not a re-prediction; and an outcome from another CPU or another R than its
// sample's is counted and never scored.
func TestKernelVerdictScoring(t *testing.T) {
	st := &Stats{}
	d := NewScorer(1_000_000, nil, st) // a fixed placement: no net in user space
	w := &fakeWriter{}
	rng := rand.New(rand.NewSource(5))
	var want, positives uint64
	for seq := uint64(1); seq <= 200; seq++ {
		ev := rawWake(seq, 10, 1, 2, randFeats(rng))
		keep := seq%4 != 0
		ev[2] = features.WakeNoDecision | features.WakeVerdict
		if keep {
			ev[2] |= features.WakeKeep
		}
		if handle(ev, d, w) {
			t.Fatal("a decided sample was answered")
		}
		label := seq%3 != 0
		if label {
			positives++
		}
		if keep == label {
			want++
		}
		handle(rawOutcome(seq, 1, 10, label, 1000), d, w)
	}
	if st.Correct.Load() != want || st.Positives.Load() != positives || st.KernelVerdicts.Load() != 200 {
		t.Fatalf("correct %d want %d, positives %d want %d, verdicts %d", st.Correct.Load(), want, st.Positives.Load(), positives, st.KernelVerdicts.Load())
	}
	// Outcomes from the wrong CPU, or the wrong R: not scored.
	for seq, o := range map[uint64][]byte{300: rawOutcome(300, 0, 10, true, 1000), 301: rawOutcome(301, 1, 20, true, 1000)} {
		ev := rawWake(seq, 10, 1, 2, randFeats(rng))
		ev[2] = features.WakeNoDecision | features.WakeVerdict | features.WakeKeep
		handle(ev, d, w)
		handle(o, d, w)
	}
	if st.Misattributed.Load() != 2 || st.Correct.Load() != want || st.Positives.Load() != positives {
		t.Fatalf("misattributed %d (want 2), correct %d, positives %d", st.Misattributed.Load(), st.Correct.Load(), st.Positives.Load())
	}
	// An abstention carries no verdict (its keep bit is clear): its outcome is not scored as
	// a migrate prediction.
	ev := rawWake(400, 10, 1, 2, randFeats(rng))
	ev[2] = features.WakeNoDecision | features.WakeVerdict | features.WakeAbstain | features.WakeBase
	handle(ev, d, w)
	handle(rawOutcome(400, 1, 10, false, 1000), d, w)
	if st.Correct.Load() != want || st.Unmatched.Load() != 0 {
		t.Fatalf("an abstention was scored: correct %d (want %d), unmatched %d", st.Correct.Load(), want, st.Unmatched.Load())
	}
}

func TestGuard(t *testing.T) {
	st := &Stats{}
	g := NewGuard(100, st)
	var changes []bool
	g.OnChange = func(tripped bool, acc, maj float64) { changes = append(changes, tripped) }
	// 80% positives, model right 70%: below the majority rate 0.8, but only once the window
	// is full.
	k := 0
	feed := func(n int, accPct int) {
		for i := 0; i < n; i++ {
			label := k%5 != 0
			correct := k%10 < accPct/10
			g.Observe(correct, label)
			k++
		}
	}
	feed(99, 70)
	if g.Tripped() {
		t.Fatal("tripped before the window filled")
	}
	feed(1, 70)
	if !g.Tripped() || st.GuardTrips.Load() != 1 || !st.GuardActive.Load() {
		t.Fatalf("not tripped at accuracy 0.7 < majority 0.8")
	}
	acc, maj := g.Accuracy()
	if math.Abs(acc-0.7) > 0.02 || math.Abs(maj-0.8) > 0.02 {
		t.Fatalf("acc %v maj %v", acc, maj)
	}
	// 80% accuracy equals the majority rate: not enough to recover (margin 2 points).
	feed(100, 80)
	if !g.Tripped() {
		t.Fatal("recovered without margin")
	}
	feed(100, 90)
	if g.Tripped() || st.GuardActive.Load() {
		t.Fatal("did not recover at accuracy 0.9")
	}
	if len(changes) != 2 || !changes[0] || changes[1] {
		t.Fatalf("changes %v", changes)
	}
	if math.Abs(st.LiveAccuracy()-0.9) > 0.011 {
		t.Fatalf("live accuracy %v", st.LiveAccuracy())
	}
	// While tripped, the decider answers FIFO.
	m := testModel(t, 1)
	d := NewDecider(m, g, st)
	feed(100, 0)
	w := &fakeWriter{}
	handle(rawWake(1, 1, 0, 4, randFeats(rand.New(rand.NewSource(1)))), d, w)
	var dec Decision
	features.DecodeDecision(w.buf[:], &dec)
	if dec.Action != ActFIFO {
		t.Fatalf("guard tripped, action %s", dec.Action)
	}
}

// benchEvents returns n wake events, each followed by its outcome.
func benchEvents(n int) [][]byte {
	rng := rand.New(rand.NewSource(9))
	ev := make([][]byte, 0, 2*n)
	for i := 0; i < n; i++ {
		seq := uint64(i + 1)
		ev = append(ev, rawWake(seq, uint32(1000+i%50), uint16(i%8), 8, randFeats(rng)))
		ev = append(ev, rawOutcome(seq, uint16(i%8), uint32(1000+i%50), i%3 != 0, uint64(rng.Intn(2_000_000))))
	}
	return ev
}

func TestHandleAllocs(t *testing.T) {
	st := &Stats{}
	d := NewDecider(testModel(t, 1), NewGuard(1000, st), st)
	w := &fakeWriter{}
	ev := benchEvents(512)
	i := 0
	allocs := testing.AllocsPerRun(2000, func() {
		handle(ev[i%len(ev)], d, w)
		i++
	})
	if allocs != 0 {
		t.Fatalf("%v allocs per event", allocs)
	}
}

// BenchmarkDispatch: one wake event through decode -> predict -> decide -> encode, plus its
// outcome through decode -> score -> guard, on one core. b.N counts decisions.
func BenchmarkDispatch(b *testing.B) {
	st := &Stats{}
	d := NewDecider(testModel(b, 1), NewGuard(2000, st), st)
	w := &fakeWriter{}
	ev := benchEvents(4096)
	// The loop runs on one locked thread; its CPU time, apart from wall time, shows the cost
	// without the noise of other load on the machine.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cpu0 := threadCPU()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		j := (2 * i) % len(ev)
		handle(ev[j], d, w)
		handle(ev[j+1], d, w)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "decisions/s")
	if cpu := threadCPU() - cpu0; cpu > 0 {
		b.ReportMetric(float64(b.N)/cpu.Seconds(), "decisions/cpu-s")
	}
}

// The --stats cost fields: the process's CPU share, each hook's mean run time per call over
// the interval, the net's share of the scheduler's BPF run time; and the decided fraction.
func TestRuntimeLine(t *testing.T) {
	prev := map[string]bpf.ProgStat{"mls_enqueue": {Runs: 10, Runtime: 1000}, "mls_dispatch": {Runs: 5, Runtime: 500}}
	cur := map[string]bpf.ProgStat{"mls_enqueue": {Runs: 110, Runtime: 31000}, "mls_dispatch": {Runs: 105, Runtime: 10500}}
	got := runtimeLine(time.Second, 20*time.Millisecond, cur, prev, 10000)
	if want := " cpu=2.00% bpf enq=300ns disp=100ns net=25.0%"; got != want {
		t.Fatalf("runtimeLine = %q, want %q", got, want)
	}
	if got := runtimeLine(2*time.Second, 10*time.Millisecond, nil, nil, 0); got != " cpu=0.50%" {
		t.Fatalf("without --bpf-stats: %q", got)
	}
	var c bpf.SchedCounters
	c[bpf.SCBusyPrev], c[bpf.SCKernelKeep], c[bpf.SCKernelMigrate], c[bpf.SCKernelNoIdle], c[bpf.SCKernelForced] = 100, 30, 20, 10, 4
	c[bpf.SCGuardFIFO] = 40
	if f := DecidedFraction(func(i bpf.SchedCounter) float64 { return float64(c[i]) }); f != 0.56 {
		t.Fatalf("decided fraction %v, want 0.56", f)
	}
	c[bpf.SCBusyPrev], c[bpf.SCSelectKeep], c[bpf.SCSelectMigrate], c[bpf.SCSelectNoIdle] = 200, 50, 30, 20
	if f := DecidedFraction(func(i bpf.SchedCounter) float64 { return float64(c[i]) }); f != 0.78 {
		t.Fatalf("decided fraction with select_cpu's decisions %v, want 0.78", f)
	}
}
