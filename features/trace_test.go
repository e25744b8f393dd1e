package features

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
)

func randomSample(rng *rand.Rand, base uint64) Sample {
	s := Sample{
		TsNs: base + rng.Uint64N(1e10), PrevCPU: uint16(rng.IntN(64)), WakerCPU: uint16(rng.IntN(64)),
		WTid: rng.Uint32(), RTid: rng.Uint32(),
	}
	switch rng.IntN(3) {
	case 0:
		s.Label, s.Outcome, s.LeaveNs = 1, OutcomeVoluntary, rng.Uint64N(1e6)
	case 1:
		s.Outcome, s.LeaveNs = OutcomePreempted, rng.Uint64N(1e6)
	default:
		s.Outcome = OutcomeTimeout
	}
	for i := range Counts(&s.Feats) {
		if rng.IntN(4) == 0 {
			s.Feats[i] = 1 + rng.Uint32N(MaxCount)
		}
	}
	s.SetState(SchedState{OnCPUNs: rng.Uint64N(1e9), StintNs: rng.Uint64N(1e8), Vol: rng.Uint32N(VolOne + 1), GapNs: rng.Uint64N(1e10)})
	return s
}

func testHeader() TraceHeader {
	return TraceHeader{SchemaID: SchemaID(), HorizonNs: 1e6, StartUnixNs: 1_700_000_000e9,
		StartKtimeNs: 5e9, NumCPU: 64, KernelRelease: "6.18.0", Hostname: "host", Command: "stress-ng --pipe 1"}
}

// writeTrace writes n random samples and returns the file and the samples.
func writeTrace(t testing.TB, n int, seed uint64) ([]byte, []Sample) {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, seed))
	var buf bytes.Buffer
	h := testHeader()
	w, err := NewTraceWriter(&buf, h)
	if err != nil {
		t.Fatal(err)
	}
	var want []Sample
	for i := 0; i < n; i++ {
		s := randomSample(rng, h.StartKtimeNs)
		want = append(want, s)
		if err := w.Write(&s); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(TraceSummary{DurationNs: 3e9, RingDrops: 7, LostSwitch: 2}); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), want
}

func readAll(data []byte) ([]Sample, *TraceReader, error) {
	r, err := NewTraceReader(bytes.NewReader(data))
	if err != nil {
		return nil, nil, err
	}
	var out []Sample
	for {
		var s Sample
		err := r.Next(&s)
		if err == io.EOF {
			return out, r, nil
		}
		if err != nil {
			return out, r, err
		}
		out = append(out, s)
	}
}

func TestTraceRoundTrip(t *testing.T) {
	data, want := writeTrace(t, 5000, 1) // several blocks
	got, r, err := readAll(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("read %d samples, wrote %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("sample %d differs:\n got %+v\nwant %+v", i, got[i], want[i])
		}
	}
	if h := r.Header(); h != testHeader() {
		if h.Version != TraceVersion || h.Command != testHeader().Command || h.HorizonNs != 1e6 {
			t.Fatalf("header %+v", h)
		}
	}
	sum := r.Summary()
	pos := uint64(0)
	for _, s := range want {
		pos += uint64(s.Label)
	}
	if sum == nil || sum.Samples != 5000 || sum.Positives != pos || sum.RingDrops != 7 || sum.LostSwitch != 2 || sum.DurationNs != 3e9 {
		t.Fatalf("summary %+v", sum)
	}
}

func TestTraceEmpty(t *testing.T) {
	data, _ := writeTrace(t, 0, 1)
	got, r, err := readAll(data)
	if err != nil || len(got) != 0 || r.Summary() == nil {
		t.Fatalf("empty trace: %v, %d samples", err, len(got))
	}
}

func wantTraceErr(t *testing.T, data []byte, kind error) *TraceError {
	t.Helper()
	_, _, err := readAll(data)
	var te *TraceError
	if !errors.As(err, &te) || !errors.Is(err, kind) {
		t.Fatalf("got %v, want a TraceError of kind %v", err, kind)
	}
	return te
}

func TestTraceRejectsCorruption(t *testing.T) {
	good, _ := writeTrace(t, 3000, 2)
	mod := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }

	t.Run("magic", func(t *testing.T) {
		te := wantTraceErr(t, mod(func(b []byte) []byte { b[0] = 'X'; return b }), ErrBadMagic)
		if te.Offset != 0 {
			t.Errorf("offset %d", te.Offset)
		}
	})
	t.Run("version", func(t *testing.T) {
		wantTraceErr(t, mod(func(b []byte) []byte { b[8] = 9; return b }), ErrVersion)
	})
	t.Run("schema", func(t *testing.T) {
		var buf bytes.Buffer
		h := testHeader()
		h.SchemaID++
		w, _ := NewTraceWriter(&buf, h)
		w.Close(TraceSummary{})
		wantTraceErr(t, buf.Bytes(), ErrSchemaMismatch)
		// The schema-agnostic reader still opens it, for inspect.
		if _, err := NewTraceReaderAnySchema(bytes.NewReader(buf.Bytes())); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("header checksum", func(t *testing.T) {
		wantTraceErr(t, mod(func(b []byte) []byte { b[20] ^= 1; return b }), ErrChecksum)
	})
	t.Run("flipped payload byte", func(t *testing.T) {
		te := wantTraceErr(t, mod(func(b []byte) []byte { b[len(b)/2] ^= 0x40; return b }), ErrChecksum)
		if te.Offset <= 0 || te.Offset > int64(len(good)/2) {
			t.Errorf("offset %d, flipped byte at %d", te.Offset, len(good)/2)
		}
	})
	t.Run("trailing data", func(t *testing.T) {
		wantTraceErr(t, mod(func(b []byte) []byte { return append(b, 0) }), ErrTrailingData)
	})
	t.Run("truncated", func(t *testing.T) {
		te := wantTraceErr(t, good[:len(good)-5], ErrTruncated)
		if te.Offset != int64(len(good)-5) {
			t.Errorf("offset %d, file is %d bytes", te.Offset, len(good)-5)
		}
	})
	t.Run("oversized block", func(t *testing.T) {
		hdrLen := 16 + int(good[12]) + int(good[13])<<8 + 4
		wantTraceErr(t, mod(func(b []byte) []byte { b[hdrLen+11] = 0x7f; return b }), ErrCorrupt)
	})
}

// Every prefix of a valid trace fails cleanly with the samples before the cut intact.
func TestTraceEveryTruncation(t *testing.T) {
	good, want := writeTrace(t, 300, 3)
	for n := 0; n < len(good); n += 1 + n/50 {
		got, _, err := readAll(good[:n])
		if err == nil {
			t.Fatalf("prefix of %d/%d bytes read without error", n, len(good))
		}
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("prefix %d: sample %d corrupted", n, i)
			}
		}
	}
}

func FuzzTraceReader(f *testing.F) {
	good, _ := writeTrace(f, 50, 4)
	f.Add(good)
	f.Add(good[:len(good)/2])
	f.Add(good[:40])
	f.Add([]byte(TraceMagic))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := NewTraceReaderAnySchema(bytes.NewReader(data))
		if err != nil {
			return
		}
		var s Sample
		for i := 0; i < 1<<20; i++ {
			if err := r.Next(&s); err != nil {
				if err != io.EOF {
					var te *TraceError
					if !errors.As(err, &te) {
						t.Fatalf("error without offset: %v", err)
					}
				}
				return
			}
		}
	})
}

func BenchmarkTraceWrite(b *testing.B) {
	rng := rand.New(rand.NewPCG(5, 5))
	s := randomSample(rng, 0)
	w, _ := NewTraceWriter(io.Discard, testHeader())
	b.ReportAllocs()
	for b.Loop() {
		w.Write(&s)
	}
}

// A version 1 trace (schema v1, before R's scheduling state) is refused with a message naming
// both versions and what to do.
func TestTraceV1Refused(t *testing.T) {
	data, _ := writeTrace(t, 10, 3)
	data[8] = 1
	_, err := NewTraceReader(bytes.NewReader(data))
	if !errors.Is(err, ErrVersion) {
		t.Fatalf("v1 trace: %v", err)
	}
	for _, want := range []string{"version 1", "reads version 2", "capture it again"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
}
