package model

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/mlsched/mlsched/features"
)

// testModel returns a valid model with random parameters and full metadata.
func testModel(rng *rand.Rand, hidden int) *Model {
	m := New(hidden, 2_000_000)
	for i := range m.Mean {
		m.Mean[i] = float32(rng.Float64() * 1.5)
		m.Std[i] = float32(0.3 + rng.Float64())
	}
	for _, xs := range [][]float32{m.W1, m.B1, m.W2} {
		for i := range xs {
			xs[i] = float32(rng.NormFloat64() * 0.5)
		}
	}
	m.B2 = -0.25
	m.Threshold = 0.6
	m.Meta = Meta{
		CreatedUnixNs: 1_760_000_000_123_456_789,
		Metrics: Metrics{
			Accuracy: 0.87, BalancedAccuracy: 0.85, Precision: 0.8, Recall: 0.9, AUC: 0.93,
			Baselines: []Baseline{{"always-keep", 0.55}, {"always-migrate", 0.45}, {"majority", 0.55}},
		},
		Data:  DataSummary{Samples: 1_000_000, Positives: 550_000, Traces: []string{"nginx-1.trace", "redis.trace"}},
		Notes: map[string]string{"trainer": "gorgonia", "epochs": "20", "lr": "0.01", "empty": ""},
	}
	return m
}

// reseal recomputes the checksum of a (modified) model file in place.
func reseal(b []byte) []byte {
	n := len(b) - 4
	binary.LittleEndian.PutUint32(b[n:], crc32.Checksum(b[:n], castagnoli))
	return b
}

// paramsEnd is the offset of the metadata, right after b2.
func paramsEnd(hidden int) int { return headerSize + 4*(2*NumInputs+hidden*NumInputs+2*hidden+1) }

func mustMarshal(t testing.TB, m *Model) []byte {
	t.Helper()
	b, err := m.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestRoundTrip(t *testing.T) {
	for _, hidden := range []int{1, 16, 37, MaxHidden} {
		m := testModel(rand.New(rand.NewPCG(1, uint64(hidden))), hidden)
		b := mustMarshal(t, m)
		got, err := Unmarshal(b)
		if err != nil {
			t.Fatalf("hidden %d: %v", hidden, err)
		}
		if !reflect.DeepEqual(got, m) {
			t.Fatalf("hidden %d: round trip changed the model:\n got %+v\nwant %+v", hidden, got.Meta, m.Meta)
		}
		if b2 := mustMarshal(t, got); !bytes.Equal(b, b2) {
			t.Fatalf("hidden %d: marshal -> unmarshal -> marshal differs", hidden)
		}
	}
}

func TestRoundTripNaNMetricsAndEmptyMeta(t *testing.T) {
	m := New(DefaultHidden, 1)
	m.Meta.Metrics.AUC = math.NaN()
	b := mustMarshal(t, m)
	got, err := Unmarshal(b)
	if err != nil {
		t.Fatal(err)
	}
	if !math.IsNaN(got.Meta.Metrics.AUC) || got.Meta.Notes != nil || got.Meta.Data.Traces != nil {
		t.Fatalf("meta %+v", got.Meta)
	}
	if !bytes.Equal(b, mustMarshal(t, got)) {
		t.Fatal("marshal -> unmarshal -> marshal differs")
	}
}

func TestLayout(t *testing.T) {
	m := testModel(rand.New(rand.NewPCG(2, 2)), DefaultHidden)
	b := mustMarshal(t, m)
	le := binary.LittleEndian
	if string(b[:8]) != Magic || le.Uint32(b[8:]) != Version || le.Uint32(b[12:]) != NormLog1pStandardize ||
		le.Uint64(b[16:]) != features.SchemaID() || le.Uint32(b[24:]) != features.NumInputs || le.Uint32(b[28:]) != 16 ||
		le.Uint32(b[32:]) != 1 || math.Float32frombits(le.Uint32(b[36:])) != m.Threshold ||
		le.Uint64(b[40:]) != m.HorizonNs {
		t.Fatalf("header % x", b[:48])
	}
	if got := math.Float32frombits(le.Uint32(b[48:])); got != m.Mean[0] {
		t.Fatalf("mean[0] at 48 = %v, want %v", got, m.Mean[0])
	}
	w1 := 48 + 4*2*NumInputs
	if got := math.Float32frombits(le.Uint32(b[w1+4*(1*NumInputs+2):])); got != m.W1[1*NumInputs+2] {
		t.Fatalf("w1[1][2] = %v, want %v", got, m.W1[NumInputs+2])
	}
	pe := paramsEnd(16)
	if got := math.Float32frombits(le.Uint32(b[pe-4:])); got != m.B2 {
		t.Fatalf("b2 = %v", got)
	}
	if got := int64(le.Uint64(b[pe:])); got != m.Meta.CreatedUnixNs {
		t.Fatalf("created = %v", got)
	}
}

func TestCorruption(t *testing.T) {
	m := testModel(rand.New(rand.NewPCG(3, 3)), DefaultHidden)
	good := mustMarshal(t, m)
	le := binary.LittleEndian
	pe := paramsEnd(DefaultHidden)
	f32 := func(off int, v float32) func([]byte) []byte {
		return func(b []byte) []byte { le.PutUint32(b[off:], math.Float32bits(v)); return reseal(b) }
	}
	u32 := func(off int, v uint32, seal bool) func([]byte) []byte {
		return func(b []byte) []byte {
			le.PutUint32(b[off:], v)
			if seal {
				reseal(b)
			}
			return b
		}
	}
	f64 := func(off int, v float64) func([]byte) []byte {
		return func(b []byte) []byte { le.PutUint64(b[off:], math.Float64bits(v)); return reseal(b) }
	}
	const (
		mean = headerSize
		std  = mean + 4*NumInputs
		w1   = std + 4*NumInputs
		b1   = w1 + 4*NumInputs*16
		w2   = b1 + 4*16
		b2   = w2 + 4*16
	)
	baselines := pe + 8 + 5*8 // count of baselines
	cases := []struct {
		name string
		mod  func([]byte) []byte
		want error
	}{
		{"empty", func([]byte) []byte { return nil }, ErrTruncated},
		{"magic prefix only", func(b []byte) []byte { return b[:5] }, ErrTruncated},
		{"bad magic", func(b []byte) []byte { b[0] = 'X'; return b }, ErrBadMagic},
		{"short bad magic", func([]byte) []byte { return []byte("ELF") }, ErrBadMagic},
		{"version 4", u32(8, 4, true), ErrVersion},
		{"version 2", u32(8, 2, true), ErrVersion},
		{"version 0", u32(8, 0, false), ErrVersion},
		{"norm kind", u32(12, 7, true), ErrNorm},
		{"schema", func(b []byte) []byte { le.PutUint64(b[16:], features.SchemaID()^1); return reseal(b) }, ErrSchemaMismatch},
		{"inputs 63", u32(24, 63, false), ErrDims},
		{"hidden 0", u32(28, 0, false), ErrDims},
		{"hidden 1025", u32(28, MaxHidden+1, false), ErrDims},
		{"hidden huge", u32(28, math.MaxUint32, false), ErrDims},
		{"hidden 1024 short file", u32(28, MaxHidden, false), ErrTruncated},
		{"outputs 2", u32(32, 2, false), ErrDims},
		{"threshold 0", f32(36, 0), ErrThreshold},
		{"threshold 1", f32(36, 1), ErrThreshold},
		{"threshold -0.5", f32(36, -0.5), ErrThreshold},
		{"threshold NaN", f32(36, float32(math.NaN())), ErrNonFinite},
		{"horizon 0", func(b []byte) []byte { le.PutUint64(b[40:], 0); return reseal(b) }, ErrHorizon},
		{"horizon 2^63+5", func(b []byte) []byte { le.PutUint64(b[40:], 1<<63+5); return reseal(b) }, ErrHorizon},
		{"horizon 61 s", func(b []byte) []byte { le.PutUint64(b[40:], 61e9); return reseal(b) }, ErrHorizon},
		{"mean Inf", f32(mean+4*5, float32(math.Inf(1))), ErrNonFinite},
		{"mean huge", f32(mean+4*5, 1e7), ErrRange},
		{"std 0", f32(std+4*9, 0), ErrNorm},
		{"std negative", f32(std+4*9, -1), ErrNorm},
		{"std tiny", f32(std+4*9, 1e-20), ErrNorm},
		{"std NaN", f32(std+4*9, float32(math.NaN())), ErrNonFinite},
		{"w1 NaN", f32(w1+4*100, float32(math.NaN())), ErrNonFinite},
		{"w1 -Inf", f32(w1, float32(math.Inf(-1))), ErrNonFinite},
		{"w1 huge", f32(w1+4*7, -2e6), ErrRange},
		{"b1 NaN", f32(b1+4*15, float32(math.NaN())), ErrNonFinite},
		{"w2 Inf", f32(w2, float32(math.Inf(1))), ErrNonFinite},
		{"b2 NaN", f32(b2, float32(math.NaN())), ErrNonFinite},
		{"accuracy 1.5", f64(pe+8, 1.5), ErrMeta},
		{"auc -Inf", f64(pe+8+4*8, math.Inf(-1)), ErrMeta},
		{"baselines count huge", u32(baselines, math.MaxUint32, false), ErrMeta},
		{"baselines count past end", u32(baselines, MaxListLen, false), ErrTruncated},
		{"baseline name huge", u32(baselines+4, MaxStringLen+1, false), ErrMeta},
		{"baseline name past end", u32(baselines+4, MaxStringLen, false), ErrTruncated},
		{"baseline name empty", func(b []byte) []byte {
			// "always-keep" (11 bytes) -> "" followed by 11 garbage bytes: misparses into garbage.
			le.PutUint32(b[baselines+4:], 0)
			return reseal(b)
		}, nil},
		{"positives > samples", func(b []byte) []byte {
			bl := baselines + 4
			for _, s := range m.Meta.Metrics.Baselines {
				bl += 4 + len(s.Name) + 8
			}
			le.PutUint64(b[bl+8:], 2_000_000)
			return reseal(b)
		}, ErrMeta},
		{"notes unsorted", func(b []byte) []byte {
			i := bytes.Index(b, []byte("empty"))
			copy(b[i:], "zzzzz")
			return reseal(b)
		}, ErrMeta},
		{"trace not utf8", func(b []byte) []byte {
			i := bytes.Index(b, []byte("redis"))
			b[i] = 0xff
			return reseal(b)
		}, ErrMeta},
		{"flipped weight bit", func(b []byte) []byte { b[w1+3] ^= 0x04; return b }, ErrChecksum},
		{"flipped meta bit", func(b []byte) []byte { b[pe+1] ^= 0x80; return b }, ErrChecksum},
		{"flipped checksum bit", func(b []byte) []byte { b[len(b)-1] ^= 1; return b }, ErrChecksum},
		{"trailing byte", func(b []byte) []byte { return append(b, 0) }, ErrTrailingData},
		{"trailing model", func(b []byte) []byte { return append(b, good...) }, ErrTrailingData},
	}
	all := []error{ErrBadMagic, ErrVersion, ErrSchemaMismatch, ErrDims, ErrNorm, ErrNonFinite, ErrRange,
		ErrThreshold, ErrHorizon, ErrMeta, ErrTruncated, ErrChecksum, ErrTrailingData}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := c.mod(bytes.Clone(good))
			got, err := Unmarshal(b)
			if c.want == nil {
				if err == nil {
					t.Fatalf("accepted a corrupted file: %+v", got)
				}
				t.Logf("error: %v", err)
				return
			}
			if !errors.Is(err, c.want) {
				t.Fatalf("error %v, want %v", err, c.want)
			}
			for _, other := range all {
				if other != c.want && errors.Is(err, other) {
					t.Fatalf("error %v also matches %v", err, other)
				}
			}
			if got != nil {
				t.Fatal("non-nil model with an error")
			}
			t.Logf("error: %v", err)
		})
	}
}

func TestEveryTruncation(t *testing.T) {
	good := mustMarshal(t, testModel(rand.New(rand.NewPCG(4, 4)), 3))
	for n := range len(good) {
		if _, err := Unmarshal(good[:n]); !errors.Is(err, ErrTruncated) {
			t.Fatalf("truncated to %d of %d bytes: %v", n, len(good), err)
		}
	}
}

func TestMarshalRefusesInvalid(t *testing.T) {
	for name, mod := range map[string]func(*Model){
		"schema":    func(m *Model) { m.SchemaID++ },
		"short w1":  func(m *Model) { m.W1 = m.W1[:10] },
		"hidden":    func(m *Model) { m.Hidden = 0 },
		"threshold": func(m *Model) { m.Threshold = 1 },
		"nan":       func(m *Model) { m.B1[0] = float32(math.NaN()) },
		"note key":  func(m *Model) { m.Meta.Notes = map[string]string{"": "x"} },
	} {
		m := New(DefaultHidden, 1)
		mod(m)
		if _, err := m.MarshalBinary(); err == nil {
			t.Errorf("%s: marshalled an invalid model", name)
		}
	}
}

func TestSaveLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "model.bin")
	m := testModel(rand.New(rand.NewPCG(5, 5)), DefaultHidden)
	if err := m.Save(path); err != nil {
		t.Fatal(err)
	}
	m.Threshold = 0.7 // overwrite in place
	if err := m.Save(path); err != nil {
		t.Fatal(err)
	}
	got, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, m) {
		t.Fatal("load differs from save")
	}
	bad := New(DefaultHidden, 0)
	if err := bad.Save(path); !errors.Is(err, ErrHorizon) {
		t.Fatalf("save invalid: %v", err)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Fatalf("dir has %d entries, want only model.bin", len(ents))
	}
	if _, err := Load(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("load missing: %v", err)
	}
	os.WriteFile(path, []byte("MLSMODEL"), 0o644)
	if _, err := Load(path); !errors.Is(err, ErrTruncated) {
		t.Fatalf("load truncated: %v", err)
	}
}

// A model's abstention margin is stored after the notes (0: none) and reads back; the margin
// must be in range; a file of version 1 or 2 (feature schema v1) is refused with a message
// that names both versions and says to retrain.
func TestAbstainMarginFormat(t *testing.T) {
	m := New(4, 1_000_000)
	m.Meta.Notes = map[string]string{"k": "v"}
	none, err := m.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	m.AbstainMargin = 0.75
	with, err := m.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if got := binary.LittleEndian.Uint32(with[8:]); got != Version || len(with) != len(none) {
		t.Fatalf("margin: version %d, %d bytes (without %d)", got, len(with), len(none))
	}
	back, err := Unmarshal(with)
	if err != nil || back.AbstainMargin != 0.75 {
		t.Fatalf("round trip: %v, margin %v", err, back.AbstainMargin)
	}
	if again, _ := back.MarshalBinary(); !bytes.Equal(again, with) {
		t.Fatal("not canonical")
	}
	for _, v := range []uint32{1, 2} {
		old := bytes.Clone(with)
		binary.LittleEndian.PutUint32(old[8:], v)
		binary.LittleEndian.PutUint32(old[len(old)-4:], crc32.Checksum(old[:len(old)-4], castagnoli))
		_, err := Unmarshal(old)
		if !errors.Is(err, ErrVersion) {
			t.Fatalf("version %d: %v, want ErrVersion", v, err)
		}
		for _, want := range []string{fmt.Sprintf("version %d", v), "schema v1", "reads version 3", "retrain"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("version %d: %q does not say %q", v, err, want)
			}
		}
	}
	for _, bad := range []float32{-1, MaxAbstainMargin + 1, float32(math.NaN())} {
		m.AbstainMargin = bad
		if _, err := m.MarshalBinary(); err == nil {
			t.Errorf("margin %v accepted", bad)
		}
	}
}
