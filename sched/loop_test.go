package sched

import (
	"encoding/binary"
	"math/rand"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
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

// With --infer kernel BPF submits without waking the reader, so the loop polls: records
// already in the ring when it starts, and records that arrive while it sleeps, are all read
// within a poll or two (an earlier loop set no deadline when it started with a non-empty ring
// and waited for ever), and it drains at most once per poll rather than spinning.
func TestLoopPollsWithoutWakeups(t *testing.T) {
	m := testRing(t)
	rec := rawWake(1, 10, 0, 2, randFeats(rand.New(rand.NewSource(1))))
	prog := noWakeupWriter(t, m, rec)
	defer prog.Close()
	produce := func(n int) {
		for range n {
			if ret, err := prog.Run(&ebpf.RunOptions{Data: make([]byte, 64)}); err != nil || ret != 0 {
				t.Fatalf("writer: ret %d, %v", ret, err)
			}
		}
	}
	rd, err := ringbuf.NewReader(m)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	produce(100) // before the loop starts
	st := &Stats{}
	var stop atomic.Bool
	done := make(chan error, 1)
	const poll = 20 * time.Millisecond
	go func() { done <- loop(rd, NewDecider(nil, nil, st), &fakeWriter{}, nil, &stop, poll) }()
	waitEvents := func(want uint64) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for st.Events.Load() < want {
			if time.Now().After(deadline) {
				t.Fatalf("the loop read %d of %d records (none wakes it: it must poll)", st.Events.Load(), want)
			}
			time.Sleep(time.Millisecond)
		}
	}
	waitEvents(100)
	produce(50) // while it sleeps between polls
	waitEvents(150)
	stop.Store(true)
	if err := rd.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// testRing is a 1 MiB ring buffer map for a BPF writer (root only; CI must not skip).
func testRing(t *testing.T) *ebpf.Map {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("needs root, and CI is set: refusing to skip")
		}
		t.Skip("needs root to create a ring buffer map and a BPF program")
	}
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.RingBuf, MaxEntries: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// noWakeupWriter is a socket filter that copies rec into ring with bpf_ringbuf_output and
// BPF_RB_NO_WAKEUP, as the scheduler submits under --infer kernel.
func noWakeupWriter(t *testing.T, ring *ebpf.Map, rec []byte) *ebpf.Program {
	t.Helper()
	size := (len(rec) + 7) &^ 7
	buf := make([]byte, size)
	copy(buf, rec)
	insns := asm.Instructions{}
	for off := 0; off < size; off += 8 {
		insns = append(insns,
			asm.LoadImm(asm.R1, int64(binary.LittleEndian.Uint64(buf[off:])), asm.DWord),
			asm.StoreMem(asm.RFP, int16(off-size), asm.R1, asm.DWord))
	}
	insns = append(insns,
		asm.LoadMapPtr(asm.R1, ring.FD()),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, int32(-size)),
		asm.Mov.Imm(asm.R3, int32(len(rec))),
		asm.Mov.Imm(asm.R4, 1), // BPF_RB_NO_WAKEUP
		asm.FnRingbufOutput.Call(),
		asm.Mov.Imm(asm.R0, 0),
		asm.Return(),
	)
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.SocketFilter, License: "GPL", Instructions: insns})
	if err != nil {
		t.Fatalf("load the ring writer: %v", err)
	}
	return prog
}
