package bpf

import (
	"os"
	"testing"
	"time"

	"github.com/cilium/ebpf/ringbuf"
	"github.com/mlsched/mlsched/features"
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
	c, err := LoadCapture(CaptureConfig{SelfTgid: 0, RingBytes: 1 << 20, LogVerifier: true})
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
	wakes, switches := 0, 0
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
			switches++
		default:
			t.Fatalf("unknown event type %d", rec.RawSample[0])
		}
	}
	cnt, err := c.Counters()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("wakes=%d switches=%d counters=%v", wakes, switches, cnt)
	if wakes == 0 || switches == 0 {
		t.Fatalf("no events: wakes=%d switches=%d", wakes, switches)
	}
	if uint64(wakes) != cnt[CntWakeEmitted] {
		t.Errorf("read %d wake events, probes emitted %d", wakes, cnt[CntWakeEmitted])
	}
}
