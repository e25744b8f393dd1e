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

// rawWakeSparse encodes feats as the capture probes do: header, mask, nonzero counts.
func rawWakeSparse(feats *[NumBuckets]uint32) []byte {
	b := make([]byte, WakeSparseHeaderSize, WakeSparseHeaderSize+4*NumBuckets)
	b[0] = EventWakeSparse
	le := binary.LittleEndian
	le.PutUint16(b[2:], 3)
	le.PutUint16(b[4:], 1)
	le.PutUint32(b[8:], 100)
	le.PutUint32(b[12:], 200)
	le.PutUint64(b[16:], 123456789)
	le.PutUint64(b[24:], 5000)
	var mask uint64
	for i, v := range feats {
		if v != 0 {
			mask |= 1 << i
			b = le.AppendUint32(b, v)
			b[1]++
		}
	}
	le.PutUint64(b[32:], mask)
	return b
}

func TestDecodeWakeSparse(t *testing.T) {
	var feats [NumBuckets]uint32
	for _, i := range []int{0, 5, 6, 31, 32, 62, 63} {
		feats[i] = uint32(i*1000 + 1)
	}
	raw := rawWakeSparse(&feats)
	if len(raw) != WakeSparseHeaderSize+4*7 {
		t.Fatalf("%d bytes", len(raw))
	}
	var e WakeEvent
	e.Feats[7] = 99 // stale values must be cleared
	if err := DecodeWakeSparse(raw, &e); err != nil {
		t.Fatal(err)
	}
	if e.PrevCPU != 3 || e.WakerCPU != 1 || e.WTid != 100 || e.RTid != 200 || e.TsNs != 123456789 ||
		e.ROnCPUNs != 5000 || e.Feats != feats {
		t.Fatalf("%+v", e)
	}
	var zero [NumBuckets]uint32
	if err := DecodeWakeSparse(rawWakeSparse(&zero), &e); err != nil || e.Feats != zero {
		t.Fatalf("empty: %v %v", err, e.Feats)
	}
	for cut := range len(raw) {
		if err := DecodeWakeSparse(raw[:cut], &e); !errors.Is(err, ErrShortEvent) {
			t.Fatalf("cut at %d: %v", cut, err)
		}
	}
	bad := append([]byte(nil), raw...)
	bad[1] = 6
	if err := DecodeWakeSparse(bad, &e); !errors.Is(err, ErrBadEvent) {
		t.Fatalf("count/mask mismatch: %v", err)
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
	sparse := rawWakeSparse(typicalFeats())
	var e WakeEvent
	if n := testing.AllocsPerRun(1000, func() { DecodeWake(raw, &e); DecodeWakeSparse(sparse, &e) }); n != 0 {
		t.Fatalf("%v allocations per decode", n)
	}
}

// typicalFeats: 12 nonzero buckets, as a task usually has.
func typicalFeats() *[NumBuckets]uint32 {
	var f [NumBuckets]uint32
	for i := 0; i < 12; i++ {
		f[i*5+1] = uint32(1000 * (i + 1))
	}
	return &f
}

// BenchmarkDecodeWakeSparse: one capture sample (12 nonzero buckets) as read from the ring.
func BenchmarkDecodeWakeSparse(b *testing.B) {
	raw := rawWakeSparse(typicalFeats())
	var e WakeEvent
	b.ReportAllocs()
	b.SetBytes(int64(len(raw)))
	for b.Loop() {
		DecodeWakeSparse(raw, &e)
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
	rawW := rawWakeSparse(typicalFeats())
	var we WakeEvent
	se := SwitchEvent{CPU: 3, PrevTid: 200, Voluntary: true}
	w, _ := NewTraceWriter(discard{}, testHeader())
	j := NewJoiner(8, 1e6, func(s *Sample) error { return w.Write(s) })
	ts := uint64(0)
	b.ReportAllocs()
	for b.Loop() {
		ts += 1000
		DecodeWakeSparse(rawW, &we)
		we.TsNs = ts
		j.Wake(&we)
		se.TsNs = ts + 100
		j.Switch(&se)
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
