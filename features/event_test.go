package features

import (
	"encoding/binary"
	"errors"
	"testing"
)

func rawWake() []byte {
	b := make([]byte, WakeEventSize)
	b[0] = EventWake
	binary.LittleEndian.PutUint16(b[2:], 3)
	binary.LittleEndian.PutUint16(b[4:], 1)
	binary.LittleEndian.PutUint32(b[8:], 100)
	binary.LittleEndian.PutUint32(b[12:], 200)
	binary.LittleEndian.PutUint64(b[16:], 123456789)
	binary.LittleEndian.PutUint64(b[24:], 5000)
	for i := 0; i < NumBuckets; i++ {
		binary.LittleEndian.PutUint32(b[32+4*i:], uint32(i*1000))
	}
	return b
}

func TestDecodeWake(t *testing.T) {
	var e WakeEvent
	if err := DecodeWake(rawWake(), &e); err != nil {
		t.Fatal(err)
	}
	if e.PrevCPU != 3 || e.WakerCPU != 1 || e.WTid != 100 || e.RTid != 200 || e.TsNs != 123456789 ||
		e.ROnCPUNs != 5000 || e.Feats[0] != 0 || e.Feats[63] != 63000 {
		t.Fatalf("%+v", e)
	}
	if err := DecodeWake(rawWake()[:WakeEventSize-1], &e); !errors.Is(err, ErrShortEvent) {
		t.Fatalf("short record: %v", err)
	}
}

func TestDecodeSwitch(t *testing.T) {
	b := make([]byte, SwitchEventSize)
	b[0], b[1] = EventSwitch, 1
	binary.LittleEndian.PutUint16(b[2:], 7)
	binary.LittleEndian.PutUint32(b[4:], 11)
	binary.LittleEndian.PutUint32(b[8:], 12)
	binary.LittleEndian.PutUint64(b[16:], 99)
	var e SwitchEvent
	if err := DecodeSwitch(b, &e); err != nil {
		t.Fatal(err)
	}
	if !e.Voluntary || e.CPU != 7 || e.PrevTid != 11 || e.NextTid != 12 || e.TsNs != 99 {
		t.Fatalf("%+v", e)
	}
	if err := DecodeSwitch(b[:10], &e); !errors.Is(err, ErrShortEvent) {
		t.Fatalf("short record: %v", err)
	}
}

func TestDecodeAllocatesNothing(t *testing.T) {
	raw := rawWake()
	var e WakeEvent
	if n := testing.AllocsPerRun(1000, func() { DecodeWake(raw, &e) }); n != 0 {
		t.Fatalf("%v allocations per decode", n)
	}
}

// BenchmarkDecodeWake: decoding one wake event as read from the ring buffer (events/s = 1/op).
func BenchmarkDecodeWake(b *testing.B) {
	raw := rawWake()
	var e WakeEvent
	b.ReportAllocs()
	b.SetBytes(int64(len(raw)))
	for b.Loop() {
		DecodeWake(raw, &e)
	}
}

// BenchmarkCapturePipeline: decode, join and encode one sample (a wake and its switch-out),
// everything user space does per sample during a capture.
func BenchmarkCapturePipeline(b *testing.B) {
	rawW := rawWake()
	var we WakeEvent
	se := SwitchEvent{CPU: 3, PrevTid: 200, Voluntary: true}
	w, _ := NewTraceWriter(discard{}, testHeader())
	j := NewJoiner(8, 1e6, func(s *Sample) error { return w.Write(s) })
	ts := uint64(0)
	b.ReportAllocs()
	for b.Loop() {
		ts += 1000
		DecodeWake(rawW, &we)
		we.TsNs = ts
		j.Wake(&we)
		se.TsNs = ts + 100
		j.Switch(&se)
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
