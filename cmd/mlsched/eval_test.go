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

// writeRuleTrace writes n samples, one every µs, like writeSynthTrace's (every bucket nonzero
// with probability 1/3, buckets 9 and 20 always) labelled "bucket j > 2.0", flipped with
// probability 5%; written in the order perm gives (nil: time order).
func writeRuleTrace(t *testing.T, path string, n, j int, seed uint64, shuffled bool) []features.Sample {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 5))
	samples := make([]features.Sample, n)
	for i := range samples {
		s := &samples[i]
		s.TsNs, s.Outcome = uint64(i+1)*1000, features.OutcomeTimeout
		for b := range features.Counts(&s.Feats) {
			if rng.IntN(3) == 0 {
				s.Feats[b] = uint32(1 + rng.IntN(6*features.FixedOne))
			}
		}
		s.Feats[9] = uint32(1 + rng.IntN(4*features.FixedOne))
		s.Feats[20] = uint32(1 + rng.IntN(4*features.FixedOne))
		if (s.Feats[j] > 2*features.FixedOne) != (rng.IntN(20) == 0) {
			s.Label, s.Outcome, s.LeaveNs = 1, features.OutcomeVoluntary, 500_000
		}
	}
	order := make([]features.Sample, n)
	copy(order, samples)
	if shuffled { // as a capture writes them: roughly, not exactly, in time order
		for i := range order {
			k := min(n-1, i+rng.IntN(50))
			order[i], order[k] = order[k], order[i]
		}
	}
	var buf bytes.Buffer
	tw, err := features.NewTraceWriter(&buf, features.TraceHeader{SchemaID: features.SchemaID(), HorizonNs: 1_000_000, NumCPU: 2, Command: "rule"})
	for i := 0; err == nil && i < n; i++ {
		err = tw.Write(&order[i])
	}
	if err == nil {
		err = tw.Close(features.TraceSummary{})
	}
	if err == nil {
		err = os.WriteFile(path, buf.Bytes(), 0o644)
	}
	if err != nil {
		t.Fatal(err)
	}
	return samples
}

// ruleModel keeps local iff bucket 9 holds more than 2.0 (unit 0), with three more units of
// small random weights: the model of writeRuleTrace(..., 9, ...).
func ruleModel() *model.Model {
	rng := rand.New(rand.NewPCG(7, 7))
	m := model.New(4, 1_000_000)
	for i := range m.W1 {
		m.W1[i] = float32(0.05 * rng.NormFloat64())
	}
	for k := 1; k < 4; k++ {
		m.W2[k], m.B1[k] = float32(0.1*rng.NormFloat64()), 0.1
	}
	m.W1[9], m.W2[0], m.B2 = 1, 1, -float32(math.Log(3))
	return m
}

// eval --online replays a trace: on a trace whose rule differs from the model's, the adapted
// net's prequential accuracy beats the unadapted model by a clear margin; on the model's own
// rule it stays within a point of it; the scored samples are the later half in time order,
// labels are learned only once known (horizon after the sample), the baseline is the majority
// class of that half, and a trace written out of time order replays exactly as one in order.
func TestEvalOnline(t *testing.T) {
	dir := t.TempDir()
	mpath := saveModel(t, ruleModel(), filepath.Join(dir, "rule9.bin"))
	const n = 20000
	other := filepath.Join(dir, "rule20.trace")
	samples := writeRuleTrace(t, other, n, 20, 1, true)
	inOrder := filepath.Join(dir, "rule20-ordered.trace")
	writeRuleTrace(t, inOrder, n, 20, 1, false)
	same := filepath.Join(dir, "rule9.trace")
	writeRuleTrace(t, same, n, 9, 2, true)

	o := evalOpts{model: mpath, infer: inferUser, online: true, lr: model.DefaultLearnRate, l2: model.DefaultL2, budget: 0}
	ev := evalJSON(t, o, other)
	t.Logf("other rule: prequential %.4f, static %.4f, baseline %.4f, learned %v", ev["prequential_accuracy"], ev["static_accuracy"], ev["baseline_accuracy"], ev["learned"])
	pre, static := ev["prequential_accuracy"].(float64), ev["static_accuracy"].(float64)
	if pre < static+0.15 || pre < 0.75 {
		t.Errorf("other rule: prequential accuracy %.4f, unadapted %.4f: want >= 0.75 and 0.15 above", pre, static)
	}
	// The label of the sample at ts is known at ts + 1 ms, 1000 samples later: the last 1000
	// are never learned (budget 0: all the others are).
	if ev["learned"] != float64(n-1000) || ev["offered"] != float64(n-1000) || ev["dropped"] != 0.0 || ev["samples"] != float64(n) {
		t.Errorf("learned %v, offered %v, dropped %v of %v samples; want %d learned", ev["learned"], ev["offered"], ev["dropped"], ev["samples"], n-1000)
	}
	pos := 0
	for _, s := range samples[n/2:] {
		pos += int(s.Label)
	}
	if maj := float64(max(pos, n/2-pos)) / float64(n/2); ev["n"] != float64(n/2) || ev["positives"] != float64(pos) || ev["baseline_accuracy"] != maj {
		t.Errorf("n %v positives %v baseline %v; the later half has %d samples, %d positive, majority %.4f", ev["n"], ev["positives"], ev["baseline_accuracy"], n/2, pos, maj)
	}
	for _, k := range []string{"prequential_balanced_accuracy", "prequential_auc", "static_balanced_accuracy", "static_auc",
		"baseline_balanced_accuracy", "learn_rate", "l2", "budget", "threshold", "horizon_ns", "model", "traces"} {
		if _, ok := ev[k]; !ok {
			t.Errorf("eval --online --json lacks %q", k)
		}
	}
	ord := evalJSON(t, o, inOrder)
	for k, v := range ev {
		if k != "traces" && mustJSON(v) != mustJSON(ord[k]) {
			t.Errorf("%q is %s replaying the shuffled trace, %s in time order", k, mustJSON(v), mustJSON(ord[k]))
		}
	}

	ev = evalJSON(t, o, same)
	t.Logf("same rule: prequential %.4f, static %.4f, baseline %.4f", ev["prequential_accuracy"], ev["static_accuracy"], ev["baseline_accuracy"])
	if pre, static := ev["prequential_accuracy"].(float64), ev["static_accuracy"].(float64); pre < static-0.01 {
		t.Errorf("same rule: prequential accuracy %.4f more than a point below the unadapted %.4f", pre, static)
	}

	// The budget is in learns per second of trace time: 100,000/s over the ~19 ms in which
	// labels become known learns ~1,900 of the 19,000.
	o.budget = 100_000
	ev = evalJSON(t, o, other)
	if l := ev["learned"].(float64); l < 1800 || l > 2000 || ev["learned"].(float64)+ev["dropped"].(float64) != float64(n-1000) {
		t.Errorf("budget 100000/s: learned %v, dropped %v", ev["learned"], ev["dropped"])
	}

	// A threshold re-chosen on a window: keep keeps the model's (0.5); re-chosen for accuracy,
	// the adapted net still scores well (where the threshold goes is the learner's test,
	// model.TestLearnerThresholdWindow: here it may stay at 0.5, the best bin).
	o.budget, o.thrFor, o.thrWindow = 0, "keep", 4096
	if ev := evalJSON(t, o, other); ev["online_threshold"] != "keep" || ev["final_threshold"] != ev["threshold"] {
		t.Errorf("keep: online_threshold %v, final_threshold %v, threshold %v", ev["online_threshold"], ev["final_threshold"], ev["threshold"])
	}
	o.thrFor = "accuracy"
	ev = evalJSON(t, o, other)
	t.Logf("re-chosen for accuracy: prequential %.4f, final threshold %v", ev["prequential_accuracy"], ev["final_threshold"])
	if ft, _ := ev["final_threshold"].(float64); ev["online_threshold"] != "accuracy" || ft <= 0 || ft >= 1 || ev["prequential_accuracy"].(float64) < 0.75 {
		t.Errorf("accuracy: online_threshold %v, final_threshold %v, prequential %v", ev["online_threshold"], ev["final_threshold"], ev["prequential_accuracy"])
	}
	o.thrFor = "keep"

	// The adapted net is written as a valid model whose notes say how it was made; the text
	// output is a readable summary.
	o.budget, o.json, o.onlineOut = 0, false, filepath.Join(dir, "adapted.bin")
	var out bytes.Buffer
	if err := runEvalOpts(o, []string{other}, &out); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"online replay", "adapted (prequential)", "unadapted model", "majority class", "learned 19000 of 19000", "prequential accuracy", "wrote the adapted net"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("eval --online output lacks %q:\n%s", want, out.String())
		}
	}
	adapted, err := model.Load(o.onlineOut)
	if err != nil || adapted.Meta.Notes[model.NoteOnlineLearned] != "19000" {
		t.Errorf("--online-out: %v, notes %v", err, adapted)
	}
	// The adapted model, evaluated statically on the same trace, knows the new rule.
	if ev := evalJSON(t, evalOpts{model: o.onlineOut, infer: inferUser}, other); ev["accuracy"].(float64) < 0.85 {
		t.Errorf("the adapted model's accuracy on the new rule: %v", ev["accuracy"])
	}
}

// eval --online refuses what eval refuses (corrupt or mismatched traces and models, with the
// bad-input exit code), and more than one trace, --infer kernel and bad hyperparameters as
// usage errors.
func TestEvalOnlineRefuses(t *testing.T) {
	dir := t.TempDir()
	mpath := saveModel(t, ruleModel(), filepath.Join(dir, "m.bin"))
	tr := filepath.Join(dir, "t.trace")
	writeRuleTrace(t, tr, 500, 9, 1, false)
	short := filepath.Join(dir, "short.trace")
	writeSynthTrace(t, short, 100, 1, 500_000)
	b, _ := os.ReadFile(tr)
	corrupt := filepath.Join(dir, "corrupt.trace")
	os.WriteFile(corrupt, append(b[:len(b)/2:len(b)/2], make([]byte, 100)...), 0o644)
	trunc := filepath.Join(dir, "trunc.trace")
	os.WriteFile(trunc, b[:len(b)-20], 0o644)
	badModel := filepath.Join(dir, "bad.bin")
	os.WriteFile(badModel, []byte("MLSMODEL but not really"), 0o644)
	for _, c := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"two traces", []string{"--online", "--model", mpath, tr, tr}, exitUsage, "one trace"},
		{"no trace", []string{"--online", "--model", mpath}, exitUsage, "no traces"},
		{"kernel", []string{"--online", "--infer", "kernel", "--model", mpath, tr}, exitUsage, "--infer kernel"},
		{"lr", []string{"--online", "--online-lr", "-1", "--model", mpath, tr}, exitUsage, "learning rate"},
		{"budget", []string{"--online", "--online-budget", "-1", "--model", mpath, tr}, exitUsage, "budget"},
		{"threshold", []string{"--online", "--online-threshold", "median", "--model", mpath, tr}, exitUsage, "keep, balanced or accuracy"},
		{"window", []string{"--online", "--online-threshold", "balanced", "--online-threshold-window", "0", "--model", mpath, tr}, exitUsage, "window"},
		{"shorter horizon", []string{"--online", "--model", mpath, short}, exitBadInput, "horizon"},
		{"corrupt", []string{"--online", "--model", mpath, corrupt}, exitBadInput, "offset"},
		{"truncated", []string{"--online", "--model", mpath, trunc}, exitBadInput, "truncated"},
		{"missing", []string{"--online", "--model", mpath, filepath.Join(dir, "nope.trace")}, exitFailure, "no such file"},
		{"bad model", []string{"--online", "--model", badModel, tr}, exitBadInput, "model"},
		{"out dir", []string{"--online", "--online-out", dir, "--model", mpath, tr}, exitUsage, "is a directory"},
	} {
		code, _, stderr := runCLI(t, append([]string{"eval"}, c.args...)...)
		if code != c.code || !strings.Contains(stderr, c.want) {
			t.Errorf("%s: exit %d (want %d), %q (want %q)", c.name, code, c.code, stderr, c.want)
		}
	}
	code, out, errOut := runCLI(t, "eval", "--help")
	if help := out + errOut; code != exitOK || !strings.Contains(help, "--online") || !strings.Contains(help, "prequential_accuracy") {
		t.Errorf("eval --help: exit %d\n%s", code, help)
	}
}

// A model trained with an abstention margin: train reports it, inspect shows it, eval --json
// gives coverage (at least the training minimum's neighbourhood, and < 1), confident_accuracy
// (>= the overall accuracy: the band holds the model's least sure answers) and
// confident_baseline_accuracy; the same samples counted by hand through model.Predictor agree.
func TestEvalAbstention(t *testing.T) {
	dir := t.TempDir()
	tr := filepath.Join(dir, "a.trace")
	writeSynthTrace(t, tr, 8000, 3, 1_000_000)
	mp := filepath.Join(dir, "m.bin")
	var out bytes.Buffer
	if err := runTrain(trainOpts{out: mp, hidden: 16, epochs: 4, batch: 256, lr: 0.003, seed: 1, thrFor: "balanced", coverage: 0.6,
		valFrac: 0.25, maxSamples: 1 << 20}, []string{tr}, &out); err != nil {
		t.Fatalf("train: %v\n%s", err, out.String())
	}
	m, err := model.Load(mp)
	if err != nil {
		t.Fatal(err)
	}
	if m.AbstainMargin == 0 { // this synthetic trace gives no gain: a band to evaluate anyway
		m.AbstainMargin = 0.3
		if err := m.Save(mp); err != nil {
			t.Fatal(err)
		}
		out.Reset()
		out.WriteString("abstention (margin set by the test)")
	}
	ev := evalJSON(t, evalOpts{model: mp, infer: "user"}, tr)
	cov, _ := ev["coverage"].(float64)
	acc, _ := ev["accuracy"].(float64)
	cacc, _ := ev["confident_accuracy"].(float64)
	if _, ok := ev["confident_baseline_accuracy"].(float64); !ok {
		t.Fatalf("eval --json lacks confident_baseline_accuracy: %v", ev)
	}
	t.Logf("margin %v: coverage %v, accuracy %v, confident %v, baseline %v", m.AbstainMargin, cov, acc, cacc, ev["confident_baseline_accuracy"])
	if m.AbstainMargin > 0 {
		if !strings.Contains(out.String(), "abstention (margin") || !(cov > 0 && cov < 1) || cacc < acc {
			t.Fatalf("margin %v: coverage %v, confident %v < overall %v?\n%s", m.AbstainMargin, cov, cacc, acc, out.String())
		}
	} else if cov != 1 {
		t.Fatalf("no margin but coverage %v", cov)
	}
	// By hand: the predictor's own band.
	p := model.NewPredictor(m)
	f, err := os.Open(tr)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rd, err := features.NewTraceReader(f)
	if err != nil {
		t.Fatal(err)
	}
	var s features.Sample
	n, decided := 0, 0
	for rd.Next(&s) == nil {
		n++
		if !p.Abstains(&s.Feats) {
			decided++
		}
	}
	if got := float64(decided) / float64(n); math.Abs(got-cov) > 1e-9 {
		t.Fatalf("coverage %v, the predictor decides %v", cov, got)
	}
}
