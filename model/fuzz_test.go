package model

import (
	"bytes"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/mlsched/mlsched/features"
)

var updateSeeds = flag.Bool("update-seeds", false, "rewrite testdata/fuzz/FuzzUnmarshal")

// fuzzSeeds are valid files and a few near misses.
func fuzzSeeds() map[string][]byte {
	good := mustEncode(testModel(rand.New(rand.NewPCG(7, 7)), DefaultHidden))
	small := mustEncode(testModel(rand.New(rand.NewPCG(8, 8)), 1))
	bare := mustEncode(New(2, 1))
	seeds := map[string][]byte{
		"valid-h16":   good,
		"valid-h1":    small,
		"valid-bare":  bare,
		"truncated":   good[:len(good)/2],
		"magic-only":  []byte(Magic),
		"trailing":    append(bytes.Clone(small), 1, 2, 3),
		"bad-crc":     append(bytes.Clone(small[:len(small)-1]), small[len(small)-1]^0xff),
		"huge-hidden": reseal(append(append(bytes.Clone(bare[:28]), 0, 4, 0, 0), bare[32:]...)),
	}
	return seeds
}

func mustEncode(m *Model) []byte {
	b, err := m.MarshalBinary()
	if err != nil {
		panic(err)
	}
	return b
}

// TestWriteFuzzSeeds rewrites the committed seed corpus with -update-seeds.
func TestWriteFuzzSeeds(t *testing.T) {
	if !*updateSeeds {
		t.Skip("run with -update-seeds to rewrite testdata/fuzz/FuzzUnmarshal")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzUnmarshal")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, b := range fuzzSeeds() {
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%s)\n", strconv.Quote(string(b)))
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// FuzzUnmarshal: checkUnmarshal on the raw input.
func FuzzUnmarshal(f *testing.F) {
	for _, b := range fuzzSeeds() {
		f.Add(b)
	}
	f.Fuzz(checkUnmarshal)
}

// FuzzUnmarshalResealed is FuzzUnmarshal past the checksum: each input gets a valid CRC32C
// before it is read, so that the fuzzer's mutations reach the field and value checks (most of
// FuzzUnmarshal's stop at the checksum).
func FuzzUnmarshalResealed(f *testing.F) {
	for _, b := range fuzzSeeds() {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) < 4 {
			return
		}
		checkUnmarshal(t, reseal(bytes.Clone(data)))
	})
}

// checkUnmarshal: Unmarshal never panics; what it accepts re-encodes to the same bytes and
// predicts finite probabilities on every path.
func checkUnmarshal(t *testing.T, data []byte) {
	m, err := Unmarshal(data)
	if err != nil {
		if m != nil {
			t.Fatal("model and error")
		}
		return
	}
	b, err := m.MarshalBinary()
	if err != nil {
		t.Fatalf("accepted model does not marshal: %v", err)
	}
	if !bytes.Equal(b, data) {
		t.Fatal("accepted file is not canonical")
	}
	var in [features.NumInputs]uint32
	for i := range in {
		in[i] = uint32(i) * 0x11111 // up to past MaxCount
	}
	p := NewPredictor(m)
	if l := p.Logit(&in); math.IsNaN(float64(l)) || math.IsInf(float64(l), 0) {
		t.Fatalf("logit %v", l)
	}
	if pr := p.Predict(&in); !(pr >= 0 && pr <= 1) {
		t.Fatalf("probability %v", pr)
	}
	x := make([]float64, NumInputs)
	m.Normalize(&in, x)
	if pr := m.Forward(x); !(pr >= 0 && pr <= 1) {
		t.Fatalf("reference probability %v", pr)
	}
}
