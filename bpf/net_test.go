package bpf

import (
	"fmt"
	"math/bits"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/mlsched/mlsched/features"
	"github.com/mlsched/mlsched/model"
)

// netProgs is the test object with a net loaded into its map.
type netProgs struct {
	objs testprogsObjects
}

func loadNetProgs(t testing.TB) *netProgs {
	t.Helper()
	requireRoot(t)
	p := &netProgs{}
	if err := loadTestprogsObjects(&p.objs, nil); err != nil {
		t.Fatalf("load test programs: %v", err)
	}
	t.Cleanup(func() { p.objs.Close() })
	return p
}

func (p *netProgs) setNet(t testing.TB, kf *model.KernelForm) {
	t.Helper()
	b, err := kf.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.objs.TestNetMap.Put(uint32(0), b); err != nil {
		t.Fatal(err)
	}
}

func (p *netProgs) setState(t testing.TB, st *testprogsTaskFeat) {
	t.Helper()
	if err := p.objs.TestNetFeat.Set(st); err != nil {
		t.Fatal(err)
	}
}

// eval runs mls_test_net on the state set: the logit and the decision (mls_net_decide:
// 0 migrate, 1 keep, 2 abstain).
func (p *netProgs) eval(t testing.TB) (int64, uint32) {
	t.Helper()
	return runNet(t, p.objs.MlsTestNet, p.objs.TestNetLogit, p.objs.TestNetKeep)
}

// runNet runs prog, which must return 0, and reads the logit and the decision it stored.
func runNet(t testing.TB, prog *ebpf.Program, logitVar, keepVar *ebpf.Variable) (int64, uint32) {
	t.Helper()
	ret, err := prog.Run(&ebpf.RunOptions{})
	if err != nil || ret != 0 {
		t.Fatalf("test run of %v: ret %d, %v", prog, ret, err)
	}
	var logit int64
	var keep uint32
	if err := logitVar.Get(&logit); err != nil {
		t.Fatal(err)
	}
	if err := keepVar.Get(&keep); err != nil {
		t.Fatal(err)
	}
	return logit, keep
}

// defaultKernelForm is the kernel form of the embedded default model.
func defaultKernelForm(t testing.TB) *model.KernelForm {
	t.Helper()
	m, err := model.Default()
	if err != nil {
		t.Fatal(err)
	}
	kf, err := model.NewKernelForm(m)
	if err != nil {
		t.Fatal(err)
	}
	return kf
}

// bpfState is the BPF image of a Go task state whose used buckets are mask, with R's
// scheduling state sched (its averages as one stint would have left them).
func bpfState(st *features.TaskState, mask uint64, sched *features.SchedState) *testprogsTaskFeat {
	f := &testprogsTaskFeat{N: st.N, Tid: 1, Mask: mask, StintAvg: sched.StintNs, VolAvg: sched.Vol, GapNs: sched.GapNs, Stints: 1}
	for b := range f.B {
		f.B[b].Val, f.B[b].Last = st.Val[b], st.Last[b]
	}
	return f
}

// goFeats is what the BPF code sees of a state: the buckets of mask, decayed to st.N, and the
// extras of sched.
func goFeats(st *features.TaskState, mask uint64, sched *features.SchedState) *[features.NumInputs]uint32 {
	used := *st
	for b := range used.Val {
		if mask>>b&1 == 0 {
			used.Val[b] = 0
		}
	}
	var in [features.NumInputs]uint32
	used.Snapshot(features.Counts(&in))
	features.SetExtras(&in, sched)
	return &in
}

// setSched sets the scheduling state mls_test_net reads (a wake record's r_* fields) and the
// switch-in and wakeup times mls_test_decision reads (R's on-CPU time).
func (p *netProgs) setSched(t testing.TB, sched *features.SchedState) {
	t.Helper()
	rec := make([]byte, features.WakeMaxSize)
	features.EncodeWake(rec, &features.WakeEvent{ROnCPUNs: sched.OnCPUNs, RStintNs: sched.StintNs, RVol: sched.Vol, RGapNs: sched.GapNs})
	const start = 1 << 50
	for _, err := range []error{p.objs.TestNetState.Set(rec), p.objs.TestDecStart.Set(uint64(start)),
		p.objs.TestDecNow.Set(uint64(start + sched.OnCPUNs))} {
		if err != nil {
			t.Fatal(err)
		}
	}
}

// simulatedTask runs a task of 5-15 syscalls (distinct buckets, skewed frequencies) for up to
// calls syscalls, the way the sys_enter hook would: the mask is every bucket it touched.
func simulatedTask(rng *rand.Rand, calls int) (*features.TaskState, uint64) {
	common := []uint32{0, 1, 3, 7, 9, 10, 11, 12, 13, 17, 20, 23, 24, 35, 39, 41, 42, 44, 45, 47,
		56, 59, 61, 72, 202, 228, 230, 232, 257, 262, 270, 271, 281, 288, 291, 318}
	nrs := make([]uint32, 5+rng.IntN(11))
	for i := range nrs {
		nrs[i] = common[rng.IntN(len(common))]
		if rng.IntN(10) == 0 {
			nrs[i] = rng.Uint32N(1000) // past the table: the other bucket
		}
	}
	st := &features.TaskState{}
	var mask uint64
	for range 1 + rng.IntN(calls) {
		i := min(int(rng.ExpFloat64()*float64(len(nrs))/3), len(nrs)-1)
		st.Syscall(nrs[i])
		mask |= 1 << features.Bucket(nrs[i])
	}
	return st, mask
}

// rawState is any state the record can hold: random counts (past MaxCount too), ages on both
// sides of the decay table's end, a random mask.
func rawState(rng *rand.Rand) (*features.TaskState, uint64) {
	st := &features.TaskState{N: rng.Uint32()}
	mask := rng.Uint64() & rng.Uint64()
	if rng.IntN(4) == 0 {
		mask = rng.Uint64()
	}
	for b := range st.Val {
		switch rng.IntN(4) {
		case 0:
			st.Val[b] = rng.Uint32()
		case 1:
			st.Val[b] = 0
		default:
			st.Val[b] = rng.Uint32N(features.MaxCount)
		}
		st.Last[b] = st.N - rng.Uint32N(features.PowLen+100)
	}
	return st, mask
}

// goDecision is mls_net_decide's answer by the Go reference: 2 abstain, 1 keep, 0 migrate.
func goDecision(kf *model.KernelForm, in *[features.NumInputs]uint32) uint32 {
	keep, abstain := kf.Decide(in)
	switch {
	case abstain:
		return 2
	case keep:
		return 1
	}
	return 0
}

// randomForm is a kernel form with every field random within the bounds NewKernelForm keeps
// (so no sum overflows): the arithmetic, not a model.
func randomForm(rng *rand.Rand) *model.KernelForm {
	kf := &model.KernelForm{Hidden: 16, Generation: rng.Uint64(), Shift: 22 + rng.Uint32N(10)}
	kf.Bound = rng.Int64N(1<<40) - 1<<39
	kf.Lower, kf.Upper = kf.Bound, kf.Bound
	if rng.IntN(2) == 0 { // an abstention band around it
		kf.Lower, kf.Upper = kf.Bound-rng.Int64N(1<<38), kf.Bound+rng.Int64N(1<<38)
	}
	for k := range model.KernelMaxHidden {
		kf.B1[k] = rng.Int64N(1<<53) - 1<<52
		kf.W2[k] = int32(rng.Int64N(1<<27) - 1<<26)
	}
	for j := range kf.W1 {
		kf.XShift[j] = uint8(rng.IntN(16))
		for k := range kf.W1[j] {
			kf.W1[j][k] = int16(rng.Uint32())
		}
	}
	// Terms below 2^25 in magnitude: a lane of all 64 buckets stays within an s32.
	kf.CShift = uint32(rng.IntN(model.KernelMaxCShift + 1))
	for b := range kf.C {
		for i := range kf.C[b] {
			for k := range kf.C[b][i] {
				kf.C[b][i][k] = int32(rng.Int64N(1<<26) - 1<<25)
			}
		}
	}
	return kf
}

// saturatedForm is randomForm with every unit's counts' terms of one sign at 2^25 - 1 in
// magnitude, the most that 64 buckets can add within an s32 lane.
func saturatedForm(rng *rand.Rand) *model.KernelForm {
	kf := randomForm(rng)
	kf.CShift = model.KernelMaxCShift
	for k := range model.KernelMaxHidden {
		v := int32(1<<25 - 1)
		if rng.IntN(2) == 0 {
			v = -v
		}
		for b := range kf.C {
			for i := 1; i < model.KernelLevels; i++ { // level 0 is a zero count's: never read
				kf.C[b][i][k] = v
			}
		}
	}
	return kf
}

// narrowDefault is the default model cut to its first hidden units: a trained model of
// another width.
func narrowDefault(t testing.TB, hidden int) *model.Model {
	t.Helper()
	m, err := model.Default()
	if err != nil {
		t.Fatal(err)
	}
	m.Hidden = hidden
	m.W1, m.B1, m.W2 = m.W1[:hidden*m.Inputs], m.B1[:hidden], m.W2[:hidden]
	return m
}

// decTid is the tid R has in the decision tests: its slot in task_feat_slots (the loader's
// default size, 32768 slots).
const decTid = 4242

// setSlot puts st (used buckets mask) into R's feature slot, owned by tid.
func (p *netProgs) setSlot(t testing.TB, tid uint32, st *features.TaskState, mask uint64, sched *features.SchedState) {
	t.Helper()
	f := bpfState(st, mask, sched)
	f.Tid = tid
	if err := p.objs.TaskFeatSlots.Put(tid&32767, f); err != nil {
		t.Fatal(err)
	}
	if err := p.objs.TestDecTid.Set(uint32(decTid)); err != nil {
		t.Fatal(err)
	}
}

// decide runs mls_test_decision (R's slot, the decay, the net): the logit and the decision.
func (p *netProgs) decide(t testing.TB) (int64, uint32) {
	t.Helper()
	return runNet(t, p.objs.MlsTestDecision, p.objs.TestDecLogit, p.objs.TestDecKeep)
}

// The net in BPF (net.h) computes exactly the Go reference's logit and decision
// (model.KernelForm.Logit, KeepLocal) for the default model on simulated and arbitrary task
// states (with buckets decayed to zero among the used ones too), and for random kernel forms:
// at least 10,000 samples, each bit for bit. The whole decision (R's slot found by its tid,
// then the net) gives the same on a part of them.
func TestBPFNetMatchesGo(t *testing.T) {
	p := loadNetProgs(t)
	for name, prog := range map[string]*ebpf.Program{"mls_test_net": p.objs.MlsTestNet, "mls_test_decision": p.objs.MlsTestDecision} {
		if info, err := prog.Info(); err == nil {
			if n, ok := info.VerifiedInstructions(); ok {
				t.Logf("%s: %d instructions verified", name, n)
			}
		}
	}
	def := defaultKernelForm(t)
	rng := rand.New(rand.NewPCG(61, 62))
	samples, decisions := 0, 0
	check := func(what string, i int, kf *model.KernelForm, st *features.TaskState, mask uint64) {
		t.Helper()
		sched := model.KernelCheckState(rng)
		if i%16 == 0 { // the extremes: times past the clamp, and the largest voluntary average
			sched = features.SchedState{OnCPUNs: rng.Uint64() >> 20, StintNs: rng.Uint64(), GapNs: 1 << 62, Vol: features.VolOne}
		}
		in := goFeats(st, mask, &sched)
		want, wantKeep := kf.Logit(in), goDecision(kf, in)
		p.setState(t, bpfState(st, mask, &sched))
		p.setSched(t, &sched)
		if got, keep := p.eval(t); got != want || keep != wantKeep {
			t.Fatalf("%s %d: BPF logit %d keep %v, Go %d keep %v\nmask %#x inputs %v", what, i, got, keep, want, wantKeep, mask, in)
		}
		samples++
		if i%4 == 0 { // the whole decision, through R's slot
			p.setSlot(t, decTid, st, mask, &sched)
			if got, keep := p.decide(t); got != want || keep != wantKeep {
				t.Fatalf("%s %d, whole decision: BPF logit %d keep %v, Go %d keep %v\nmask %#x counts %v", what, i, got, keep, want, wantKeep, mask, in)
			}
			decisions++
		}
	}
	p.setNet(t, def)
	keeps := 0
	const simulated = 6000
	for i := range simulated {
		st, mask := simulatedTask(rng, []int{10, 200, 3000}[i%3])
		check("default model, simulated task", i, def, st, mask)
		if def.KeepLocal(goFeats(st, mask, &features.SchedState{Vol: features.VolUnknown})) {
			keeps++
		}
	}
	t.Logf("default model: %d of %d simulated tasks kept local", keeps, simulated)
	for i := range 3000 {
		st, mask := rawState(rng)
		check("default model, raw state", i, def, st, mask)
	}
	for i := range 1000 { // used buckets of which some decayed to zero, skipped by the net
		used := rng.IntN(features.NumBuckets + 1)
		st, mask := benchState(t, rng, benchCase{used, rng.IntN(used + 1)})
		check("default model, stale buckets", i, def, st, mask)
	}
	// The default model with an abstention margin: the band is decided bit for bit too.
	m, err := model.Default()
	if err != nil {
		t.Fatal(err)
	}
	m.AbstainMargin = 0.5
	band, err := model.NewKernelForm(m)
	if err != nil {
		t.Fatal(err)
	}
	p.setNet(t, band)
	abstained := 0
	for i := range 2000 {
		st, mask := simulatedTask(rng, []int{10, 200, 3000}[i%3])
		check("default model with a margin", i, band, st, mask)
		if band.Abstains(goFeats(st, mask, &features.SchedState{Vol: features.VolUnknown})) {
			abstained++
		}
	}
	if abstained == 0 || abstained == 2000 {
		t.Fatalf("margin 0.5: %d of 2000 abstained, want some", abstained)
	}
	t.Logf("default model with margin 0.5: %d of 2000 simulated tasks abstained", abstained)
	p.setNet(t, def)
	var empty features.TaskState
	check("default model, empty state", 0, def, &empty, 0)
	// A record of another layout version (or a zeroed map value) is not evaluated.
	for _, rec := range [][]byte{make([]byte, model.NetSize), func() []byte {
		b, _ := def.MarshalBinary()
		b[0]++
		return b
	}()} {
		if err := p.objs.TestNetMap.Put(uint32(0), rec); err != nil {
			t.Fatal(err)
		}
		for _, prog := range []*ebpf.Program{p.objs.MlsTestNet, p.objs.MlsTestDecision} {
			if ret, err := prog.Run(&ebpf.RunOptions{}); err != nil || ret != 2 {
				t.Fatalf("record of version %d: ret %d, %v; want 2 (not usable)", rec[0], ret, err)
			}
		}
	}
	for f := range 100 {
		kf := randomForm(rng)
		p.setNet(t, kf)
		for i := range 20 {
			st, mask := rawState(rng)
			check("random form", f*20+i, kf, st, mask)
		}
	}
	// The lanes' edges: every unit's terms of one sign at the largest a lane of 64 buckets
	// allows, on a task with every bucket live (each lane's sum within 64 of +-2^31, the packed
	// u64 near +-2^63) and on raw states.
	full := &features.TaskState{N: 5000}
	for b := range full.Val {
		full.Val[b], full.Last[b] = features.MaxCount, full.N
	}
	for f := range 8 {
		kf := saturatedForm(rng)
		p.setNet(t, kf)
		check("saturated form, every bucket at MaxCount", f, kf, full, ^uint64(0))
		for i := range 10 {
			st, mask := rawState(rng)
			check("saturated form", f*10+i, kf, st, mask)
		}
	}
	// Real forms of odd and small widths (an empty high lane in the last pair), on full and
	// raw states.
	for _, hidden := range []int{1, 5, 7} {
		kf, err := model.NewKernelForm(narrowDefault(t, hidden))
		if err != nil {
			t.Fatalf("hidden %d: %v", hidden, err)
		}
		p.setNet(t, kf)
		check(fmt.Sprintf("hidden %d, every bucket at MaxCount", hidden), 0, kf, full, ^uint64(0))
		for i := range 200 {
			st, mask := rawState(rng)
			check(fmt.Sprintf("hidden %d", hidden), i, kf, st, mask)
		}
	}
	// A tid whose slot another task owns has no features: no decision.
	p.setSlot(t, decTid+32768, &empty, 0, &features.SchedState{})
	if ret, err := p.objs.MlsTestDecision.Run(&ebpf.RunOptions{}); err != nil || ret != 3 {
		t.Fatalf("slot of another tid: ret %d, %v; want 3", ret, err)
	}
	t.Logf("BPF == Go bit for bit (logit and decision) on %d samples; %d of them also as whole decisions through R's slot", samples, decisions)
	if samples < 10_000 {
		t.Fatalf("only %d samples compared, want >= 10,000", samples)
	}
}

// benchCase is a task state to time: used buckets in its mask, of which live have not
// decayed to zero (the rest were last used more than features.PowLen syscalls ago).
type benchCase struct{ used, live int }

func (c benchCase) String() string {
	if c.live == c.used {
		return fmt.Sprintf("%02d-buckets", c.used)
	}
	return fmt.Sprintf("%02d-buckets-%02d-live", c.used, c.live)
}

// benchCases are the states the BPF benchmarks time: every used bucket live, and the medians
// of captured wakeups here (stress-ng: R has used 9 buckets, 1 of them live; nginx: 20, 7).
var benchCases = []benchCase{{0, 0}, {4, 4}, {8, 8}, {12, 12}, {16, 16}, {32, 32}, {64, 64}, {9, 1}, {12, 3}, {20, 7}}

// benchState is a task state of c's used buckets (random ones, live counts up to MaxCount
// touched within the last 300 syscalls, so that they decay to nonzero values).
func benchState(b testing.TB, rng *rand.Rand, c benchCase) (*features.TaskState, uint64) {
	st := &features.TaskState{N: 5000}
	var mask uint64
	for i, j := range rng.Perm(features.NumBuckets)[:c.used] {
		st.Val[j], st.Last[j] = 1+rng.Uint32N(features.MaxCount), st.N-rng.Uint32N(300)
		if i >= c.live {
			st.Last[j] = st.N - features.PowLen - rng.Uint32N(3000)
		}
		mask |= 1 << j
	}
	var in [features.NumBuckets]uint32
	st.Snapshot(&in)
	live := 0
	for _, v := range in {
		if v != 0 {
			live++
		}
	}
	if bits.OnesCount64(mask) != c.used || live != c.live {
		b.Fatalf("state: %d used, %d live; want %v", bits.OnesCount64(mask), live, c)
	}
	return st, mask
}

// benchSched is the scheduling state of the benchmarks' R: a typical ping-pong task's.
var benchSched = features.SchedState{OnCPUNs: 40_000, StintNs: 60_000, Vol: 50_000, GapNs: 200_000}

// benchTrials times prog over floor, repeated in the kernel, in trials each on a new state of
// each case (set by put), and reports the median, best and worst trial in ns per run. Not an
// assertion: figures for docs, read +-30% on a shared vCPU.
func benchTrials(b *testing.B, prog, floor *ebpf.Program, put func(*features.TaskState, uint64)) {
	rng := rand.New(rand.NewPCG(71, 72))
	for _, c := range benchCases {
		b.Run(c.String(), func(b *testing.B) {
			const repeat, trials = 20000, 31
			var costs []float64
			for b.Loop() {
				costs = costs[:0]
				for range trials {
					put(benchState(b, rng, c))
					costs = append(costs, runNs(b, prog, repeat)-runNs(b, floor, repeat))
				}
			}
			slices.Sort(costs)
			b.ReportMetric(costs[len(costs)/2], "median-ns")
			b.ReportMetric(costs[0], "best-ns")
			b.ReportMetric(costs[len(costs)-1], "worst-ns")
		})
	}
}

// The cost of the net alone in BPF, by number of used buckets: mls_bench_net minus its floor
// (the same map lookups without the net).
//
//	go test -run '^$' -bench BPFNet ./bpf
func BenchmarkBPFNet(b *testing.B) {
	p := loadNetProgs(b)
	p.setNet(b, defaultKernelForm(b))
	p.setSched(b, &benchSched)
	benchTrials(b, p.objs.MlsBenchNet, p.objs.MlsBenchNetEmpty, func(st *features.TaskState, mask uint64) {
		p.setState(b, bpfState(st, mask, &benchSched))
	})
}

// The cost of one whole decision in BPF, by number of used buckets: the net's record and R's
// feature slot looked up, R's used buckets decayed, the net evaluated and its logit compared
// with the bound (mls_bench_decision), minus an empty XDP program (mls_bench_xdp_empty).
//
//	go test -run '^$' -bench BPFDecision ./bpf
func BenchmarkBPFDecision(b *testing.B) {
	p := loadNetProgs(b)
	p.setNet(b, defaultKernelForm(b))
	p.setSched(b, &benchSched)
	benchTrials(b, p.objs.MlsBenchDecision, p.objs.MlsBenchXdpEmpty, func(st *features.TaskState, mask uint64) {
		p.setSlot(b, decTid, st, mask, &benchSched)
	})
}

// runNs is the kernel's mean run time of prog over repeat runs on a minimal packet.
func runNs(b testing.TB, prog *ebpf.Program, repeat int) float64 {
	ret, d, err := prog.Benchmark(make([]byte, 14), repeat, nil)
	if err != nil || ret != 2 { // XDP_PASS
		b.Fatalf("benchmark run: ret %d, %v", ret, err)
	}
	return float64(d.Nanoseconds())
}

// The scheduling state's update (mls_feat_stint_start, mls_feat_stint_end, mls_state_fill)
// and mls_log_time equal their Go mirrors (features.TaskSched, features.LogTime) bit for bit.
func TestBPFSchedStateMatchesGo(t *testing.T) {
	p := loadNetProgs(t)
	rng := rand.New(rand.NewPCG(81, 82))
	for trial := range 50 {
		const n = 32
		var ts [2 * n]uint64
		var vol [n]uint8
		now := rng.Uint64N(1 << 40)
		for i := range n {
			now += rng.Uint64N(1 << uint(rng.IntN(30)))
			ts[2*i] = now
			if rng.IntN(10) != 0 { // else a zero-length stint
				now += rng.Uint64N(1 << uint(rng.IntN(34)))
			}
			ts[2*i+1] = now
			vol[i] = uint8(rng.IntN(2))
		}
		if trial == 0 {
			ts[0] = 0 // a stint whose start is unknown
		}
		for _, err := range []error{p.objs.TestStintT.Set(ts), p.objs.TestStintVol.Set(vol), p.objs.TestStintN.Set(uint32(n))} {
			if err != nil {
				t.Fatal(err)
			}
		}
		if ret, err := p.objs.MlsTestStints.Run(&ebpf.RunOptions{}); err != nil || ret != 0 {
			t.Fatalf("mls_test_stints: ret %d, %v", ret, err)
		}
		raw := make([]byte, n*features.WakeMaxSize)
		if err := p.objs.TestStintOut.Get(raw); err != nil {
			t.Fatal(err)
		}
		var g features.TaskSched
		for i := range n {
			g.StintStart(ts[2*i])
			want := g.State(ts[2*i], ts[2*i+1])
			var e features.WakeEvent
			rec := raw[i*features.WakeMaxSize : (i+1)*features.WakeMaxSize]
			rec[0] = features.EventWake // the type and mask are not filled: a valid empty record
			clear(rec[64:72])
			if err := features.DecodeWake(rec, &e); err != nil {
				t.Fatal(err)
			}
			if got := e.State(); got != want {
				t.Fatalf("trial %d, stint %d: BPF %+v, Go %+v", trial, i, got, want)
			}
			g.StintEnd(ts[2*i], ts[2*i+1], vol[i] == 1)
		}
	}
	var in [64]uint64
	for i := range in {
		in[i] = rng.Uint64() >> uint(rng.IntN(64))
	}
	in[0], in[1], in[2], in[3] = 0, 1023, 1024, features.LogTimeMaxNs+1
	if err := p.objs.TestLtIn.Set(in); err != nil {
		t.Fatal(err)
	}
	if ret, err := p.objs.MlsTestLogTime.Run(&ebpf.RunOptions{}); err != nil || ret != 0 {
		t.Fatalf("mls_test_log_time: ret %d, %v", ret, err)
	}
	var out [64]uint32
	if err := p.objs.TestLtOut.Get(&out); err != nil {
		t.Fatal(err)
	}
	for i, ns := range in {
		if out[i] != features.LogTime(ns) {
			t.Fatalf("mls_log_time(%d) = %d, features.LogTime %d", ns, out[i], features.LogTime(ns))
		}
	}
}
