package bpf

import (
	"fmt"
	"os"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/mlsched/mlsched/features"
	"golang.org/x/sys/unix"
)

// requireRoot skips without root, except in CI where a skip would hide a broken test.
func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatal("this test needs root, and CI is set: refusing to skip")
	}
	t.Skip("needs root to load BPF programs")
}

func TestCaptureLoadsAndEmits(t *testing.T) {
	requireRoot(t)
	t.Run("cast", func(t *testing.T) { testCaptureEmits(t, hooksAuto) })
	t.Run("prev_state-argument", func(t *testing.T) { testCaptureEmits(t, hooksNoCast) })
	t.Run("prev_state-probe-read", func(t *testing.T) { testCaptureEmits(t, hooksProbeRead) })
}

// wantHooks is the hook variant LoadCapture must pick for a setting on this kernel.
func wantHooks(t *testing.T, hooks hookSet) string {
	prevState := HooksPrevState
	if !switchHasPrevState(t) { // 5.15-5.17
		prevState = HooksProbeRead
	}
	switch hooks {
	case hooksNoCast:
		return prevState
	case hooksProbeRead:
		return HooksProbeRead
	}
	if err := kernelHasFunc("bpf_rdonly_cast"); err != nil {
		t.Logf("expecting the older hooks: %v", err)
		return prevState
	}
	return HooksCast
}

// switchHasPrevState says whether the kernel's sched_switch tracepoint passes prev_state
// (>= 5.18), from the prototype of its BTF typedef.
func switchHasPrevState(t *testing.T) bool {
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		t.Fatal(err)
	}
	var td *btf.Typedef
	if err := spec.TypeByName("btf_trace_sched_switch", &td); err != nil {
		t.Fatal(err)
	}
	ptr, ok := td.Type.(*btf.Pointer)
	if !ok {
		t.Fatalf("btf_trace_sched_switch is a %T", td.Type)
	}
	fp, ok := ptr.Target.(*btf.FuncProto)
	if !ok {
		t.Fatalf("btf_trace_sched_switch points to a %T", ptr.Target)
	}
	return len(fp.Params) >= 5 // void *, preempt, prev, next, prev_state
}

func testCaptureEmits(t *testing.T, hooks hookSet) {
	c, err := LoadCapture(CaptureConfig{SelfTgid: 0, RingBytes: 1 << 20, LogVerifier: true, hooks: hooks})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if want := wantHooks(t, hooks); c.Hooks != want {
		t.Fatalf("hooks %q attached, want %q (cast: %v)", c.Hooks, want, c.CastErr)
	}
	// A waker/sleeper pair through a pipe generates wakeups.
	r, w, _ := os.Pipe()
	done := make(chan struct{})
	go func() {
		buf := make([]byte, 1)
		for {
			if _, err := r.Read(buf); err != nil {
				close(done)
				return
			}
		}
	}()
	deadline := time.Now().Add(300 * time.Millisecond)
	for time.Now().Before(deadline) {
		w.Write([]byte{1})
		time.Sleep(50 * time.Microsecond)
	}
	w.Close()
	<-done
	c.Detach()
	var rec ringbuf.Record
	var wake features.WakeEvent
	var sw features.SwitchEvent
	wakes, switches, voluntary := 0, 0, 0
	c.Events.SetDeadline(time.Now().Add(100 * time.Millisecond))
	for {
		if err := c.Events.ReadInto(&rec); err != nil {
			break
		}
		switch features.EventType(rec.RawSample) {
		case features.EventWake:
			if err := features.DecodeWake(rec.RawSample, &wake); err != nil {
				t.Fatal(err)
			}
			wakes++
		case features.EventSwitch:
			if err := features.DecodeSwitch(rec.RawSample, &sw); err != nil {
				t.Fatal(err)
			}
			if sw.Voluntary {
				voluntary++
			}
			switches++
		default:
			t.Fatalf("unknown event type %d", rec.RawSample[0])
		}
	}
	cnt, err := c.Counters()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("wakes=%d switches=%d (voluntary %d) counters=%v", wakes, switches, voluntary, cnt)
	if wakes == 0 || switches == 0 {
		t.Fatalf("no events: wakes=%d switches=%d", wakes, switches)
	}
	// The sleeper blocks in read after every byte: some sampled task leaves voluntarily.
	if voluntary == 0 {
		t.Errorf("no voluntary switch among %d", switches)
	}
	if uint64(wakes) != cnt[CntWakeEmitted] {
		t.Errorf("read %d wake events, probes emitted %d", wakes, cnt[CntWakeEmitted])
	}
}

// pinnedCPU returns the one CPU the calling thread may run on.
func pinnedCPU(t *testing.T) int {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		t.Fatal(err)
	}
	if set.Count() != 1 {
		t.Fatalf("thread not pinned: %d CPUs", set.Count())
	}
	for cpu := 0; ; cpu++ {
		if set.IsSet(cpu) {
			return cpu
		}
	}
}

// --max-rate: on a wakeup-heavy ping-pong (hundreds of thousands of wakeups per second on one
// CPU), a capture capped at N samples per second and CPU keeps about that many, and counts the
// rest as sampled out; also below the tick rate (100/s against HZ 250 or 1000), where a tick
// earns less than one sample.
func TestCaptureMaxRate(t *testing.T) {
	requireRoot(t)
	for _, rate := range []uint32{2000, 100} {
		t.Run(fmt.Sprint(rate), func(t *testing.T) { testMaxRate(t, rate) })
	}
}

func testMaxRate(t *testing.T, rate uint32) {
	c, err := LoadCapture(CaptureConfig{SelfTgid: 0, RingBytes: 4 << 20, MaxRate: rate})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	stop := drainEvents(c)
	pp := startPingPong(t, pinSame)
	cpu := pinnedCPU(t)
	start := time.Now()
	for time.Since(start) < time.Second {
		pp.run(1000)
	}
	elapsed := time.Since(start).Seconds()
	pp.stop()
	c.Detach()
	stop()
	// The limit is per waking CPU, and other tests may run on the other CPUs at the same time:
	// count the ping-pong's CPU only.
	perCPU := func(idx Counter) float64 {
		var vals []uint64
		if err := c.objs.Counters.Lookup(uint32(idx), &vals); err != nil {
			t.Fatal(err)
		}
		return float64(vals[cpu])
	}
	total, emitted, out := perCPU(CntWakeTotal), perCPU(CntWakeEmitted), perCPU(CntWakeSampledOut)
	t.Logf("CPU %d, %.2fs: %v wakeups, %v samples, %v sampled out", cpu, elapsed, total, emitted, out)
	want := float64(rate) * elapsed
	if emitted > 1.3*want+10 || emitted < 0.5*want {
		t.Errorf("%v samples in %.2fs at a cap of %d/s", emitted, elapsed, rate)
	}
	if out < 10*emitted {
		t.Errorf("only %v wakeups sampled out against %v samples", out, emitted)
	}
}

// R's on-CPU time in a sample is measured against the time of R's last switch-in: with the
// older hooks, a clock read in every switch; with the cast hooks, where the task leaving
// blocked, the runqueue's clock moved onto ours by an offset (calibrated here on one switch per
// tick, so that most switches go by the offset), else a clock read. Both are checked against
// the switch stream, in two set-ups on one CPU, woken from another:
//   - sleeper: a spinner and a sleeper woken every 2 ms. Each wakeup is a sample with R = the
//     spinner, whose switch-out the probes report; the sleeper runs, blocks, and the spinner
//     comes back (a switch that goes by the offset). So the next sample's on-CPU time is the
//     time since that switch-out less the sleeper's short run: never more, rarely much less.
//   - preempt: a spinner, a task that, woken every 2 ms, spins for 300 us and blocks, and a
//     third task woken 100 us after it. The first wakeup is a sample with R = the spinner,
//     whose switch-out is reported: the woken task preempts it (or takes over at the next
//     tick). The second wakeup is a sample with R = that task, whose switch-in is that same
//     switch: the on-CPU time must end there, to the microsecond (the runqueue's clock is
//     stale in a switch that preempts: a first version used it anyway and came out up to
//     0.7 ms early).
func TestCaptureOnCPUTime(t *testing.T) {
	requireRoot(t)
	var all unix.CPUSet
	if err := unix.SchedGetaffinity(0, &all); err != nil {
		t.Fatal(err)
	}
	if all.Count() < 2 {
		t.Skip("needs two CPUs")
	}
	for _, h := range []struct {
		name  string
		hooks hookSet
	}{{"cast", hooksAuto}, {"prev_state-argument", hooksNoCast}} {
		t.Run(h.name+"/sleeper", func(t *testing.T) { testOnCPUSleeper(t, h.hooks) })
		t.Run(h.name+"/preempt", func(t *testing.T) { testOnCPUPreempt(t, h.hooks) })
	}
}

// onCPUCapture loads the probes for the on-CPU tests: only this process, every wakeup, the
// clock offset calibrated on one switch per tick.
func onCPUCapture(t *testing.T, hooks hookSet) *Capture {
	c, err := LoadCapture(CaptureConfig{SelfTgid: 0, FilterTree: true, RingBytes: 4 << 20, LogVerifier: true,
		hooks: hooks, clockSamples: 1})
	if err != nil {
		t.Fatal(err)
	}
	if want := wantHooks(t, hooks); c.Hooks != want {
		c.Close()
		t.Fatalf("hooks %q attached, want %q (cast: %v)", c.Hooks, want, c.CastErr)
	}
	if err := c.AddTreeTgid(uint32(os.Getpid())); err != nil {
		c.Close()
		t.Fatal(err)
	}
	// A P for every thread of the set-up: a woken thread waiting for one would block again.
	t.Cleanup(func(n int) func() { return func() { runtime.GOMAXPROCS(n) } }(runtime.GOMAXPROCS(16)))
	return c
}

// oneCPU is an on-CPU test's set-up: threads pinned to the first CPU, a spinner among them,
// and pipes to wake them through, all gone at the test's end.
type oneCPU struct {
	t    *testing.T
	wg   sync.WaitGroup
	stop atomic.Bool // ends the spinner
}

// thread runs f on a new thread pinned to the first CPU and returns the thread's id. The
// thread exits with f (locked, never unlocked), so no other goroutine inherits its affinity.
func (o *oneCPU) thread(f func()) uint32 {
	tid := make(chan uint32, 1)
	o.wg.Add(1)
	go func() {
		defer o.wg.Done()
		runtime.LockOSThread()
		pinToCPU(o.t, 0)
		tid <- uint32(unix.Gettid())
		f()
	}()
	return <-tid
}

// spinner starts a thread that spins (no syscall) until done.
func (o *oneCPU) spinner() uint32 {
	return o.thread(func() {
		for !o.stop.Load() {
		}
	})
}

// pipe returns a pipe, closed at the test's end, and a reader that blocks on it until a byte
// comes, false on a 0 byte or error.
func (o *oneCPU) pipe() (read func() bool, w *os.File) {
	r, w, err := os.Pipe()
	if err != nil {
		o.t.Fatal(err)
	}
	o.t.Cleanup(func() { r.Close(); w.Close() })
	fd, buf := int(r.Fd()), make([]byte, 1)
	return func() bool {
		n, err := unix.Read(fd, buf)
		return n == 1 && err == nil && buf[0] != 0
	}, w
}

// waker pins the calling goroutine's thread to the second CPU until the test ends.
func (o *oneCPU) waker() {
	runtime.LockOSThread()
	pinToCPU(o.t, 1)
	o.t.Cleanup(func() { unpin(); runtime.UnlockOSThread() })
}

// done stops the spinner and waits for every thread (the others must have been told to end).
func (o *oneCPU) done() {
	o.stop.Store(true)
	o.wg.Wait()
}

// spinFor busy-waits (no syscall) for d.
func spinFor(d time.Duration) {
	for start := time.Now(); time.Since(start) < d; {
	}
}

// readEvents calls wake and sw for every event left in the ring.
func readEvents(t *testing.T, c *Capture, wake func(*features.WakeEvent), sw func(*features.SwitchEvent)) {
	var rec ringbuf.Record
	var we features.WakeEvent
	var se features.SwitchEvent
	c.Events.SetDeadline(time.Now().Add(100 * time.Millisecond))
	for c.Events.ReadInto(&rec) == nil {
		switch features.EventType(rec.RawSample) {
		case features.EventWake:
			if err := features.DecodeWake(rec.RawSample, &we); err != nil {
				t.Fatal(err)
			}
			wake(&we)
		case features.EventSwitch:
			if err := features.DecodeSwitch(rec.RawSample, &se); err != nil {
				t.Fatal(err)
			}
			sw(&se)
		}
	}
}

func sortedGaps(gaps []int64) []int64 {
	sort.Slice(gaps, func(i, j int) bool { return gaps[i] < gaps[j] })
	return gaps
}

func testOnCPUSleeper(t *testing.T, hooks hookSet) {
	c := onCPUCapture(t, hooks)
	defer c.Close()
	o := &oneCPU{t: t}
	spinner := o.spinner()
	read, w := o.pipe()
	sleeper := o.thread(func() {
		for read() {
		}
	})
	o.waker()
	// For each sample of the sleeper waking while the spinner runs, after a reported
	// switch-out of the spinner since its previous sample: the time since that switch-out
	// minus the spinner's on-CPU time, i.e. how long the spinner was off the CPU. Rounds of 200
	// wakeups until 50 such pairs (other tasks on a busy host take the CPU from the spinner
	// too, and then no sample names it), at most 20 rounds.
	var prevSample, lastOut uint64
	var gaps []int64
	collect := func() {
		readEvents(t, c, func(e *features.WakeEvent) {
			if e.RTid != spinner || e.WTid != sleeper {
				return
			}
			if prevSample != 0 && lastOut > prevSample {
				gaps = append(gaps, int64(e.TsNs-lastOut)-int64(e.ROnCPUNs))
			}
			prevSample = e.TsNs
		}, func(e *features.SwitchEvent) {
			if e.PrevTid == spinner {
				lastOut = e.TsNs
			}
		})
	}
	for round := 0; round < 20 && len(gaps) < 50; round++ {
		for range 200 {
			time.Sleep(2 * time.Millisecond)
			w.Write([]byte{1})
		}
		collect()
	}
	c.Detach()
	w.Write([]byte{0})
	o.done()
	if len(gaps) < 50 {
		t.Fatalf("only %d sample pairs (spinner %d, sleeper %d)", len(gaps), spinner, sleeper)
	}
	var over []int64
	for _, g := range gaps {
		if g < -20_000 { // on-CPU time longer than the time since the switch-out, by > 20 us
			over = append(over, g)
		}
	}
	gaps = sortedGaps(gaps)
	med := gaps[len(gaps)/2]
	t.Logf("%d pairs; time since R's switch-out minus its on-CPU time: min %d, p10 %d, median %d, max %d ns",
		len(gaps), gaps[0], gaps[len(gaps)/10], med, gaps[len(gaps)-1])
	if len(over) > len(gaps)/20 {
		t.Errorf("%d of %d on-CPU times exceed the time since R's switch-out by > 20 us: %v", len(over), len(gaps), over)
	}
	// A gap is the spinner's time off the CPU, which on a busy host includes other tasks'
	// turns: judge the on-CPU time by the gaps where the sleeper alone ran in between (the
	// shortest tenth), which a late or early switch-in time would shift as much as the rest.
	if p10 := gaps[len(gaps)/10]; med < 0 || p10 > 100_000 {
		t.Errorf("gaps p10 %d ns, median %d ns: on-CPU time off", p10, med)
	}
}

func testOnCPUPreempt(t *testing.T, hooks hookSet) {
	c := onCPUCapture(t, hooks)
	defer c.Close()
	o := &oneCPU{t: t}
	spinner := o.spinner()
	readA, wa := o.pipe()
	worker := o.thread(func() {
		for readA() {
			spinFor(300 * time.Microsecond)
		}
	})
	readB, wb := o.pipe()
	o.thread(func() {
		for readB() {
		}
	})
	o.waker()

	// After a sample with R = the spinner, the reported switch from the spinner to the
	// worker; then, for the next sample with R = the worker: the worker's switch-in time
	// implied by its on-CPU time, minus that switch.
	var out uint64
	var gaps []int64
	wake := func(e *features.WakeEvent) {
		switch e.RTid {
		case spinner:
			out = 0
		case worker:
			if out != 0 {
				gaps = append(gaps, int64(e.TsNs-e.ROnCPUNs)-int64(out))
				out = 0
			}
		}
	}
	sw := func(e *features.SwitchEvent) {
		// Only a switch from the spinner to the worker (on a busy machine, other tasks
		// may come in between).
		if e.PrevTid == spinner && out == 0 && e.NextTid == worker {
			out = e.TsNs
		}
	}
	// Rounds of 200 until 50 pairs: the worker takes the CPU straight from the spinner in
	// most rounds on a quiet machine, in few when other tests keep the CPU busy.
	for round := 0; round < 8 && len(gaps) < 50; round++ {
		for range 200 {
			time.Sleep(2 * time.Millisecond)
			wa.Write([]byte{1})
			spinFor(100 * time.Microsecond)
			wb.Write([]byte{1})
		}
		readEvents(t, c, wake, sw)
	}
	c.Detach()
	wa.Write([]byte{0})
	wb.Write([]byte{0})
	o.done()
	if len(gaps) < 50 {
		t.Fatalf("only %d sample pairs (spinner %d, worker %d)", len(gaps), spinner, worker)
	}
	gaps = sortedGaps(gaps)
	early := 0
	for _, g := range gaps {
		if g < -2_000 {
			early++
		}
	}
	t.Logf("%d pairs; worker's switch-in implied by its on-CPU time minus the spinner's switch-out: min %d, p10 %d, median %d, p90 %d, max %d ns",
		len(gaps), gaps[0], gaps[len(gaps)/10], gaps[len(gaps)/2], gaps[len(gaps)*9/10], gaps[len(gaps)-1])
	if early > len(gaps)/20 {
		t.Errorf("%d of %d switch-ins come out more than 2 us before the switch they happened in", early, len(gaps))
	}
	if med := gaps[len(gaps)/2]; med < -1_000 || med > 1_000 {
		t.Errorf("median %d ns: the worker's switch-in should be the spinner's switch-out", med)
	}
}

// CounterPerCPU reads each CPU's own count: their sum is the counter's total (read once the
// probes are detached, when nothing counts any more).
func TestCaptureCounterPerCPU(t *testing.T) {
	requireRoot(t)
	c, err := LoadCapture(CaptureConfig{SelfTgid: 0, RingBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	time.Sleep(200 * time.Millisecond) // some switches
	c.Detach()
	total, err := c.Counters()
	if err != nil {
		t.Fatal(err)
	}
	per, err := c.CounterPerCPU(CntSwitchEmitted, nil)
	if err != nil {
		t.Fatal(err)
	}
	var sum uint64
	for _, v := range per {
		sum += v
	}
	if len(per) != PossibleCPUs() || sum != total[CntSwitchEmitted] || sum == 0 {
		t.Fatalf("%d CPUs, per-CPU sum %d, total %d (want %d CPUs and equal, nonzero)", len(per), sum, total[CntSwitchEmitted], PossibleCPUs())
	}
}
