package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/mlsched/mlsched/features"
	"github.com/mlsched/mlsched/model"
)

// inspectModel prints what a model file says about itself: format, schema, dimensions,
// horizon, threshold, training metrics and baselines, training data, creation time and the
// trainer's notes. The file is fully validated first; a bad file is an exitBadInput error.
func inspectModel(path string, jsonOut bool, w io.Writer) error {
	m, err := model.Load(path)
	if errors.Is(err, model.ErrBadMagic) {
		return errorf(exitBadInput, "%s: not an mlsched trace or model file", path)
	}
	if err != nil {
		return withCode(exitBadInput, err)
	}
	var size int64
	if st, err := os.Stat(path); err == nil {
		size = st.Size()
	}
	if jsonOut {
		return writeModelJSON(w, path, size, m)
	}
	printModel(w, path, size, m)
	return nil
}

// writeModelJSON is `inspect --json` of a model file.
func writeModelJSON(w io.Writer, path string, size int64, m *model.Model) error {
	md := &m.Meta
	created := time.Unix(0, md.CreatedUnixNs).UTC()
	type baseline struct {
		Name     string    `json:"name"`
		Accuracy jsonFloat `json:"accuracy"`
	}
	out := struct {
		Path          string            `json:"path"`
		Bytes         int64             `json:"bytes"`
		Version       uint32            `json:"format_version"`
		SchemaID      string            `json:"schema_id"`
		Inputs        int               `json:"inputs"`
		Hidden        int               `json:"hidden"`
		Outputs       int               `json:"outputs"`
		Normalisation string            `json:"normalisation"`
		HorizonNs     uint64            `json:"horizon_ns"`
		Threshold     jsonFloat         `json:"threshold"`
		AbstainMargin jsonFloat         `json:"abstain_margin"`
		Created       string            `json:"created"`
		Accuracy      jsonFloat         `json:"accuracy"`
		Balanced      jsonFloat         `json:"balanced_accuracy"`
		Precision     jsonFloat         `json:"precision"`
		Recall        jsonFloat         `json:"recall"`
		AUC           jsonFloat         `json:"auc"`
		Baselines     []baseline        `json:"baselines"`
		Samples       uint64            `json:"samples"`
		Positives     uint64            `json:"positives"`
		Traces        []string          `json:"traces"`
		Notes         map[string]string `json:"notes"`
	}{
		Path: path, Bytes: size, Version: model.Version,
		SchemaID: features.FormatSchemaID(m.SchemaID),
		Inputs:   m.Inputs, Hidden: m.Hidden, Outputs: model.NumOutputs,
		Normalisation: "log1p-standardise",
		HorizonNs:     m.HorizonNs, Threshold: jsonFloat(m.Threshold),
		AbstainMargin: jsonFloat(m.AbstainMargin),
		Created:       created.Format(time.RFC3339),
		Accuracy:      jsonFloat(md.Metrics.Accuracy), Balanced: jsonFloat(md.Metrics.BalancedAccuracy),
		Precision: jsonFloat(md.Metrics.Precision), Recall: jsonFloat(md.Metrics.Recall),
		AUC:     jsonFloat(md.Metrics.AUC),
		Samples: md.Data.Samples, Positives: md.Data.Positives,
		Traces: md.Data.Traces, Notes: md.Notes,
	}
	out.Baselines = []baseline{}
	for _, b := range md.Metrics.Baselines {
		out.Baselines = append(out.Baselines, baseline{b.Name, jsonFloat(b.Accuracy)})
	}
	if out.Traces == nil {
		out.Traces = []string{}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

// printModel is `inspect` of a model file, for people.
func printModel(w io.Writer, path string, size int64, m *model.Model) {
	md := &m.Meta
	created := time.Unix(0, md.CreatedUnixNs).UTC()
	mt := &md.Metrics
	fmt.Fprintf(w, "model           %s (%d bytes, format version %d, checksum ok)\n", path, size, model.Version)
	fmt.Fprintf(w, "schema          %s (this binary's)\n", features.FormatSchemaID(m.SchemaID))
	fmt.Fprintf(w, "dimensions      %d -> %d (ReLU) -> %d (sigmoid)\n", m.Inputs, m.Hidden, model.NumOutputs)
	fmt.Fprintf(w, "inputs          %d syscall counts, log1p(count); R's scheduling state: %s (schema v2)\n", features.NumBuckets, strings.Join(features.ExtraNames[:], ", "))
	fmt.Fprintf(w, "normalisation   each input standardised with the training data's mean and std\n")
	fmt.Fprintf(w, "horizon         %v (predicts: the running task yields its CPU within it)\n", time.Duration(m.HorizonNs))
	fmt.Fprintf(w, "threshold       %.4f (keep the waking task local when P(yield) >= it)\n", m.Threshold)
	if m.AbstainMargin > 0 {
		fmt.Fprintf(w, "abstain margin  %.3f logits (no opinion within it of the threshold: the base queue places the task)\n", m.AbstainMargin)
	} else {
		fmt.Fprintf(w, "abstain margin  none (the model always answers)\n")
	}
	fmt.Fprintf(w, "created         %s\n", created.Format(time.RFC3339))
	on := md.Notes["metrics_on"]
	if on == "" {
		on = "held-out data"
	}
	fmt.Fprintf(w, "metrics (%s)\n", on)
	fmt.Fprintf(w, "  accuracy %s  balanced %s  precision %s  recall %s  ROC AUC %s\n",
		f4(mt.Accuracy), f4(mt.BalancedAccuracy), f4(mt.Precision), f4(mt.Recall), f4(mt.AUC))
	for _, b := range mt.Baselines {
		fmt.Fprintf(w, "  baseline %-20s accuracy %s\n", b.Name, f4(b.Accuracy))
	}
	fmt.Fprintf(w, "training data   %d samples, %.1f%% positive, %d trace(s)\n",
		md.Data.Samples, percent(int(md.Data.Positives), int(md.Data.Samples)), len(md.Data.Traces))
	for _, t := range md.Data.Traces {
		fmt.Fprintf(w, "  %s\n", t)
	}
	if len(md.Notes) > 0 {
		fmt.Fprintf(w, "notes\n")
		keys := make([]string, 0, len(md.Notes))
		for k := range md.Notes {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			fmt.Fprintf(w, "  %-28s %s\n", k, md.Notes[k])
		}
	}
}
