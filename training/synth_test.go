package training

import (
	"bytes"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/mlsched/mlsched/features"
)

// synthSample draws a sample whose label follows a known rule: R yields iff bucket k (futex)
// holds more than 2.0 decayed calls. Other buckets are noise; a tenth of the samples have an
// empty futex bucket and a busy read bucket, as in compute phases.
func synthSample(rng *rand.Rand, ts uint64) features.Sample {
	const k = 9 // futex
	s := features.Sample{TsNs: ts, PrevCPU: 1, RTid: 42, WTid: 43}
	for i := range features.Counts(&s.Feats) {
		if rng.IntN(3) == 0 {
			s.Feats[i] = uint32(rng.IntN(8 * features.FixedOne))
		}
	}
	s.Feats[k] = uint32(rng.IntN(5 * features.FixedOne))
	s.ROnCPUNs = uint64(rng.IntN(2_000_000))
	if s.Feats[k] > 2*features.FixedOne {
		s.Label, s.Outcome, s.LeaveNs = 1, features.OutcomeVoluntary, 1000
	} else if rng.IntN(2) == 0 {
		s.Outcome = features.OutcomePreempted
		s.LeaveNs = 2000
	} else {
		s.Outcome = features.OutcomeTimeout
	}
	return s
}

// writeTrace writes samples to a trace in memory.
func writeTrace(t testing.TB, horizonNs uint64, samples []features.Sample) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := features.NewTraceWriter(&buf, features.TraceHeader{
		SchemaID: features.SchemaID(), HorizonNs: horizonNs, StartKtimeNs: 0, NumCPU: 2,
		KernelRelease: "test", Hostname: "test", Command: "synthetic",
	})
	if err != nil {
		t.Fatal(err)
	}
	for i := range samples {
		if err := w.Write(&samples[i]); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(features.TraceSummary{}); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// synthTraceFile writes n synthetic samples to a trace file in dir and returns its path.
func synthTraceFile(t testing.TB, dir, name string, n int, seed uint64, horizonNs uint64) string {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 1))
	samples := make([]features.Sample, n)
	for i := range samples {
		samples[i] = synthSample(rng, uint64(i+1)*10_000)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, writeTrace(t, horizonNs, samples), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}
