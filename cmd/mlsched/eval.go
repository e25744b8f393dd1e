package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"math/bits"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/mlsched/mlsched/features"
	"github.com/mlsched/mlsched/model"
	"github.com/mlsched/mlsched/training"
)

func init() {
	register(&command{
		name:    "eval",
		summary: "measure a model's accuracy on traces, next to the baselines",
		exits:   "1 failed, 2 usage, 6 a bad or mismatched model or trace",
		usage:   "--model MODEL [--infer user|kernel] [--json] TRACE...\n   or: mlsched eval --online [--online-lr R] [--online-l2 L] [--online-budget N] [--online-out FILE] --model MODEL [--json] TRACE",
		help: `Runs MODEL over every sample of the traces exactly as the scheduler would (the same
inference code and decision threshold) and prints accuracy, balanced accuracy, precision,
recall and ROC AUC, with the same figures for the baselines: the majority class of these
traces, and "R yields if it has been on the CPU for less than t" with the t the model was
trained with.

The traces must have the model's feature schema and horizon. Evaluate on traces the model
was not trained on (or on the held-out end of one) for figures that mean anything.

--infer says which form of the net decides. user (the default): the float net, as the
scheduler runs it in user space (model.Predictor); every figure is that net's. kernel: also the
integer form the scheduler evaluates inside BPF (model.KernelForm, bpf/net.h, bit for bit the
same arithmetic), built from MODEL and run on every sample: eval adds how often it decides as
the float net does (its agreement) and its own row of figures. A model the kernel form cannot
hold (more hidden units than the BPF record has, weights lost in its rounding) is refused with
the limit named; the float figures stay those of the float net either way.

--json prints one object: n, positives, accuracy, balanced_accuracy, precision, recall, auc,
threshold, tp/fp/tn/fn, baseline_accuracy (majority class), baseline_balanced_accuracy,
heuristic_accuracy, heuristic_balanced_accuracy, heuristic_auc, heuristic_oncpu_ns, model,
traces, infer ("user" or "kernel"). Undefined values (AUC of a single class) are null. With
--infer kernel it adds kernel_agreement (the fraction of the samples on which the kernel form's
decision equals the float net's), kernel_disagreements (their count), kernel_keep_local and
float_keep_local (the samples each kept local), kernel_max_logit_err (the largest difference
of the two logits), and kernel_accuracy, kernel_balanced_accuracy, kernel_precision,
kernel_recall, kernel_auc (the kernel form's decisions against the labels).

--online replays one trace through the online learner (model.Learner, as the daemon's online
adaptation uses it) instead: the samples in time order, each predicted by the current,
adapting net, and learned from once its label would be known, horizon after the sample's
timestamp (the replay's clock is the samples' timestamps; there is no feedback: the
decisions do not change the trace). The later half of the samples, in time order, is scored:
the adapted net's prequential figures, the unadapted model's on the same samples and the
majority class of those samples. --online-lr, --online-l2 and --online-budget (learns per
second of trace time, 0: every sample) set the learner (defaults: model.DefaultLearnerConfig);
--online-threshold re-chooses the decision threshold on the last --online-threshold-window
learned samples for accuracy (the default, as run --adapt does) or balanced accuracy, or keeps
the model's (keep); --online-out FILE writes the adapted net at the end of the replay as a model file.
With --json: n, positives (the scored half), samples (the whole trace), prequential_accuracy,
prequential_balanced_accuracy, prequential_precision, prequential_recall, prequential_auc,
static_accuracy, static_balanced_accuracy, static_precision, static_recall, static_auc (the
unadapted model), baseline_accuracy, baseline_balanced_accuracy (the majority class of the
scored half), learned, offered, dropped (samples learned, whose labels became known during
the replay, dropped by the budget), learn_rate, l2, budget, threshold (the model's),
online_threshold (keep, balanced or accuracy), final_threshold (the learner's at the end),
horizon_ns, model, traces, online (true).

Examples:
  mlsched eval --model m.bin tomorrow.trace
  mlsched eval --model m.bin --json t.trace | jq .balanced_accuracy
  mlsched eval --model m.bin --infer kernel --json t.trace | jq .kernel_agreement
  mlsched eval --online --model m.bin --json t.trace | jq '.prequential_accuracy, .static_accuracy'`,
		flags: func(fs *flag.FlagSet) func([]string) error {
			var o evalOpts
			fs.StringVar(&o.model, "model", "", "the model file to evaluate (required)")
			fs.StringVar(&o.infer, "infer", inferUser, "which net decides: user (the float net) or kernel (also its BPF integer form, and their agreement)")
			fs.BoolVar(&o.json, "json", false, "print one JSON object")
			def := model.DefaultLearnerConfig()
			fs.BoolVar(&o.online, "online", false, "replay one trace through the online learner: prequential figures on its later half")
			fs.Float64Var(&o.lr, "online-lr", def.LearnRate, "with --online: the learner's SGD step size")
			fs.Float64Var(&o.l2, "online-l2", def.L2, "with --online: the learner's pull toward the model's weights")
			fs.Float64Var(&o.budget, "online-budget", def.Budget, "with --online: at most this many learns per second of trace time (0: every sample)")
			fs.StringVar(&o.thrFor, "online-threshold", thresholdAccuracy, "with --online: re-choose the threshold on a window of learned samples for accuracy (as run --adapt does) or balanced accuracy, or keep the model's (accuracy|balanced|keep)")
			fs.IntVar(&o.thrWindow, "online-threshold-window", model.DefaultThresholdWindow, "with --online-threshold accuracy|balanced: the window, in learned samples")
			fs.StringVar(&o.onlineOut, "online-out", "", "with --online: write the adapted net at the end of the replay to this model file")
			return func(args []string) error {
				if !o.online {
					var stray []string
					fs.Visit(func(f *flag.Flag) {
						if strings.HasPrefix(f.Name, "online-") {
							stray = append(stray, "--"+f.Name)
						}
					})
					if len(stray) > 0 {
						return errorf(exitUsage, "%s: only with --online (the replay through the online learner)", strings.Join(stray, ", "))
					}
				}
				return runEvalOpts(o, args, os.Stdout)
			}
		},
	})
}

// --infer's values.
const (
	inferUser   = "user"
	inferKernel = "kernel"
)

type evalOpts struct {
	model, infer string
	json         bool

	online         bool // replay through the online learner (runEvalOnline)
	lr, l2, budget float64
	thrFor         string
	thrWindow      int
	onlineOut      string
}

// runEval evaluates the float net alone (--infer user).
func runEval(path string, jsonOut bool, traces []string, w io.Writer) error {
	return runEvalOpts(evalOpts{model: path, infer: inferUser, json: jsonOut}, traces, w)
}

func runEvalOpts(o evalOpts, traces []string, w io.Writer) error {
	if o.model == "" {
		return errorf(exitUsage, "--model MODEL is required")
	}
	if o.infer != inferUser && o.infer != inferKernel {
		return errorf(exitUsage, "--infer %q: want %s or %s", o.infer, inferUser, inferKernel)
	}
	if len(traces) == 0 {
		return errorf(exitUsage, "no traces: give at least one TRACE")
	}
	if o.online {
		return runEvalOnline(o, traces, w)
	}
	m, err := model.Load(o.model)
	if err != nil {
		return withCode(exitBadInput, err)
	}
	var kf *model.KernelForm
	if o.infer == inferKernel {
		if kf, err = model.NewKernelForm(m); err != nil {
			return withCode(exitBadInput, fmt.Errorf("--infer kernel: %s: %w", o.model, err))
		}
	}
	ev, err := training.EvaluateFilesWith(m, traces, kf)
	if err != nil {
		return traceErr(err)
	}
	if o.json {
		return writeEvalJSON(w, o.model, o.infer, ev)
	}
	fmt.Fprintf(w, "%s on %d trace(s): %d samples, %.1f%% positive (R yields within %v); threshold %.4f\n",
		o.model, len(traces), ev.Net.N, percent(ev.Net.Positives, ev.Net.N), time.Duration(m.HorizonNs), ev.Threshold)
	rows := []metricsRow{{"net", ev.Net}}
	if k := ev.Kernel; k != nil {
		rows = append(rows, metricsRow{"net, kernel form", k.Net})
	}
	rows = append(rows, metricsRow{"majority class", ev.Majority})
	if ev.HasHeuristic {
		rows = append(rows, metricsRow{fmt.Sprintf("on-CPU < %v", time.Duration(ev.HeuristicNs)), ev.Heuristic})
	}
	printMetricsTable(w, rows)
	fmt.Fprintf(w, "confusion: TP %d  FP %d  TN %d  FN %d\n", ev.Net.TP, ev.Net.FP, ev.Net.TN, ev.Net.FN)
	printConfident(w, ev.Confident)
	if k := ev.Kernel; k != nil {
		fmt.Fprintf(w, "kernel form: decides as the float net on %d of %d samples (agreement %.4f%%, %d differ); keeps local %d, float net %d; largest logit difference %.3g\n",
			k.Agree, k.N, 100*k.Agreement(), k.N-k.Agree, k.KernelKeeps, k.FloatKeeps, k.MaxLogitErr)
	}
	printGoal(w, ev.Net, ev.Majority)
	return nil
}

// printConfident says what the model's abstention margin leaves: coverage, and accuracy on
// what it decides against the majority class of the same samples.
func printConfident(w io.Writer, c training.Confident) {
	if c.Margin == 0 {
		fmt.Fprintf(w, "abstention: none (no margin): coverage 1\n")
		return
	}
	fmt.Fprintf(w, "abstention (margin %.3f logits): coverage %.3f, confident accuracy %.4f vs %.4f for the majority class of the same samples\n",
		c.Margin, c.Coverage, c.Accuracy, c.BaselineAccuracy)
}

// jsonFloat encodes NaN and Inf as null, which JSON has no numbers for.
type jsonFloat float64

func (f jsonFloat) MarshalJSON() ([]byte, error) {
	if math.IsNaN(float64(f)) || math.IsInf(float64(f), 0) {
		return []byte("null"), nil
	}
	return json.Marshal(float64(f))
}

// kernelJSON is what --infer kernel adds to eval's JSON object.
type kernelJSON struct {
	Agreement        jsonFloat `json:"kernel_agreement"`
	Disagreements    int       `json:"kernel_disagreements"`
	KernelKeeps      int       `json:"kernel_keep_local"`
	FloatKeeps       int       `json:"float_keep_local"`
	MaxLogitErr      jsonFloat `json:"kernel_max_logit_err"`
	Accuracy         jsonFloat `json:"kernel_accuracy"`
	BalancedAccuracy jsonFloat `json:"kernel_balanced_accuracy"`
	Precision        jsonFloat `json:"kernel_precision"`
	Recall           jsonFloat `json:"kernel_recall"`
	AUC              jsonFloat `json:"kernel_auc"`
}

func writeEvalJSON(w io.Writer, path, infer string, ev *training.Evaluation) error {
	out := struct {
		N                        int       `json:"n"`
		Positives                int       `json:"positives"`
		Accuracy                 jsonFloat `json:"accuracy"`
		BalancedAccuracy         jsonFloat `json:"balanced_accuracy"`
		Precision                jsonFloat `json:"precision"`
		Recall                   jsonFloat `json:"recall"`
		AUC                      jsonFloat `json:"auc"`
		Threshold                jsonFloat `json:"threshold"`
		TP                       int       `json:"tp"`
		FP                       int       `json:"fp"`
		TN                       int       `json:"tn"`
		FN                       int       `json:"fn"`
		BaselineAccuracy         jsonFloat `json:"baseline_accuracy"`
		BaselineBalancedAccuracy jsonFloat `json:"baseline_balanced_accuracy"`
		HeuristicAccuracy        jsonFloat `json:"heuristic_accuracy"`
		HeuristicBalanced        jsonFloat `json:"heuristic_balanced_accuracy"`
		HeuristicAUC             jsonFloat `json:"heuristic_auc"`
		HeuristicOnCPUNs         *uint64   `json:"heuristic_oncpu_ns"`
		Model                    string    `json:"model"`
		Traces                   []string  `json:"traces"`
		Infer                    string    `json:"infer"`
		AbstainMargin            jsonFloat `json:"abstain_margin"`
		Coverage                 jsonFloat `json:"coverage"`
		ConfidentAccuracy        jsonFloat `json:"confident_accuracy"`
		ConfidentBaseline        jsonFloat `json:"confident_baseline_accuracy"`
		*kernelJSON
	}{
		N: ev.Net.N, Positives: ev.Net.Positives,
		Accuracy: jsonFloat(ev.Net.Accuracy), BalancedAccuracy: jsonFloat(ev.Net.BalancedAccuracy),
		Precision: jsonFloat(ev.Net.Precision), Recall: jsonFloat(ev.Net.Recall), AUC: jsonFloat(ev.Net.AUC),
		Threshold: jsonFloat(ev.Threshold),
		TP:        ev.Net.TP, FP: ev.Net.FP, TN: ev.Net.TN, FN: ev.Net.FN,
		BaselineAccuracy:         jsonFloat(ev.Majority.Accuracy),
		BaselineBalancedAccuracy: jsonFloat(ev.Majority.BalancedAccuracy),
		HeuristicAccuracy:        jsonFloat(ev.Heuristic.Accuracy),
		HeuristicBalanced:        jsonFloat(ev.Heuristic.BalancedAccuracy),
		HeuristicAUC:             jsonFloat(ev.Heuristic.AUC),
		Model:                    path,
		Traces:                   ev.Traces,
		Infer:                    infer,
		AbstainMargin:            jsonFloat(ev.Confident.Margin),
		Coverage:                 jsonFloat(ev.Confident.Coverage),
		ConfidentAccuracy:        jsonFloat(ev.Confident.Accuracy),
		ConfidentBaseline:        jsonFloat(ev.Confident.BaselineAccuracy),
	}
	if k := ev.Kernel; k != nil {
		out.kernelJSON = &kernelJSON{Agreement: jsonFloat(k.Agreement()), Disagreements: k.N - k.Agree,
			KernelKeeps: k.KernelKeeps, FloatKeeps: k.FloatKeeps, MaxLogitErr: jsonFloat(k.MaxLogitErr),
			Accuracy: jsonFloat(k.Net.Accuracy), BalancedAccuracy: jsonFloat(k.Net.BalancedAccuracy),
			Precision: jsonFloat(k.Net.Precision), Recall: jsonFloat(k.Net.Recall), AUC: jsonFloat(k.Net.AUC)}
	}
	if ev.HasHeuristic {
		out.HeuristicOnCPUNs = &ev.HeuristicNs
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

// onlineResult is an online replay of one trace (replayOnline).
type onlineResult struct {
	Samples     int              // in the trace
	Prequential training.Metrics // the adapting net on the later half, each sample predicted before it was learned
	Static      training.Metrics // the unadapted model on the same samples
	Majority    training.Metrics // the majority class of those samples
	Learned     uint64           // samples learned from
	Offered     uint64           // samples whose label became known during the replay
	Dropped     uint64           // of those, dropped by the budget
	Final       *model.Model     // the adapted net at the end
}

// replaySample is one trace sample kept for the replay: its nonzero counts are in a shared
// pool (vals[off:off+popcount(bitmap)]), ~56 bytes plus 4 per nonzero count.
type replaySample struct {
	ts     uint64
	bitmap uint64
	off    uint32
	label  uint8
	extras [features.NumExtras]uint32
}

// replayMaxSamples bounds the samples a replay holds, as train bounds its data.
const replayMaxSamples = training.DefaultMaxSamples

// replayOnline replays the trace at path through a learner that starts from m (see eval's
// --online): samples in time order; each one is predicted by the current net, then offered to
// the learner once the replay's clock (the samples' timestamps) reaches its timestamp plus
// m's horizon, when its label would be known. The later half of the samples (in time order)
// is scored. The trace must have m's schema and a horizon at least m's (a longer one is
// relabelled).
func replayOnline(m *model.Model, path string, cfg model.LearnerConfig) (*onlineResult, error) {
	samples, vals, err := loadReplay(m, path)
	if err != nil {
		return nil, err
	}
	l, err := model.NewLearner(m, cfg)
	if err != nil {
		return nil, err
	}
	frozen, err := model.NewLearner(m, model.LearnerConfig{ClipNorm: 1, PosRateSamples: 1}) // never learns
	if err != nil {
		return nil, err
	}
	expand := func(s *replaySample, out *[features.NumInputs]uint32) {
		*out = [features.NumInputs]uint32{}
		copy(out[features.NumBuckets:], s.extras[:])
		off := s.off
		for b := s.bitmap; b != 0; b &= b - 1 {
			out[bits.TrailingZeros64(b)] = vals[off]
			off++
		}
	}
	n, half, horizon := len(samples), len(samples)/2, m.HorizonNs
	scored := n - half
	labels := make([]uint8, 0, scored)
	dec, sdec := make([]bool, 0, scored), make([]bool, 0, scored)
	score, sscore := make([]float64, 0, scored), make([]float64, 0, scored)
	var feats [features.NumInputs]uint32
	next := 0 // the oldest sample not yet offered to the learner
	for i := range samples {
		s := &samples[i]
		for next < i && samples[next].ts+horizon <= s.ts {
			p := &samples[next]
			expand(p, &feats)
			l.Offer(p.ts+horizon, &feats, p.label == 1)
			next++
		}
		if i < half {
			continue
		}
		expand(s, &feats)
		z, zs := l.Logit(&feats), frozen.Logit(&feats)
		labels = append(labels, s.label)
		dec, score = append(dec, l.KeepLocal(&feats)), append(score, z)
		sdec, sscore = append(sdec, frozen.KeepLocal(&feats)), append(sscore, zs)
	}
	return &onlineResult{
		Samples:     n,
		Prequential: training.Score(labels, dec, score),
		Static:      training.Score(labels, sdec, sscore),
		Majority:    training.Majority(labels),
		Learned:     l.Learned(), Offered: l.Offered(), Dropped: l.Dropped(),
		Final: l.Model(),
	}, nil
}

// loadReplay reads every sample of the trace, relabelled for m's horizon, sorted by time
// (a capture writes samples as their outcomes resolve, not quite in time order).
func loadReplay(m *model.Model, path string) ([]replaySample, []uint32, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("open trace: %w", err)
	}
	defer f.Close()
	tr, err := features.NewTraceReader(f)
	if err != nil {
		return nil, nil, fmt.Errorf("trace %s: %w", path, err)
	}
	if h := tr.Header().HorizonNs; h < m.HorizonNs {
		return nil, nil, fmt.Errorf("trace %s: captured with horizon %v, the model predicts for the longer %v: %w",
			path, time.Duration(h), time.Duration(m.HorizonNs), training.ErrHorizonMismatch)
	}
	var samples []replaySample
	var vals []uint32
	var s features.Sample
	for {
		err := tr.Next(&s)
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, nil, fmt.Errorf("trace %s: %w", path, err)
		}
		if len(samples) >= replayMaxSamples {
			return nil, nil, fmt.Errorf("trace %s: more than %d samples: %w; replay a shorter trace", path, replayMaxSamples, training.ErrTooLarge)
		}
		training.Relabel(&s, m.HorizonNs)
		r := replaySample{ts: s.TsNs, off: uint32(len(vals)), label: s.Label & 1, extras: [features.NumExtras]uint32(s.Feats[features.NumBuckets:])}
		for j, v := range features.Counts(&s.Feats) {
			if v != 0 {
				r.bitmap |= 1 << j
				vals = append(vals, v)
			}
		}
		samples = append(samples, r)
	}
	sort.SliceStable(samples, func(i, j int) bool { return samples[i].ts < samples[j].ts })
	return samples, vals, nil
}

// runEvalOnline is eval --online.
func runEvalOnline(o evalOpts, traces []string, w io.Writer) error {
	if len(traces) != 1 {
		return errorf(exitUsage, "--online replays one trace, got %d", len(traces))
	}
	if o.infer != inferUser {
		return errorf(exitUsage, "--online replays the float net; --infer %s does not apply", o.infer)
	}
	cfg := model.DefaultLearnerConfig()
	cfg.LearnRate, cfg.L2, cfg.Budget = o.lr, o.l2, o.budget
	if o.thrFor == "" { // an evalOpts built in code
		o.thrFor = thresholdKeep
	}
	if err := setThreshold(&cfg, "online-threshold", o.thrFor, o.thrWindow); err != nil {
		return err
	}
	if _, err := model.NewLearner(model.New(1, 1), cfg); err != nil {
		return withCode(exitUsage, fmt.Errorf("--online-lr/--online-l2/--online-budget: %w", err))
	}
	if o.onlineOut != "" {
		if err := checkOutputsDistinct([]output{{"--online-out", o.onlineOut}}, append([]string{o.model}, traces...)); err != nil {
			return err
		}
		if err := checkNotTerminal("--online-out", o.onlineOut); err != nil {
			return err
		}
		if err := checkWritable(o.onlineOut); err != nil {
			return err
		}
	}
	m, err := model.Load(o.model)
	if err != nil {
		return withCode(exitBadInput, err)
	}
	r, err := replayOnline(m, traces[0], cfg)
	if err != nil {
		return traceErr(err)
	}
	if o.onlineOut != "" {
		if err := r.Final.Save(o.onlineOut); err != nil {
			return errorf(exitFailure, "--online-out: %w", err)
		}
	}
	if o.json {
		return writeOnlineJSON(w, o.model, traces, m, cfg, r)
	}
	fmt.Fprintf(w, "%s, online replay of %s: %d samples in time order; the later %d scored, %.1f%% positive (R yields within %v); threshold %.4f\n",
		o.model, traces[0], r.Samples, r.Prequential.N, percent(r.Prequential.Positives, r.Prequential.N), time.Duration(m.HorizonNs), m.Threshold)
	budget := "every sample"
	if cfg.Budget > 0 {
		budget = fmt.Sprintf("at most %g/s of trace time", cfg.Budget)
	}
	fmt.Fprintf(w, "learner: SGD, learning rate %g, L2 pull %g, budget %s: learned %d of %d labels known during the replay (%d dropped)\n",
		cfg.LearnRate, cfg.L2, budget, r.Learned, r.Offered, r.Dropped)
	if cfg.ThresholdWindow > 0 {
		fmt.Fprintf(w, "threshold re-chosen for %s on the last %d learned samples: %.4f at the end\n", o.thrFor, cfg.ThresholdWindow, r.Final.Threshold)
	}
	printMetricsTable(w, []metricsRow{{"adapted (prequential)", r.Prequential}, {"unadapted model", r.Static}, {"majority class", r.Majority}})
	fmt.Fprintf(w, "prequential accuracy %.4f: %+.1f points against the unadapted model, %+.1f against the majority class\n",
		r.Prequential.Accuracy, 100*(r.Prequential.Accuracy-r.Static.Accuracy), 100*(r.Prequential.Accuracy-r.Majority.Accuracy))
	if o.onlineOut != "" {
		fmt.Fprintf(w, "wrote the adapted net to %s\n", o.onlineOut)
	}
	return nil
}

func writeOnlineJSON(w io.Writer, path string, traces []string, m *model.Model, cfg model.LearnerConfig, r *onlineResult) error {
	thrFor := "keep"
	if cfg.ThresholdWindow > 0 {
		thrFor = map[model.ThresholdObjective]string{model.ThresholdBalanced: thresholdBalanced, model.ThresholdAccuracy: thresholdAccuracy}[cfg.ThresholdFor]
	}
	p, s, b := &r.Prequential, &r.Static, &r.Majority
	out := struct {
		Online                   bool      `json:"online"`
		N                        int       `json:"n"`
		Positives                int       `json:"positives"`
		Samples                  int       `json:"samples"`
		PrequentialAccuracy      jsonFloat `json:"prequential_accuracy"`
		PrequentialBalanced      jsonFloat `json:"prequential_balanced_accuracy"`
		PrequentialPrecision     jsonFloat `json:"prequential_precision"`
		PrequentialRecall        jsonFloat `json:"prequential_recall"`
		PrequentialAUC           jsonFloat `json:"prequential_auc"`
		StaticAccuracy           jsonFloat `json:"static_accuracy"`
		StaticBalanced           jsonFloat `json:"static_balanced_accuracy"`
		StaticPrecision          jsonFloat `json:"static_precision"`
		StaticRecall             jsonFloat `json:"static_recall"`
		StaticAUC                jsonFloat `json:"static_auc"`
		BaselineAccuracy         jsonFloat `json:"baseline_accuracy"`
		BaselineBalancedAccuracy jsonFloat `json:"baseline_balanced_accuracy"`
		Learned                  uint64    `json:"learned"`
		Offered                  uint64    `json:"offered"`
		Dropped                  uint64    `json:"dropped"`
		LearnRate                jsonFloat `json:"learn_rate"`
		L2                       jsonFloat `json:"l2"`
		Budget                   jsonFloat `json:"budget"`
		Threshold                jsonFloat `json:"threshold"`
		OnlineThreshold          string    `json:"online_threshold"`
		FinalThreshold           jsonFloat `json:"final_threshold"`
		HorizonNs                uint64    `json:"horizon_ns"`
		Model                    string    `json:"model"`
		Traces                   []string  `json:"traces"`
	}{
		Online: true, N: p.N, Positives: p.Positives, Samples: r.Samples,
		PrequentialAccuracy: jsonFloat(p.Accuracy), PrequentialBalanced: jsonFloat(p.BalancedAccuracy),
		PrequentialPrecision: jsonFloat(p.Precision), PrequentialRecall: jsonFloat(p.Recall), PrequentialAUC: jsonFloat(p.AUC),
		StaticAccuracy: jsonFloat(s.Accuracy), StaticBalanced: jsonFloat(s.BalancedAccuracy),
		StaticPrecision: jsonFloat(s.Precision), StaticRecall: jsonFloat(s.Recall), StaticAUC: jsonFloat(s.AUC),
		BaselineAccuracy: jsonFloat(b.Accuracy), BaselineBalancedAccuracy: jsonFloat(b.BalancedAccuracy),
		Learned: r.Learned, Offered: r.Offered, Dropped: r.Dropped,
		LearnRate: jsonFloat(cfg.LearnRate), L2: jsonFloat(cfg.L2), Budget: jsonFloat(cfg.Budget),
		Threshold: jsonFloat(m.Threshold), OnlineThreshold: thrFor, FinalThreshold: jsonFloat(r.Final.Threshold),
		HorizonNs: m.HorizonNs, Model: path, Traces: traces,
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

// Values of --online-threshold and --adapt-threshold.
const (
	thresholdKeep     = "keep"
	thresholdBalanced = "balanced"
	thresholdAccuracy = "accuracy"
)

// setThreshold sets the learner's threshold re-choice from --NAME (keep, balanced or
// accuracy) and --NAME-window.
func setThreshold(cfg *model.LearnerConfig, name, objective string, window int) error {
	switch objective {
	case thresholdKeep:
		cfg.ThresholdWindow = 0
		return nil
	case thresholdBalanced:
		cfg.ThresholdFor = model.ThresholdBalanced
	case thresholdAccuracy:
		cfg.ThresholdFor = model.ThresholdAccuracy
	default:
		return errorf(exitUsage, "--%s %q: want keep, balanced or accuracy", name, objective)
	}
	if window < 1 || window > model.MaxThresholdWindow {
		return errorf(exitUsage, "--%s-window %d: want 1..%d", name, window, model.MaxThresholdWindow)
	}
	cfg.ThresholdWindow = window
	return nil
}
