package features

import (
	"encoding/binary"
	"errors"
	"testing"
)

// rawWake lays out a wake record by hand, with the offsets of bpf/abi.h written out (not the
// decoder's constants): header, mask, the nonzero counts in bucket order.
func rawWake(typ uint8, feats *[NumBuckets]uint32) []byte {
	b := make([]byte, 72, 72+4*NumBuckets)
	le := binary.LittleEndian
	b[0], b[2] = typ, 1      // type, flags
	le.PutUint16(b[4:], 3)   // prev_cpu
	le.PutUint16(b[6:], 1)   // waker_cpu
	le.PutUint32(b[8:], 100) // w_tid
	le.PutUint32(b[12:], 200)
	le.PutUint64(b[16:], 123456789)
	le.PutUint64(b[24:], 5000)
	le.PutUint64(b[32:], 77)         // seq
	le.PutUint16(b[40:], 2)          // nr_allowed
	le.PutUint32(b[44:], 40000)      // r_vol
	le.PutUint64(b[48:], 3_000_000)  // r_stint_ns
	le.PutUint64(b[56:], 20_000_000) // r_gap_ns
	var mask uint64
	for i, v := range feats {
		if v != 0 {
			mask |= 1 << i
			b = le.AppendUint32(b, v)
			b[1]++
		}
	}
	le.PutUint64(b[64:], mask)
	return b
}

func TestDecodeWake(t *testing.T) {
	var feats [NumBuckets]uint32
	for _, i := range []int{0, 5, 6, 31, 32, 62, 63} {
		feats[i] = uint32(i*1000 + 1)
	}
	raw := rawWake(EventSchedWake, &feats)
	if len(raw) != WakeHeaderSize+4*7 {
		t.Fatalf("%d bytes", len(raw))
	}
	var e WakeEvent
	e.Feats[7] = 99 // stale values must be cleared
	if err := DecodeWake(raw, &e); err != nil {
		t.Fatal(err)
	}
	want := WakeEvent{Type: EventSchedWake, Flags: 1, PrevCPU: 3, WakerCPU: 1, NrAllowed: 2, WTid: 100, RTid: 200,
		TsNs: 123456789, ROnCPUNs: 5000, RStintNs: 3_000_000, RGapNs: 20_000_000, RVol: 40000, Seq: 77}
	copy(want.Feats[:], feats[:])
	// The extras, worked by hand: log2(1 + ns/1024) with 9 fractional bits.
	// 5000 ns: y = 5, 2 + 1/4; 3 ms: y = 2930, 11 + 882/2048; 20 ms: y = 19532, 14 + 3148/16384.
	want.Feats[InputOnCPU], want.Feats[InputStint], want.Feats[InputGap] = 2<<9|128, 11<<9|220, 14<<9|98
	want.Feats[InputVol] = 40000 >> 3
	if e != want {
		t.Fatalf("decoded %+v\nwant    %+v", e, want)
	}
	var back [WakeMaxSize]byte
	if n := EncodeWake(back[:], &e); string(back[:n]) != string(raw) {
		t.Fatalf("EncodeWake does not invert DecodeWake:\n%x\n%x", back[:n], raw)
	}
	// A record longer than its counts (the scheduler reserves the largest size) decodes alike.
	long := append(append([]byte(nil), raw...), make([]byte, 40)...)
	if err := DecodeWake(long, &e); err != nil || e != want {
		t.Fatalf("long record: %v %+v", err, e)
	}
	var zero [NumBuckets]uint32
	if err := DecodeWake(rawWake(EventWake, &zero), &e); err != nil || *Counts(&e.Feats) != zero {
		t.Fatalf("empty: %v %v", err, e.Feats)
	}
	for cut := range len(raw) {
		if err := DecodeWake(raw[:cut], &e); !errors.Is(err, ErrShortEvent) {
			t.Fatalf("cut at %d: %v", cut, err)
		}
	}
	bad := append([]byte(nil), raw...)
	bad[1] = 6
	if err := DecodeWake(bad, &e); !errors.Is(err, ErrBadEvent) {
		t.Fatalf("count/mask mismatch: %v", err)
	}
}

func TestOutcomeAndDecision(t *testing.T) {
	b := make([]byte, 32)
	le := binary.LittleEndian
	b[0], b[1] = EventSchedOutcome, 1
	le.PutUint16(b[2:], 1)
	le.PutUint32(b[4:], 42)
	le.PutUint64(b[8:], 7)
	le.PutUint64(b[16:], 900)
	le.PutUint64(b[24:], 5)
	var o OutcomeEvent
	if err := DecodeOutcome(b, &o); err != nil {
		t.Fatal(err)
	}
	if want := (OutcomeEvent{Voluntary: true, CPU: 1, RTid: 42, Seq: 7, LeaveNs: 900, TsNs: 5}); o != want {
		t.Fatalf("%+v, want %+v", o, want)
	}
	back := make([]byte, OutcomeSize)
	if EncodeOutcome(back, &o); string(back) != string(b) {
		t.Fatalf("EncodeOutcome does not invert DecodeOutcome")
	}
	if err := DecodeOutcome(b[:31], &o); !errors.Is(err, ErrShortEvent) {
		t.Fatalf("short: %v", err)
	}
	d := Decision{Seq: 1 << 40, WTid: 9, CPU: 3, Action: ActMigrateIdle}
	var db [DecisionSize]byte
	EncodeDecision(db[:], &d)
	if le.Uint64(db[0:]) != 1<<40 || le.Uint32(db[8:]) != 9 || le.Uint16(db[12:]) != 3 || db[14] != 2 || db[15] != 0 {
		t.Fatalf("decision bytes %x", db)
	}
	var dd Decision
	if DecodeDecision(db[:], &dd); dd != d {
		t.Fatalf("%+v", dd)
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
	raw := rawWake(EventWake, typicalFeats())
	var e WakeEvent
	var o OutcomeEvent
	out := make([]byte, OutcomeSize)
	if n := testing.AllocsPerRun(1000, func() { DecodeWake(raw, &e); EncodeOutcome(out, &o); DecodeOutcome(out, &o) }); n != 0 {
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

// BenchmarkDecodeWakeSparse: one sample with 12 nonzero buckets (typical) as read from the ring.
func BenchmarkDecodeWakeSparse(b *testing.B) {
	raw := rawWake(EventWake, typicalFeats())
	var e WakeEvent
	b.ReportAllocs()
	b.SetBytes(int64(len(raw)))
	for b.Loop() {
		DecodeWake(raw, &e)
	}
}

// BenchmarkDecodeWake: one sample with all 64 buckets listed, the largest record (events/s = 1/op).
func BenchmarkDecodeWake(b *testing.B) {
	var all [NumBuckets]uint32
	for i := range all {
		all[i] = uint32(i*1000 + 1)
	}
	raw := rawWake(EventSchedWake, &all)
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
	rawW := rawWake(EventWake, typicalFeats())
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
