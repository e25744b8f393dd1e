package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mlsched/mlsched/features"
	"github.com/mlsched/mlsched/model"
)

// randomModel is a valid model with random weights and normalisation (horizon 1 ms): the
// kernel form rounds it, so its decisions may differ from the float net's on some samples.
func randomModel(hidden int, seed uint64) *model.Model {
	rng := rand.New(rand.NewPCG(seed, 3))
	m := model.New(hidden, 1_000_000)
	for j := range m.Mean {
		m.Mean[j], m.Std[j] = float32(rng.Float64()), float32(0.2+rng.Float64())
	}
	for i := range m.W1 {
		m.W1[i] = float32(rng.NormFloat64())
	}
	for k := range m.B1 {
		m.B1[k], m.W2[k] = float32(rng.NormFloat64()), float32(rng.NormFloat64())
	}
	m.B2, m.Threshold = float32(rng.NormFloat64()), 0.3
	return m
}

// boundaryCase is a one-unit model that keeps local iff the futex bucket (9) holds at least
// 2.0, and a trace whose futex counts lie within 200 units of 2^-16 of that boundary: closer
// than the kernel form's input quantisation resolves, so the two forms disagree on some.
func boundaryCase(t *testing.T, dir string) (modelPath, trace string) {
	t.Helper()
	m := model.New(1, 1_000_000)
	m.W1[9], m.W2[0], m.B2 = 1, 1, -float32(math.Log(3))
	trace = filepath.Join(dir, "boundary.trace")
	f, err := os.Create(trace)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := features.TraceHeader{SchemaID: features.SchemaID(), HorizonNs: 1_000_000, NumCPU: 2, Command: "boundary"}
	tw, err := features.NewTraceWriter(f, h)
	for i := 0; err == nil && i < 2000; i++ {
		s := features.Sample{TsNs: uint64(i+1) * 1000, Outcome: features.OutcomeTimeout}
		if i%2 == 1 {
			s.Label, s.Outcome = 1, features.OutcomeVoluntary
		}
		s.Feats[9] = uint32(2*features.FixedOne - 200 + i%400)
		err = tw.Write(&s)
	}
	if err == nil {
		err = tw.Close(features.TraceSummary{})
	}
	if err != nil {
		t.Fatal(err)
	}
	return saveModel(t, m, filepath.Join(dir, "boundary.bin")), trace
}

func saveModel(t *testing.T, m *model.Model, path string) string {
	t.Helper()
	if err := m.Save(path); err != nil {
		t.Fatal(err)
	}
	return path
}

// wantAgreement counts, sample by sample, how often the kernel form of m decides as the float
// net on trace: what eval's kernel_agreement must say.
func wantAgreement(t *testing.T, m *model.Model, trace string) (agree, n int) {
	t.Helper()
	kf, err := model.NewKernelForm(m)
	if err != nil {
		t.Fatal(err)
	}
	p := model.NewPredictor(m)
	f, err := os.Open(trace)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr, err := features.NewTraceReader(f)
	if err != nil {
		t.Fatal(err)
	}
	var s features.Sample
	for {
		if err := tr.Next(&s); err == io.EOF {
			return agree, n
		} else if err != nil {
			t.Fatal(err)
		}
		n++
		if kf.KeepLocal(&s.Feats) == p.KeepLocal(&s.Feats) {
			agree++
		}
	}
}

func evalJSON(t *testing.T, o evalOpts, traces ...string) map[string]any {
	t.Helper()
	o.json = true
	var out bytes.Buffer
	if err := runEvalOpts(o, traces, &out); err != nil {
		t.Fatalf("eval %+v: %v", o, err)
	}
	var ev map[string]any
	if err := json.Unmarshal(out.Bytes(), &ev); err != nil {
		t.Fatalf("eval --json: %v\n%s", err, out.String())
	}
	return ev
}

// eval --infer kernel reports the kernel form's agreement with the float net, exactly the
// fraction of samples on which the two decide alike, for the default model and for random
// ones; --infer user (the default) reports the float net alone, with the same figures.
func TestEvalInferKernel(t *testing.T) {
	dir := t.TempDir()
	tr := filepath.Join(dir, "t.trace")
	writeSynthTrace(t, tr, 3000, 7, 1_000_000)
	def, err := model.Default()
	if err != nil {
		t.Fatal(err)
	}
	models := map[string]*model.Model{"default": def}
	for i := range 3 {
		models[string(rune('a'+i))] = randomModel([]int{1, 7, 16}[i], uint64(i+1))
	}
	floatKeys := []string{"n", "positives", "accuracy", "balanced_accuracy", "precision", "recall", "auc", "threshold",
		"tp", "fp", "tn", "fn", "baseline_accuracy", "baseline_balanced_accuracy", "heuristic_accuracy",
		"heuristic_balanced_accuracy", "heuristic_auc", "heuristic_oncpu_ns", "model", "traces"}
	for name, m := range models {
		path := saveModel(t, m, filepath.Join(dir, name+".bin"))
		user := evalJSON(t, evalOpts{model: path, infer: inferUser}, tr)
		kern := evalJSON(t, evalOpts{model: path, infer: inferKernel}, tr)
		for _, k := range floatKeys {
			if _, ok := user[k]; !ok {
				t.Errorf("%s: --infer user lacks %q", name, k)
			}
			if ku, _ := json.Marshal(user[k]); string(ku) != mustJSON(kern[k]) {
				t.Errorf("%s: %q is %s with --infer user, %s with kernel: the float figures must not change", name, k, ku, mustJSON(kern[k]))
			}
		}
		if _, ok := user["kernel_agreement"]; ok || user["infer"] != "user" {
			t.Errorf("%s: --infer user reports kernel_agreement or infer %v", name, user["infer"])
		}
		agree, n := wantAgreement(t, m, tr)
		got, _ := kern["kernel_agreement"].(float64)
		t.Logf("%s (hidden %d): kernel agreement %.4f (%d of %d), largest logit difference %v", name, m.Hidden, got, agree, n, kern["kernel_max_logit_err"])
		if want := float64(agree) / float64(n); got != want || kern["kernel_disagreements"] != float64(n-agree) || kern["infer"] != "kernel" {
			t.Errorf("%s: kernel_agreement %v, disagreements %v; counted %d of %d", name, kern["kernel_agreement"], kern["kernel_disagreements"], agree, n)
		}
		for _, k := range []string{"kernel_keep_local", "float_keep_local", "kernel_accuracy", "kernel_balanced_accuracy", "kernel_auc"} {
			if _, ok := kern[k]; !ok {
				t.Errorf("%s: --infer kernel lacks %q", name, k)
			}
		}
		if name == "default" && got < 0.995 {
			t.Errorf("default model: kernel agreement %.4f < 0.995", got)
		}
	}

	// Samples at the decision boundary: some disagree, and the fraction is still exact.
	bm, btr := boundaryCase(t, dir)
	bev := evalJSON(t, evalOpts{model: bm, infer: inferKernel}, btr)
	bm2, _ := model.Load(bm)
	agree, n := wantAgreement(t, bm2, btr)
	t.Logf("boundary: kernel agreement %v (%d of %d)", bev["kernel_agreement"], agree, n)
	if agree == n || agree < n/2 || bev["kernel_agreement"] != float64(agree)/float64(n) {
		t.Errorf("boundary: kernel_agreement %v; counted %d of %d (want some, not most, to differ)", bev["kernel_agreement"], agree, n)
	}

	// The text output says it too (eval prints to stdout: call it directly); the flag's default
	// is user.
	path := filepath.Join(dir, "default.bin")
	var out bytes.Buffer
	if err := runEvalOpts(evalOpts{model: path, infer: inferKernel}, []string{tr}, &out); err != nil ||
		!strings.Contains(out.String(), "kernel form: decides as the float net on") || !strings.Contains(out.String(), "net, kernel form") {
		t.Errorf("eval --infer kernel: %v\n%s", err, out.String())
	}
	out.Reset()
	if err := runEval(path, false, []string{tr}, &out); err != nil || strings.Contains(out.String(), "kernel form") {
		t.Errorf("eval (--infer user): %v, mentions the kernel form:\n%s", err, out.String())
	}
	if code, _, stderr := runCLI(t, "eval", "--model", path, tr); code != exitOK {
		t.Errorf("eval with --infer's default: exit %d, %s", code, stderr)
	}
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// A model the kernel form cannot hold is refused with --infer kernel, naming the limit; the
// float net still evaluates it. A bad --infer is a usage error; --help explains the flag.
func TestEvalInferKernelRefuses(t *testing.T) {
	dir := t.TempDir()
	tr := filepath.Join(dir, "t.trace")
	writeSynthTrace(t, tr, 200, 1, 1_000_000)
	wide := saveModel(t, randomModel(model.KernelMaxHidden+1, 9), filepath.Join(dir, "wide.bin"))
	err := runEvalOpts(evalOpts{model: wide, infer: inferKernel}, []string{tr}, io.Discard)
	var ee *exitError
	if !errors.Is(err, model.ErrKernelForm) || !errors.As(err, &ee) || ee.code != exitBadInput || !strings.Contains(err.Error(), "hidden 17 > 16") {
		t.Errorf("--infer kernel on a 17-unit model: %v", err)
	}
	code, _, stderr := runCLI(t, "eval", "--model", wide, "--infer", "kernel", tr)
	if code != exitBadInput || !strings.Contains(stderr, "does not fit the BPF kernel form") {
		t.Errorf("CLI: exit %d, %q", code, stderr)
	}
	if err := runEvalOpts(evalOpts{model: wide, infer: inferUser}, []string{tr}, io.Discard); err != nil {
		t.Errorf("--infer user on a 17-unit model: %v", err)
	}
	if code, _, stderr := runCLI(t, "eval", "--model", wide, "--infer", "bpf", tr); code != exitUsage || !strings.Contains(stderr, `--infer "bpf"`) {
		t.Errorf("--infer bpf: exit %d, %q", code, stderr)
	}
	code, out, errOut := runCLI(t, "eval", "--help")
	if help := out + errOut; code != exitOK || !strings.Contains(help, "--infer") || !strings.Contains(help, "kernel_agreement") {
		t.Errorf("eval --help: exit %d\n%s", code, help)
	}
}
