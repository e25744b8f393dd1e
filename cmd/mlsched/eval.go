package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"time"

	"github.com/mlsched/mlsched/model"
	"github.com/mlsched/mlsched/training"
)

func init() {
	register(&command{
		name:    "eval",
		summary: "measure a model's accuracy on traces, next to the baselines",
		usage:   "--model MODEL [--infer user|kernel] [--json] TRACE...",
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

Examples:
  mlsched eval --model m.bin tomorrow.trace
  mlsched eval --model m.bin --json t.trace | jq .balanced_accuracy
  mlsched eval --model m.bin --infer kernel --json t.trace | jq .kernel_agreement`,
		flags: func(fs *flag.FlagSet) func([]string) error {
			var o evalOpts
			fs.StringVar(&o.model, "model", "", "the model file to evaluate (required)")
			fs.StringVar(&o.infer, "infer", inferUser, "which net decides: user (the float net) or kernel (also its BPF integer form, and their agreement)")
			fs.BoolVar(&o.json, "json", false, "print one JSON object")
			return func(args []string) error { return runEvalOpts(o, args, os.Stdout) }
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
	if k := ev.Kernel; k != nil {
		fmt.Fprintf(w, "kernel form: decides as the float net on %d of %d samples (agreement %.4f%%, %d differ); keeps local %d, float net %d; largest logit difference %.3g\n",
			k.Agree, k.N, 100*k.Agreement(), k.N-k.Agree, k.KernelKeeps, k.FloatKeeps, k.MaxLogitErr)
	}
	printGoal(w, ev.Net, ev.Majority)
	return nil
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
