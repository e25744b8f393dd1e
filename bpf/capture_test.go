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
	switch hooks {
	case hooksNoCast:
		return HooksPrevState
	case hooksProbeRead:
		return HooksProbeRead
	}
	if err := kernelHasFunc("bpf_rdonly_cast"); err != nil {
		t.Logf("expecting the older hooks: %v", err)
		return HooksPrevState
	}
	return HooksCast
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
		case features.EventWakeSparse:
			if err := features.DecodeWakeSparse(rec.RawSample, &wake); err != nil {
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

// features/event.go decodes capture.h's records by offset: check them against the BTF of the
// compiled object.
func TestCaptureLayouts(t *testing.T) {
	spec, err := loadCapture()
	if err != nil {
		t.Fatal(err)
	}
	for typ, want := range map[string]int{
		"mls_wake_event":   features.WakeEventSize,
		"mls_wake_sparse":  features.WakeSparseHeaderSize + 4*features.NumBuckets,
		"mls_switch_event": features.SwitchEventSize,
	} {
		var st *btf.Struct
		if err := spec.Types.TypeByName(typ, &st); err != nil {
			t.Fatalf("%s: %v", typ, err)
		}
		if int(st.Size) != want {
			t.Errorf("sizeof(struct %s) = %d, Go expects %d", typ, st.Size, want)
		}
		if typ != "mls_wake_sparse" {
			continue
		}
		for _, m := range st.Members {
			off := int(m.Offset.Bytes())
			if (m.Name == "nvals" && off != 1) || (m.Name == "mask" && off != 32) ||
				(m.Name == "vals" && off != features.WakeSparseHeaderSize) {
				t.Errorf("mls_wake_sparse.%s at %d", m.Name, off)
			}
		}
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
// older hooks, a clock read in every switch; with the cast hooks, the scheduler's own clock
// (se.exec_start) moved onto ours by an offset taken once per tick. Check both against the
// switch stream: a spinner shares a CPU with a sleeper that another CPU wakes every 2 ms; each
// wakeup is a sample with R = the spinner, whose switch-out the probes report (the sleeper
// runs, blocks, the spinner comes back). So the next sample's on-CPU time is the time since
// that switch-out less the sleeper's short run: never more, rarely much less.
func TestCaptureOnCPUTime(t *testing.T) {
	requireRoot(t)
	var all unix.CPUSet
	if err := unix.SchedGetaffinity(0, &all); err != nil {
		t.Fatal(err)
	}
	if all.Count() < 2 {
		t.Skip("needs two CPUs")
	}
	t.Run("cast", func(t *testing.T) { testOnCPUTime(t, hooksAuto) })
	t.Run("prev_state-argument", func(t *testing.T) { testOnCPUTime(t, hooksNoCast) })
}

func testOnCPUTime(t *testing.T, hooks hookSet) {
	c, err := LoadCapture(CaptureConfig{SelfTgid: 0, RingBytes: 4 << 20, LogVerifier: true, hooks: hooks})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if want := wantHooks(t, hooks); c.Hooks != want {
		t.Fatalf("hooks %q attached, want %q (cast: %v)", c.Hooks, want, c.CastErr)
	}
	var stopSpin atomic.Bool
	spinTid, sleepTid := make(chan int, 1), make(chan int, 1)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(2)
	// Both threads exit with their goroutines (locked, never unlocked), so no other goroutine
	// inherits their affinity.
	go func() { // the spinner, on the first CPU
		defer wg.Done()
		runtime.LockOSThread()
		pinToCPU(t, 0)
		spinTid <- unix.Gettid()
		for !stopSpin.Load() {
		}
	}()
	go func() { // the sleeper, on the same CPU
		defer wg.Done()
		runtime.LockOSThread()
		pinToCPU(t, 0)
		sleepTid <- unix.Gettid()
		buf := make([]byte, 1)
		for {
			if _, err := unix.Read(int(r.Fd()), buf); err != nil || buf[0] == 0 {
				return
			}
		}
	}()
	spinner, sleeper := uint32(<-spinTid), uint32(<-sleepTid)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	pinToCPU(t, 1) // the waker
	defer unpin()
	for range 200 {
		time.Sleep(2 * time.Millisecond)
		w.Write([]byte{1})
	}
	c.Detach()
	w.Write([]byte{0})
	stopSpin.Store(true)
	wg.Wait()
	r.Close()
	w.Close()

	// For each sample of the sleeper waking while the spinner runs, after a reported switch-out
	// of the spinner since its previous sample: the time since that switch-out minus the
	// spinner's on-CPU time, i.e. how long the spinner was off the CPU.
	var rec ringbuf.Record
	var wake features.WakeEvent
	var sw features.SwitchEvent
	var prevSample, lastOut uint64
	var gaps, over []int64
	var nSleeper, nPair, nOut int
	c.Events.SetDeadline(time.Now().Add(100 * time.Millisecond))
	for c.Events.ReadInto(&rec) == nil {
		switch features.EventType(rec.RawSample) {
		case features.EventWakeSparse:
			if err := features.DecodeWakeSparse(rec.RawSample, &wake); err != nil {
				t.Fatal(err)
			}
			if wake.WTid == sleeper {
				nSleeper++
			}
			if wake.RTid != spinner || wake.WTid != sleeper {
				continue
			}
			nPair++
			if prevSample != 0 && lastOut > prevSample {
				gaps = append(gaps, int64(wake.TsNs-lastOut)-int64(wake.ROnCPUNs))
			}
			prevSample = wake.TsNs
		case features.EventSwitch:
			if err := features.DecodeSwitch(rec.RawSample, &sw); err != nil {
				t.Fatal(err)
			}
			if sw.PrevTid == spinner {
				nOut++
				lastOut = sw.TsNs
			}
		}
	}
	t.Logf("samples: %d of the sleeper waking, %d of them with the spinner running; %d switch-outs of the spinner", nSleeper, nPair, nOut)
	if len(gaps) < 50 {
		t.Fatalf("only %d sample pairs (spinner %d, sleeper %d)", len(gaps), spinner, sleeper)
	}
	for _, g := range gaps {
		if g < -20_000 { // on-CPU time longer than the time since the switch-out, by > 20 us
			over = append(over, g)
		}
	}
	sort.Slice(gaps, func(i, j int) bool { return gaps[i] < gaps[j] })
	med := gaps[len(gaps)/2]
	t.Logf("%d pairs; time since R's switch-out minus its on-CPU time: min %d, median %d, max %d ns",
		len(gaps), gaps[0], med, gaps[len(gaps)-1])
	if len(over) > len(gaps)/20 {
		t.Errorf("%d of %d on-CPU times exceed the time since R's switch-out by > 20 us: %v", len(over), len(gaps), over)
	}
	if med < -5_000 || med > 100_000 {
		t.Errorf("median gap %d ns: on-CPU time off", med)
	}
}
