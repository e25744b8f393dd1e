package sched

import (
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"
)

// The loop must stop on request before the rings are unmapped (a crash in the VM once came
// from reading a closed ring): Flush with stop set ends it.
func TestLoopStopsOnFlush(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("needs root, and CI is set: refusing to skip")
		}
		t.Skip("needs root to create a ring buffer map")
	}
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.RingBuf, MaxEntries: uint32(os.Getpagesize())})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	rd, err := ringbuf.NewReader(m)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	st := &Stats{}
	var stop atomic.Bool
	done := make(chan error, 1)
	go func() { done <- loop(rd, NewDecider(nil, nil, st), &fakeWriter{}, nil, &stop, 0) }()
	// A flush without stop is ignored.
	if err := rd.Flush(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		t.Fatalf("loop returned on a flush without stop: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	stop.Store(true)
	if err := rd.Flush(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("loop did not stop after flush with stop set")
	}
}
