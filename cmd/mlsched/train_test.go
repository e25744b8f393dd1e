package main

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mlsched/mlsched/features"
	"github.com/mlsched/mlsched/model"
)

// writeSynthTrace writes n samples labelled by a known rule (R yields iff its futex bucket is
// above 2.0) with horizon horizonNs.
func writeSynthTrace(t *testing.T, path string, n int, seed, horizonNs uint64) {
	t.Helper()
	var buf bytes.Buffer
	w, err := features.NewTraceWriter(&buf, features.TraceHeader{
		SchemaID: features.SchemaID(), HorizonNs: horizonNs, NumCPU: 2, Command: "synthetic"})
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(seed, 2))
	for i := range n {
		s := features.Sample{TsNs: uint64(i+1) * 1000, Outcome: features.OutcomeTimeout}
		for j := range features.Counts(&s.Feats) {
			if rng.IntN(3) == 0 {
				s.Feats[j] = uint32(rng.IntN(6 * features.FixedOne))
			}
		}
		s.Feats[9] = uint32(rng.IntN(4 * features.FixedOne))
		s.ROnCPUNs = uint64(rng.IntN(1_000_000))
		if s.Feats[9] > 2*features.FixedOne {
			s.Label, s.Outcome = 1, features.OutcomeVoluntary
		}
		if err := w.Write(&s); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(features.TraceSummary{}); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestTrainEvalInspect(t *testing.T) {
	dir := t.TempDir()
	tr := filepath.Join(dir, "a.trace")
	writeSynthTrace(t, tr, 6000, 1, 1_000_000)
	m := filepath.Join(dir, "m.bin")
	svg := filepath.Join(dir, "curves.svg")

	// runTrain writes to os.Stdout; call it directly to capture the report.
	var out bytes.Buffer
	err := runTrain(trainOpts{out: m, plot: svg, hidden: 16, epochs: 6, batch: 256, lr: 0.003, seed: 1, thrFor: "balanced", coverage: 0.7,
		valFrac: 0.25, maxSamples: 1 << 20}, []string{tr}, &out)
	if err != nil {
		t.Fatalf("train: %v\n%s", err, out.String())
	}
	for _, want := range []string{"epoch   6/6", "samples/s", "majority class", "on-CPU <", "ROC AUC", "abstention", "coverage", "wrote " + m} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("train output lacks %q:\n%s", want, out.String())
		}
	}
	if b, err := os.ReadFile(svg); err != nil || !bytes.HasPrefix(b, []byte("<svg")) || !bytes.Contains(b, []byte("polyline")) {
		t.Errorf("plot: %v, %.60q", err, b)
	}

	var eout bytes.Buffer
	if err := runEval(m, true, []string{tr}, &eout); err != nil {
		t.Fatalf("eval: %v", err)
	}
	var ev map[string]any
	if err := json.Unmarshal(eout.Bytes(), &ev); err != nil {
		t.Fatalf("eval --json: %v\n%s", err, eout.String())
	}
	for _, k := range []string{"n", "accuracy", "balanced_accuracy", "auc", "baseline_accuracy", "precision", "recall", "heuristic_accuracy"} {
		if _, ok := ev[k]; !ok {
			t.Errorf("eval --json lacks %q", k)
		}
	}
	if ev["n"].(float64) != 6000 || ev["accuracy"].(float64) < 0.85 {
		t.Errorf("eval: n %v accuracy %v", ev["n"], ev["accuracy"])
	}
	eout.Reset()
	if err := runEval(m, false, []string{tr}, &eout); err != nil || !strings.Contains(eout.String(), "confusion") {
		t.Errorf("eval table: %v\n%s", err, eout.String())
	}

	var iout bytes.Buffer
	if err := inspectModel(m, false, &iout); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"68 -> 16 (ReLU) -> 1", "oncpu, stint, vol, gap", "horizon         1ms", "threshold", "baseline majority", "6000 samples", tr, "created"} {
		if !strings.Contains(iout.String(), want) {
			t.Errorf("inspect lacks %q:\n%s", want, iout.String())
		}
	}
	iout.Reset()
	if err := inspectModel(m, true, &iout); err != nil {
		t.Fatal(err)
	}
	var im map[string]any
	if err := json.Unmarshal(iout.Bytes(), &im); err != nil || im["hidden"].(float64) != 16 || im["horizon_ns"].(float64) != 1e6 {
		t.Errorf("inspect --json: %v\n%s", err, iout.String())
	}
}

func TestTrainRefuses(t *testing.T) {
	dir := t.TempDir()
	a := filepath.Join(dir, "a.trace")
	b := filepath.Join(dir, "b.trace")
	writeSynthTrace(t, a, 200, 1, 1_000_000)
	writeSynthTrace(t, b, 200, 2, 2_000_000)
	m := filepath.Join(dir, "m.bin")
	for _, c := range []struct {
		name string
		args []string
		code int
		msg  string
	}{
		{"two horizons", []string{"train", "-o", m, a, b}, exitBadInput, "different horizons"},
		{"no output", []string{"train", a}, exitUsage, "-o MODEL is required"},
		{"no traces", []string{"train", "-o", m}, exitUsage, "no traces"},
		{"unwritable", []string{"train", "-o", filepath.Join(dir, "missing", "m.bin"), a}, exitFailure, "cannot write"},
		{"output is a dir", []string{"train", "-o", dir, a}, exitUsage, "is a directory"},
		{"not a trace", []string{"train", "-o", m, m + ".nope"}, exitFailure, "no such file"},
		{"eval horizon", []string{"eval", "--model", filepath.Join(dir, "none.bin"), a}, exitBadInput, "load model"},
	} {
		code, _, stderr := runCLI(t, c.args...)
		if code != c.code || !strings.Contains(stderr, c.msg) {
			t.Errorf("%s: exit %d, %q; want exit %d and %q", c.name, code, stderr, c.code, c.msg)
		}
	}
	if _, err := os.Stat(m); err == nil {
		t.Error("a failed train left a model behind")
	}
}

// `-o -` writes the model to stdout, and the report goes to stderr so that the two never mix.
func TestTrainToStdout(t *testing.T) {
	tr := filepath.Join(t.TempDir(), "a.trace")
	writeSynthTrace(t, tr, 2000, 5, 1_000_000)
	code, out, errs := runCLI(t, "train", "-o", "-", "--epochs", "2", tr)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	p := filepath.Join(t.TempDir(), "m.bin")
	if err := os.WriteFile(p, []byte(out), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := model.Load(p); err != nil {
		t.Errorf("stdout is not a model file: %v", err)
	}
	if !strings.Contains(errs, "validation") {
		t.Errorf("the report did not go to stderr:\n%s", errs)
	}
}
