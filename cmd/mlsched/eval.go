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
		usage:   "--model MODEL [--json] TRACE...",
		help: `Runs MODEL over every sample of the traces exactly as the scheduler would (the same
inference code and decision threshold) and prints accuracy, balanced accuracy, precision,
recall and ROC AUC, with the same figures for the baselines: the majority class of these
traces, and "R yields if it has been on the CPU for less than t" with the t the model was
trained with.

The traces must have the model's feature schema and horizon. Evaluate on traces the model
was not trained on (or on the held-out end of one) for figures that mean anything.

--json prints one object: n, positives, accuracy, balanced_accuracy, precision, recall, auc,
threshold, tp/fp/tn/fn, baseline_accuracy (majority class), baseline_balanced_accuracy,
heuristic_accuracy, heuristic_balanced_accuracy, heuristic_auc, heuristic_oncpu_ns, model,
traces. Undefined values (AUC of a single class) are null.

Examples:
  mlsched eval --model m.bin tomorrow.trace
  mlsched eval --model m.bin --json t.trace | jq .balanced_accuracy`,
		flags: func(fs *flag.FlagSet) func([]string) error {
			var path string
			var jsonOut bool
			fs.StringVar(&path, "model", "", "the model file to evaluate (required)")
			fs.BoolVar(&jsonOut, "json", false, "print one JSON object")
			return func(args []string) error { return runEval(path, jsonOut, args, os.Stdout) }
		},
	})
}

func runEval(path string, jsonOut bool, traces []string, w io.Writer) error {
	if path == "" {
		return errorf(exitUsage, "--model MODEL is required")
	}
	if len(traces) == 0 {
		return errorf(exitUsage, "no traces: give at least one TRACE")
	}
	m, err := model.Load(path)
	if err != nil {
		return withCode(exitBadInput, err)
	}
	ev, err := training.EvaluateFiles(m, traces)
	if err != nil {
		return traceErr(err)
	}
	if jsonOut {
		return writeEvalJSON(w, path, ev)
	}
	fmt.Fprintf(w, "%s on %d trace(s): %d samples, %.1f%% positive (R yields within %v); threshold %.4f\n",
		path, len(traces), ev.Net.N, percent(ev.Net.Positives, ev.Net.N), time.Duration(m.HorizonNs), ev.Threshold)
	rows := []metricsRow{{"net", ev.Net}, {"majority class", ev.Majority}}
	if ev.HasHeuristic {
		rows = append(rows, metricsRow{fmt.Sprintf("on-CPU < %v", time.Duration(ev.HeuristicNs)), ev.Heuristic})
	}
	printMetricsTable(w, rows)
	fmt.Fprintf(w, "confusion: TP %d  FP %d  TN %d  FN %d\n", ev.Net.TP, ev.Net.FP, ev.Net.TN, ev.Net.FN)
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

func writeEvalJSON(w io.Writer, path string, ev *training.Evaluation) error {
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
	}
	if ev.HasHeuristic {
		out.HeuristicOnCPUNs = &ev.HeuristicNs
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}
