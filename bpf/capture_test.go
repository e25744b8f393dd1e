package bpf

import (
	"fmt"
	"os"
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
	t.Run("prev_state-argument", func(t *testing.T) { testCaptureEmits(t, false) })
	t.Run("prev_state-probe-read", func(t *testing.T) { testCaptureEmits(t, true) })
}

func testCaptureEmits(t *testing.T, probeRead bool) {
	c, err := LoadCapture(CaptureConfig{SelfTgid: 0, RingBytes: 1 << 20, LogVerifier: true, switchProbeRead: probeRead})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
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
