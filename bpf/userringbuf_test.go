package bpf

import (
	"encoding/binary"
	"errors"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/mlsched/mlsched/features"
)

type urbHarness struct {
	objs urbtestObjects
	w    *UserRingbuf
}

func newURBHarness(t *testing.T) *urbHarness {
	t.Helper()
	requireRoot(t)
	h := &urbHarness{}
	if err := loadUrbtestObjects(&h.objs, nil); err != nil {
		if errors.Is(err, ebpf.ErrNotSupported) {
			t.Skipf("user ring buffers not supported: %v", err)
		}
		t.Fatal(err)
	}
	t.Cleanup(func() { h.objs.Close() })
	w, err := NewUserRingbuf(h.objs.UrbTest)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	h.w = w
	return h
}

// drain runs the BPF reader and returns the sizes and heads it saw.
func (h *urbHarness) drain(t *testing.T) (lens []uint32, heads []uint64) {
	t.Helper()
	if err := h.objs.GotN.Set(uint32(0)); err != nil {
		t.Fatal(err)
	}
	if _, err := h.objs.MlsUrbDrain.Run(&ebpf.RunOptions{}); err != nil {
		t.Fatal(err)
	}
	var ret int64
	var n uint32
	var l [256]uint32
	var hd [256]uint64
	for _, g := range []struct {
		v   *ebpf.Variable
		out any
	}{{h.objs.DrainRet, &ret}, {h.objs.GotN, &n}, {h.objs.GotLen, &l}, {h.objs.GotHead, &hd}} {
		if err := g.v.Get(g.out); err != nil {
			t.Fatal(err)
		}
	}
	if ret < 0 {
		t.Fatalf("bpf_user_ringbuf_drain: %d", ret)
	}
	if int64(n) != ret {
		t.Fatalf("drain returned %d, callback saw %d", ret, n)
	}
	return l[:n], hd[:n]
}

func TestUserRingbufAgainstKernel(t *testing.T) {
	h := newURBHarness(t)
	if h.w.Size() != 4096 {
		t.Fatalf("size %d", h.w.Size())
	}
	// Many rounds of mixed sizes: the producer position wraps the 4 KiB ring many times,
	// and samples straddle its end (the double mapping must make them contiguous).
	seq := uint64(1)
	for round := 0; round < 200; round++ {
		var want []uint32
		for i := 0; i < 1+round%13; i++ {
			n := 8 + (round*7+i*5)%120
			s, err := h.w.Reserve(n)
			if err != nil {
				t.Fatalf("round %d sample %d: %v", round, i, err)
			}
			for j := range s.Data {
				s.Data[j] = byte(j)
			}
			binary.LittleEndian.PutUint64(s.Data, seq)
			h.w.Submit(s)
			want = append(want, uint32(n))
			seq++
		}
		lens, heads := h.drain(t)
		if len(lens) != len(want) {
			t.Fatalf("round %d: kernel read %d samples, wrote %d", round, len(lens), len(want))
		}
		first := seq - uint64(len(want))
		for i := range want {
			if lens[i] != want[i] || heads[i] != first+uint64(i) {
				t.Fatalf("round %d sample %d: got len %d head %d, want %d %d", round, i, lens[i], heads[i], want[i], first+uint64(i))
			}
		}
		if h.w.Free() != h.w.Size() {
			t.Fatalf("round %d: %d bytes free after drain, want %d", round, h.w.Free(), h.w.Size())
		}
	}
}

func TestUserRingbufFullBusyDiscard(t *testing.T) {
	h := newURBHarness(t)
	// 16-byte decisions take 24 bytes each: 170 fit in 4096.
	var n int
	for {
		if err := h.w.Write(make([]byte, features.DecisionSize)); err != nil {
			if !errors.Is(err, ErrRingFull) {
				t.Fatal(err)
			}
			break
		}
		n++
	}
	if n != 4096/24 {
		t.Fatalf("wrote %d samples before full, want %d", n, 4096/24)
	}
	if lens, _ := h.drain(t); len(lens) != n {
		t.Fatalf("drained %d, want %d", len(lens), n)
	}
	// A reserved but unsubmitted sample blocks the ones after it; a discarded one is skipped.
	a, _ := h.w.Reserve(8)
	if err := h.w.Write([]byte{1, 2, 3, 4, 5, 6, 7, 8}); err != nil {
		t.Fatal(err)
	}
	if lens, _ := h.drain(t); len(lens) != 0 {
		t.Fatalf("drained %d samples behind a busy one", len(lens))
	}
	h.w.Discard(a)
	lens, heads := h.drain(t)
	if len(lens) != 1 || heads[0] != 0x0807060504030201 {
		t.Fatalf("after discard: lens %v heads %x", lens, heads)
	}
	if _, err := h.w.Reserve(4096); err == nil {
		t.Fatal("a sample larger than the ring was reserved")
	}
}

func TestUserRingbufWriteAllocs(t *testing.T) {
	h := newURBHarness(t)
	buf := make([]byte, features.DecisionSize)
	allocs := testing.AllocsPerRun(100, func() {
		s, err := h.w.Reserve(len(buf))
		if err != nil {
			h.drain(t)
			return
		}
		copy(s.Data, buf)
		h.w.Submit(s)
	})
	if allocs != 0 {
		t.Fatalf("%v allocs per write", allocs)
	}
}

// Sched.Apply runs a program once per batch of decisions; it must not allocate either.
func TestProgramRunAllocs(t *testing.T) {
	h := newURBHarness(t)
	var opts ebpf.RunOptions
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := h.objs.MlsUrbDrain.Run(&opts); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocs per program run", allocs)
	}
}
