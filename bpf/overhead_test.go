package bpf

import (
	"os"
	"runtime"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"
)

// Capture overhead per syscall: a getppid() loop bare, with an empty raw_tp sys_enter program
// (the cost of enabling the tracepoint at all), with the naive hook (task storage + counter),
// and with the capture probes. Run with -count to compare side by side:
//
//	go test -run '^$' -bench 'Overhead' -count 5 ./bpf
func BenchmarkSyscallOverhead(b *testing.B) {
	requireRoot(b)
	for _, mode := range []string{"bare", "empty", "naive", "capture"} {
		b.Run(mode, func(b *testing.B) {
			detach := attachMode(b, mode)
			defer detach()
			settle()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			b.ReportAllocs()
			for b.Loop() {
				unix.Getppid()
			}
		})
	}
}

// Pipe ping-pong between two threads: every round trip is two writes, two reads, two
// wakeups and context switches, so every capture hook runs. The threads may run anywhere, as
// in `perf bench sched pipe`; on a 2-CPU VM a run then settles on one CPU or on both, which
// moves the round trip between ~6.5 and ~14 us: compare modes within one pinned variant.
func BenchmarkPipePingPong(b *testing.B) {
	benchPingPong(b, pinNone)
}

// Both threads on one CPU: no IPIs or idle exits, the shortest round trip, so the hooks' share
// is the largest (the worst case).
func BenchmarkPipePingPongSameCPU(b *testing.B) {
	benchPingPong(b, pinSame)
}

// One thread on each of two CPUs: every wakeup crosses CPUs.
func BenchmarkPipePingPongCrossCPU(b *testing.B) {
	benchPingPong(b, pinCross)
}

func benchPingPong(b *testing.B, pin pinning) {
	requireRoot(b)
	// empty-all: the capture's three tracepoints with empty programs, the floor of any
	// capture built on them.
	for _, mode := range []string{"bare", "empty-all", "capture", "capture-sample8"} {
		b.Run(mode, func(b *testing.B) {
			detach := attachMode(b, mode)
			defer detach()
			settle()
			pingPong(b, pin)
		})
	}
}

type pinning int

const (
	pinNone pinning = iota
	pinSame
	pinCross
)

// The sys_enter programs' own run time per call, from the kernel's BPF run-time statistics:
// what each hook adds on top of the tracepoint's fixed cost, and much less disturbed by other
// load on the machine than wall-clock time. (Statistics add their own clock reads to the
// syscall, so BenchmarkSyscallOverhead runs without them.)
func BenchmarkSysEnterHookRuntime(b *testing.B) {
	hookRuntime(b, []string{"empty", "naive", "hash", "array", "capture"})
}

// BenchmarkHookBlocks: the run time of the switch and wakeup hooks' building blocks, each
// alone in a sys_enter program (minus "empty" for the block's own cost).
func BenchmarkHookBlocks(b *testing.B) {
	hookRuntime(b, []string{"empty", "ktime", "probe-read", "ringbuf"})
}

func hookRuntime(b *testing.B, modes []string) {
	requireRoot(b)
	stats, err := ebpf.EnableStats(unix.BPF_STATS_RUN_TIME)
	if err != nil {
		b.Skipf("BPF run-time statistics unavailable: %v", err)
	}
	defer stats.Close()
	for _, mode := range modes {
		b.Run(mode, func(b *testing.B) {
			var prog *ebpf.Program
			detach := attachModeProg(b, mode, &prog)
			defer detach()
			settle()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			before, err := prog.Stats()
			if err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				unix.Getppid()
			}
			after, err := prog.Stats()
			if err != nil {
				b.Fatal(err)
			}
			if n := after.RunCount - before.RunCount; n > 0 {
				b.ReportMetric(float64(after.Runtime-before.Runtime)/float64(n), "hook-ns/call")
			}
		})
	}
}

func attachMode(b *testing.B, mode string) func() {
	var prog *ebpf.Program
	return attachModeProg(b, mode, &prog)
}

// settle lets the kernel finish freeing the previous sub-benchmark's maps (tens of MB, freed
// by a deferred kernel worker that would otherwise compete with the next measurement).
func settle() { time.Sleep(500 * time.Millisecond) }

// attachModeProg attaches the sys_enter hook of a mode and sets *prog to it.
func attachModeProg(b *testing.B, mode string, prog **ebpf.Program) func() {
	switch mode {
	case "bare":
		return func() {}
	case "capture", "capture-sample8":
		cfg := CaptureConfig{SelfTgid: 1, RingBytes: 16 << 20}
		if mode == "capture-sample8" {
			cfg.SampleEvery = 8
		}
		c, err := LoadCapture(cfg)
		if err != nil {
			b.Fatal(err)
		}
		stop := drainEvents(c)
		*prog = c.objs.MlsSysEnter
		return func() { stop(); c.Close() }
	}
	var objs testprogsObjects
	if err := loadTestprogsObjects(&objs, nil); err != nil {
		b.Fatal(err)
	}
	*prog = objs.MlsBenchEmpty
	switch mode {
	case "naive":
		*prog = objs.MlsBenchNaive
	case "hash":
		*prog = objs.MlsBenchHash
	case "array":
		*prog = objs.MlsBenchArray
	case "ktime":
		*prog = objs.MlsBenchKtime
	case "probe-read":
		*prog = objs.MlsBenchProbeRead
	case "ringbuf":
		*prog = objs.MlsBenchRingbuf
	}
	l, err := link.AttachRawTracepoint(link.RawTracepointOptions{Name: "sys_enter", Program: *prog})
	if err != nil {
		objs.Close()
		b.Fatal(err)
	}
	if mode != "empty-all" {
		return func() { l.Close(); objs.Close() }
	}
	detach := attachEmpty(b, &objs, "sched_switch", "sched_waking")
	return func() { detach(); l.Close(); objs.Close() }
}

// Where the capture's cost goes in a pipe ping-pong: each hook's own run time per call.
func BenchmarkPipePingPongHooks(b *testing.B) {
	requireRoot(b)
	stats, err := ebpf.EnableStats(unix.BPF_STATS_RUN_TIME)
	if err != nil {
		b.Skipf("BPF run-time statistics unavailable: %v", err)
	}
	defer stats.Close()
	ringMB := 64
	if v, err := strconv.Atoi(os.Getenv("MLSCHED_BENCH_RING_MB")); err == nil {
		ringMB = v
	}
	// Every wakeup is sampled unless MLSCHED_BENCH_MAX_RATE sets a cap (e.g. 20000, the default).
	maxRate := 0
	if v, err := strconv.Atoi(os.Getenv("MLSCHED_BENCH_MAX_RATE")); err == nil {
		maxRate = v
	}
	c, err := LoadCapture(CaptureConfig{SelfTgid: 1, RingBytes: uint32(ringMB) << 20, MaxRate: uint32(maxRate)})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	stop := drainEvents(c)
	defer stop()
	// Whichever switch hook is attached reports (the other does not run).
	progs := map[string]*ebpf.Program{"sys_enter": c.objs.MlsSysEnter, "sched_switch": c.objs.MlsSchedSwitch4,
		"sched_switch3": c.objs.MlsSchedSwitch, "sched_waking": c.objs.MlsSchedWaking}
	if c.objs.MlsSchedSwitchCast != nil {
		progs["sched_switch_cast"], progs["sched_waking_cast"] = c.objs.MlsSchedSwitchCast, c.objs.MlsSchedWakingCast
	}
	before := map[string]*ebpf.ProgramStats{}
	for n, p := range progs {
		before[n], _ = p.Stats()
	}
	pingPong(b, pinSame)
	for n, p := range progs {
		after, _ := p.Stats()
		if d := after.RunCount - before[n].RunCount; d > 0 {
			b.ReportMetric(float64(after.Runtime-before[n].Runtime)/float64(d), n+"-ns/call")
			b.ReportMetric(float64(d)/float64(b.N), n+"-calls/op")
		}
	}
}

// pingPong bounces a byte between two threads through two pipes, b.N round trips.
func pingPong(b *testing.B, pin pinning) {
	pp := startPingPong(b, pin)
	defer pp.stop()
	for b.Loop() {
		pp.run(1)
	}
}

// pinToCPU binds the calling (locked) thread to one CPU (modulo the CPUs this process may use),
// so that a ping-pong always crosses the same two CPUs: without it, the scheduler's choice
// between same-CPU and cross-CPU wakeups moved a round trip between 6.5 and 13.5 us from one
// run to the next.
func pinToCPU(b testing.TB, i int) {
	var all, set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &all); err != nil {
		b.Fatal(err)
	}
	n := 0
	for cpu := 0; cpu < 1024 && n <= i; cpu++ {
		if all.IsSet(cpu) {
			if n == i%all.Count() {
				set.Set(cpu)
				break
			}
			n++
		}
	}
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		b.Fatal(err)
	}
}

// unpin lets the calling thread run anywhere again.
func unpin() {
	var set unix.CPUSet
	for cpu := range runtime.NumCPU() {
		set.Set(cpu)
	}
	unix.SchedSetaffinity(0, &set)
}

// drainEvents reads c's ring buffer every 50 ms, as mlsched capture does, so that the ring
// never fills and drops do not change the work done. The returned function stops it.
func drainEvents(c *Capture) func() {
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		var rec ringbuf.Record
		for {
			select {
			case <-stop:
				return
			default:
			}
			c.Events.SetDeadline(time.Now().Add(50 * time.Millisecond))
			for c.Events.ReadInto(&rec) == nil {
			}
		}
	}()
	return func() { close(stop); <-done }
}

// BenchmarkPipePingPongPaired measures the capture's cost on a pipe ping-pong as the median
// ratio of paired runs: the probes stay loaded, and each pair runs the same number of round
// trips with the probes detached and attached (in alternating order), so that the machine's
// drift, which moves single runs by tens of percent here, cancels out. One b.N iteration is one
// pair; run it with a pair count, e.g.
//
//	go test -run '^$' -bench PipePingPongPaired -benchtime 31x ./bpf
//
// ratio = capture / bare time per round trip (1.10 is +10%), with its quartiles; floor-ratio =
// the capture's three tracepoints with empty programs / bare; over-floor-ratio = capture / floor.
//
// Sub-benchmarks: where the threads run (free, same-cpu, cross-cpu), then the capture's
// sampling: "default" (mlsched capture's default --max-rate) or "every-wakeup" (--max-rate 0).
func BenchmarkPipePingPongPaired(b *testing.B) {
	for _, v := range []struct {
		name string
		pin  pinning
	}{{"free", pinNone}, {"same-cpu", pinSame}, {"cross-cpu", pinCross}} {
		b.Run(v.name, func(b *testing.B) {
			b.Run("default", func(b *testing.B) { pairedPingPong(b, v.pin, DefaultMaxRate) })
			b.Run("every-wakeup", func(b *testing.B) { pairedPingPong(b, v.pin, 0) })
		})
	}
}

func pairedPingPong(b *testing.B, pin pinning, maxRate uint32) {
	requireRoot(b)
	c, empty, cleanup := pairedSetup(b, maxRate)
	defer cleanup()
	pp := startPingPong(b, pin)
	defer pp.stop()

	// The arms: nothing attached; the floor (the capture's three tracepoints with empty
	// programs: what any capture built on them costs); the capture.
	arms := []func() func(){
		func() func() { return func() {} },
		func() func() {
			return attachEmpty(b, empty, "sys_enter", "sched_switch", "sched_waking")
		},
		captureArm(b, c, hooksAuto),
		// The hooks of kernels before 6.2 (probe reads, a clock read per switch), where
		// this kernel has newer ones.
		captureArm(b, c, hooksNoCast),
	}
	roundTrips := 2000
	if v, err := strconv.Atoi(os.Getenv("MLSCHED_BENCH_ROUND_TRIPS")); err == nil && v > 0 {
		roundTrips = v
	}
	t := pairedRuns(b, arms, func() { pp.run(200) }, func() { pp.run(roundTrips) }, roundTrips)
	var capBare, floorBare, capFloor []float64
	for i := range t[0] {
		capBare = append(capBare, t[2][i]/t[0][i])
		floorBare = append(floorBare, t[1][i]/t[0][i])
		capFloor = append(capFloor, t[2][i]/t[1][i])
	}
	b.ReportMetric(median(capBare), "ratio")
	b.ReportMetric(quantile(capBare, 0.25), "ratio-q1")
	b.ReportMetric(quantile(capBare, 0.75), "ratio-q3")
	b.ReportMetric(median(floorBare), "floor-ratio")
	b.ReportMetric(median(capFloor), "over-floor-ratio")
	if c.objs.MlsSchedSwitchCast != nil {
		var old []float64
		for i := range t[0] {
			old = append(old, t[3][i]/t[0][i])
		}
		b.ReportMetric(median(old), "pre6.2-hooks-ratio")
		b.ReportMetric(quantile(t[3], 0.1)/quantile(t[0], 0.1), "p10-pre6.2-hooks-ratio")
	}
	// Other load on the machine only ever adds time, and spreads the per-round ratios (their
	// quartiles are often 20 points apart here): the ratio of each arm's fastest rounds (10th
	// percentile) shows what the hooks themselves cost.
	b.ReportMetric(quantile(t[2], 0.1)/quantile(t[0], 0.1), "p10-ratio")
	b.ReportMetric(quantile(t[1], 0.1)/quantile(t[0], 0.1), "p10-floor-ratio")
	// Each arm's spread: with the threads free, rounds mix time on one CPU (~4 us per round
	// trip) and on two (~14 us) in proportions that the hooks shift.
	for i, arm := range []string{"bare", "floor", "capture"} {
		b.ReportMetric(quantile(t[i], 0.1), arm+"-p10-ns/rt")
		b.ReportMetric(median(t[i]), arm+"-ns/rt")
		b.ReportMetric(quantile(t[i], 0.9), arm+"-p90-ns/rt")
	}
}

// captureArm is a paired benchmark's arm that attaches the capture probes' hooks.
func captureArm(b *testing.B, c *Capture, hooks hookSet) func() func() {
	return func() func() {
		if err := c.attach(hooks); err != nil {
			b.Fatal(err)
		}
		return c.Detach
	}
}

// pairedSetup loads the capture probes (detached, their ring drained) and the empty test
// programs for a paired benchmark.
func pairedSetup(b *testing.B, maxRate uint32) (*Capture, *testprogsObjects, func()) {
	requireRoot(b)
	c, err := LoadCapture(CaptureConfig{SelfTgid: 1, RingBytes: 16 << 20, MaxRate: maxRate})
	if err != nil {
		b.Fatal(err)
	}
	stop := drainEvents(c)
	c.Detach()
	var empty testprogsObjects
	if err := loadTestprogsObjects(&empty, nil); err != nil {
		stop()
		c.Close()
		b.Fatal(err)
	}
	return c, &empty, func() { empty.Close(); stop(); c.Close() }
}

// pairedRuns runs, for each b.N iteration, every arm once in rotating order: attach it, warm
// up, time work (ops operations), detach. It returns the ns per operation, per arm and round.
func pairedRuns(b *testing.B, arms []func() func(), warm, work func(), ops int) [][]float64 {
	t := make([][]float64, len(arms))
	i := 0
	for b.Loop() {
		for k := range arms {
			arm := (i + k) % len(arms)
			detach := arms[arm]()
			warm()
			start := time.Now()
			work()
			t[arm] = append(t[arm], float64(time.Since(start).Nanoseconds())/float64(ops))
			detach()
		}
		i++
	}
	return t
}

// attachEmpty attaches the empty test programs to the named tracepoints.
func attachEmpty(b testing.TB, objs *testprogsObjects, tps ...string) func() {
	progs := map[string]*ebpf.Program{"sys_enter": objs.MlsBenchEmpty,
		"sched_switch": objs.MlsBenchEmptySwitch, "sched_waking": objs.MlsBenchEmptyWaking}
	var ls []link.Link
	for _, tp := range tps {
		l, err := link.AttachRawTracepoint(link.RawTracepointOptions{Name: tp, Program: progs[tp]})
		if err != nil {
			b.Fatal(err)
		}
		ls = append(ls, l)
	}
	return func() {
		for _, l := range ls {
			l.Close()
		}
	}
}

// BenchmarkSyscallOverheadPaired: what the capture's sys_enter hook adds to a getppid() over an
// empty sys_enter program (the tracepoint's own cost), as the median of paired differences.
// One b.N iteration is one round of the three arms (bare, empty, capture); e.g.
//
//	go test -run '^$' -bench SyscallOverheadPaired -benchtime 31x ./bpf
func BenchmarkSyscallOverheadPaired(b *testing.B) {
	requireRoot(b)
	c, empty, cleanup := pairedSetup(b, DefaultMaxRate)
	defer cleanup()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	arms := []func() func(){
		func() func() { return func() {} },
		func() func() { return attachEmpty(b, empty, "sys_enter") },
		captureArm(b, c, hooksAuto),
	}
	const calls = 200000
	loop := func(n int) func() {
		return func() {
			for range n {
				unix.Getppid()
			}
		}
	}
	t := pairedRuns(b, arms, loop(1000), loop(calls), calls)
	var overEmpty, emptyOverBare []float64
	for i := range t[0] {
		overEmpty = append(overEmpty, t[2][i]-t[1][i])
		emptyOverBare = append(emptyOverBare, t[1][i]-t[0][i])
	}
	b.ReportMetric(median(overEmpty), "capture-minus-empty-ns")
	b.ReportMetric(quantile(overEmpty, 0.25), "q1-ns")
	b.ReportMetric(quantile(overEmpty, 0.75), "q3-ns")
	b.ReportMetric(median(emptyOverBare), "empty-minus-bare-ns")
	b.ReportMetric(median(t[0]), "bare-ns/call")
}

func median(xs []float64) float64 { return quantile(xs, 0.5) }

// quantile of xs by linear interpolation between order statistics.
func quantile(xs []float64, q float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s) == 0 {
		return 0
	}
	pos := q * float64(len(s)-1)
	lo := int(pos)
	if lo+1 >= len(s) {
		return s[lo]
	}
	return s[lo] + (pos-float64(lo))*(s[lo+1]-s[lo])
}

// pingPonger is a ping-pong partner thread that stays up between runs.
type pingPonger struct {
	b      testing.TB
	p1, p2 [2]int
	done   chan struct{}
	pin    pinning
}

func startPingPong(b testing.TB, pin pinning) *pingPonger {
	pp := &pingPonger{b: b, done: make(chan struct{}), pin: pin}
	if err := unix.Pipe(pp.p1[:]); err != nil {
		b.Fatal(err)
	}
	if err := unix.Pipe(pp.p2[:]); err != nil {
		b.Fatal(err)
	}
	go func() {
		runtime.LockOSThread()
		switch pin {
		case pinSame:
			pinToCPU(b, 0)
		case pinCross:
			pinToCPU(b, 1)
		}
		buf := make([]byte, 1)
		for {
			if n, _ := unix.Read(pp.p1[0], buf); n != 1 || buf[0] == 0 {
				close(pp.done)
				return
			}
			unix.Write(pp.p2[1], buf)
		}
	}()
	runtime.LockOSThread()
	if pin != pinNone {
		pinToCPU(b, 0)
	}
	return pp
}

// run does n round trips from the calling (locked) goroutine.
func (pp *pingPonger) run(n int) {
	buf := []byte{1}
	for range n {
		unix.Write(pp.p1[1], buf)
		unix.Read(pp.p2[0], buf)
	}
}

func (pp *pingPonger) stop() {
	unix.Write(pp.p1[1], []byte{0})
	<-pp.done
	for _, fd := range []int{pp.p1[0], pp.p1[1], pp.p2[0], pp.p2[1]} {
		unix.Close(fd)
	}
	if pp.pin != pinNone {
		unpin()
	}
	runtime.UnlockOSThread()
}

// Where the floor goes: empty programs on the syscall tracepoint alone, on the two scheduler
// tracepoints alone, and on all three, against nothing attached (one CPU).
func BenchmarkPipePingPongFloor(b *testing.B) {
	requireRoot(b)
	var empty testprogsObjects
	if err := loadTestprogsObjects(&empty, nil); err != nil {
		b.Fatal(err)
	}
	defer empty.Close()
	pp := startPingPong(b, pinSame)
	defer pp.stop()
	arms := []func() func(){
		func() func() { return func() {} },
		func() func() { return attachEmpty(b, &empty, "sys_enter") },
		func() func() { return attachEmpty(b, &empty, "sched_switch", "sched_waking") },
		func() func() { return attachEmpty(b, &empty, "sys_enter", "sched_switch", "sched_waking") },
	}
	const roundTrips = 2000
	t := pairedRuns(b, arms, func() { pp.run(200) }, func() { pp.run(roundTrips) }, roundTrips)
	for i, name := range []string{"", "sys_enter", "sched", "all"} {
		if i == 0 {
			continue
		}
		var r []float64
		for k := range t[0] {
			r = append(r, t[i][k]/t[0][k])
		}
		b.ReportMetric(median(r), name+"-ratio")
		b.ReportMetric(quantile(t[i], 0.1)/quantile(t[0], 0.1), name+"-p10-ratio")
	}
	b.ReportMetric(median(t[0]), "bare-ns/rt")
}
