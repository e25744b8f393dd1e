package model

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/mlsched/mlsched/features"
)

// Dimension limits. Inputs is fixed by the feature schema (the 64 counts, then the extras of
// R's scheduling state); Hidden is stored in the file.
const (
	NumInputs     = features.NumInputs
	NumOutputs    = 1
	MaxHidden     = 1024
	DefaultHidden = 16
)

// Numeric limits on the parameters. They are far outside anything training produces, and they
// guarantee that float32 inference never overflows: with every value in range, every
// intermediate sum stays below 1e36.
const (
	MaxAbsWeight = 1e6   // |W1|, |b1|, |W2|, |b2|
	MaxAbsMean   = 1e6   // |Mean|
	MinStd       = 1e-12 // Std >= MinStd
	MaxStd       = 1e6   // Std <= MaxStd
)

// Metadata limits, so that a hostile file cannot make the loader allocate much.
const (
	MaxStringLen = 4096 // bytes of any one string
	MaxListLen   = 1024 // entries of any one list or map
)

// NormLog1pStandardize is the only input normalisation kind: x = log1p(v / 2^FixedShift) for
// a count, x = v / features.ExtraInputScale for an extra (already an integer transform of
// R's scheduling state, features.SetExtras), then (x - Mean[i]) / Std[i] (InputValue).
const NormLog1pStandardize uint32 = 1

// Errors of Unmarshal, Load and Validate. Each returned error wraps exactly one of them
// (test with errors.Is) and says which field, and for file errors at which byte offset.
var (
	ErrBadMagic       = errors.New("not an mlsched model file (bad magic)")
	ErrVersion        = errors.New("unsupported model format version")
	ErrSchemaMismatch = errors.New("model feature schema differs from this binary's")
	ErrDims           = errors.New("bad model dimensions")
	ErrNorm           = errors.New("bad input normalisation")
	ErrNonFinite      = errors.New("non-finite value (NaN or Inf)")
	ErrRange          = errors.New("parameter out of range")
	ErrThreshold      = errors.New("decision threshold outside (0, 1)")
	ErrHorizon        = errors.New("horizon must be > 0 and at most 1 min")
	ErrMeta           = errors.New("bad metadata")
	ErrTruncated      = errors.New("model file truncated")
	ErrChecksum       = errors.New("model file checksum mismatch")
	ErrTrailingData   = errors.New("trailing data after model checksum")
)

// Model is a trained predictor and what is known about it. Weights are float32, as in the file.
type Model struct {
	SchemaID uint64 // features.SchemaID() of the schema the model was trained on
	Inputs   int    // always NumInputs (68: the counts, then the extras)
	Hidden   int    // 1..MaxHidden, usually DefaultHidden (16)

	NormKind uint32    // NormLog1pStandardize
	Mean     []float32 // [Inputs], of log1p(count)
	Std      []float32 // [Inputs], > 0

	W1 []float32 // [Hidden*Inputs], row-major: W1[k*Inputs+j] weighs input j into hidden unit k
	B1 []float32 // [Hidden]
	W2 []float32 // [Hidden] (one output)
	B2 float32

	Threshold float32 // decide KeepLocal when P(yield within H) >= Threshold; in (0, 1)
	HorizonNs uint64  // H: the label is "R leaves the CPU voluntarily within HorizonNs"
	// AbstainMargin is the model's abstention band around its threshold, in logit units: a
	// sample whose logit is within AbstainMargin of logit(Threshold) gets no opinion (the base
	// queue's own placement). 0: the model always answers. Chosen on validation data by train.
	AbstainMargin float32

	Meta Meta
}

// Meta is what training recorded about the model. None of it affects inference.
type Meta struct {
	CreatedUnixNs int64
	Metrics       Metrics
	Data          DataSummary
	// Notes is free-form: trainer version, hyperparameters, git commit, ...
	Notes map[string]string
}

// Metrics are measured on held-out data. A value is in [0, 1], or NaN when not measured.
type Metrics struct {
	Accuracy         float64
	BalancedAccuracy float64
	Precision        float64
	Recall           float64
	AUC              float64
	// Baselines are the accuracies of trivial policies on the same data (train writes
	// "majority" and "oncpu-heuristic"), in the trainer's order.
	Baselines []Baseline
}

// Baseline is the accuracy of one trivial policy.
type Baseline struct {
	Name     string
	Accuracy float64
}

// DataSummary describes the training data.
type DataSummary struct {
	Samples   uint64
	Positives uint64   // samples labelled 1 (R yielded within H)
	Traces    []string // names of the trace files
}

// New returns a zero-weight model for this binary's schema with the given hidden width,
// threshold 0.5 and horizon horizonNs, unit std and zero mean: a starting point for exporters.
func New(hidden int, horizonNs uint64) *Model {
	m := &Model{
		SchemaID:  features.SchemaID(),
		Inputs:    NumInputs,
		Hidden:    hidden,
		NormKind:  NormLog1pStandardize,
		Mean:      make([]float32, NumInputs),
		Std:       make([]float32, NumInputs),
		W1:        make([]float32, hidden*NumInputs),
		B1:        make([]float32, hidden),
		W2:        make([]float32, hidden),
		Threshold: 0.5,
		HorizonNs: horizonNs,
	}
	for i := range m.Std {
		m.Std[i] = 1
	}
	return m
}

// Validate checks every field: the schema is this binary's, the dimensions and slice lengths
// agree, every parameter is finite and in range, the threshold is in (0, 1), the horizon is
// positive and the metadata is well formed. A model that validates never makes inference
// produce NaN or Inf.
func (m *Model) Validate() error {
	if err := m.validateShape(); err != nil {
		return err
	}
	if m.SchemaID != features.SchemaID() {
		return fmt.Errorf("schema id %s, this binary has %s: %w",
			features.FormatSchemaID(m.SchemaID), features.FormatSchemaID(features.SchemaID()), ErrSchemaMismatch)
	}
	return m.validateValues(false)
}

func (m *Model) validateShape() error {
	if m.Inputs != NumInputs {
		return fmt.Errorf("inputs %d, want %d: %w", m.Inputs, NumInputs, ErrDims)
	}
	if m.Hidden < 1 || m.Hidden > MaxHidden {
		return fmt.Errorf("hidden %d, want 1..%d: %w", m.Hidden, MaxHidden, ErrDims)
	}
	for _, s := range []struct {
		name string
		n    int
		want int
	}{
		{"mean", len(m.Mean), m.Inputs},
		{"std", len(m.Std), m.Inputs},
		{"w1", len(m.W1), m.Hidden * m.Inputs},
		{"b1", len(m.B1), m.Hidden},
		{"w2", len(m.W2), m.Hidden},
	} {
		if s.n != s.want {
			return fmt.Errorf("len(%s) = %d, want %d: %w", s.name, s.n, s.want, ErrDims)
		}
	}
	return nil
}

// validateValues checks the values of a model of valid shape. With offsets, errors in the
// fixed-layout part name the field's byte offset in the file.
func (m *Model) validateValues(offsets bool) error {
	// at names element i of a field (i < 0: a scalar) and, with offsets, where it is in the file.
	at := func(field string, i int) string {
		name := field
		if i >= 0 {
			name = fmt.Sprintf("%s[%d]", field, i)
		}
		if off := m.fieldOffset(field); offsets && off >= 0 {
			name = fmt.Sprintf("%s at offset %d", name, off+4*max(i, 0))
		}
		return name
	}
	if m.NormKind != NormLog1pStandardize {
		return fmt.Errorf("%s = %d, want %d (log1p-standardise): %w", at("normalisation kind", -1), m.NormKind, NormLog1pStandardize, ErrNorm)
	}
	if err := checkFloats(at, "mean", m.Mean, MaxAbsMean); err != nil {
		return err
	}
	for i, s := range m.Std {
		if !finite32(s) {
			return fmt.Errorf("%s = %v: %w", at("std", i), s, ErrNonFinite)
		}
		if s < MinStd || s > MaxStd {
			return fmt.Errorf("%s = %v, want %g..%g: %w", at("std", i), s, MinStd, MaxStd, ErrNorm)
		}
	}
	if err := checkFloats(at, "w1", m.W1, MaxAbsWeight); err != nil {
		return err
	}
	if err := checkFloats(at, "b1", m.B1, MaxAbsWeight); err != nil {
		return err
	}
	if err := checkFloats(at, "w2", m.W2, MaxAbsWeight); err != nil {
		return err
	}
	if err := checkFloats(at, "b2", []float32{m.B2}, MaxAbsWeight); err != nil {
		return err
	}
	if !finite32(m.Threshold) {
		return fmt.Errorf("%s = %v: %w", at("threshold", -1), m.Threshold, ErrNonFinite)
	}
	if !(m.Threshold > 0 && m.Threshold < 1) {
		return fmt.Errorf("%s = %v: %w", at("threshold", -1), m.Threshold, ErrThreshold)
	}
	if !finite32(m.AbstainMargin) || m.AbstainMargin < 0 || m.AbstainMargin > MaxAbstainMargin {
		return fmt.Errorf("abstain margin = %v, want 0..%v: %w", m.AbstainMargin, MaxAbstainMargin, ErrRange)
	}
	if m.HorizonNs == 0 || m.HorizonNs > features.MaxHorizonNs {
		return fmt.Errorf("%s = %d ns, want (0, %d]: %w", at("horizon", -1), m.HorizonNs, uint64(features.MaxHorizonNs), ErrHorizon)
	}
	return m.Meta.validate()
}

// fieldOffset is the byte offset of a fixed-layout field in the file, or -1.
func (m *Model) fieldOffset(field string) int {
	mean := headerSize
	std := mean + 4*m.Inputs
	w1 := std + 4*m.Inputs
	b1 := w1 + 4*m.Hidden*m.Inputs
	w2 := b1 + 4*m.Hidden
	b2 := w2 + 4*m.Hidden
	switch field {
	case "normalisation kind":
		return 12
	case "schema id":
		return 16
	case "threshold":
		return 36
	case "horizon":
		return 40
	case "mean":
		return mean
	case "std":
		return std
	case "w1":
		return w1
	case "b1":
		return b1
	case "w2":
		return w2
	case "b2":
		return b2
	}
	return -1
}

func (md *Meta) validate() error {
	mt := &md.Metrics
	for _, f := range []struct {
		name string
		v    float64
	}{
		{"accuracy", mt.Accuracy}, {"balanced_accuracy", mt.BalancedAccuracy},
		{"precision", mt.Precision}, {"recall", mt.Recall}, {"auc", mt.AUC},
	} {
		if err := checkMetric(f.name, f.v); err != nil {
			return err
		}
	}
	if len(mt.Baselines) > MaxListLen {
		return fmt.Errorf("%d baselines, max %d: %w", len(mt.Baselines), MaxListLen, ErrMeta)
	}
	for i, b := range mt.Baselines {
		if err := checkString(fmt.Sprintf("baseline[%d] name", i), b.Name, false); err != nil {
			return err
		}
		if err := checkMetric(fmt.Sprintf("baseline %q accuracy", b.Name), b.Accuracy); err != nil {
			return err
		}
	}
	if md.Data.Positives > md.Data.Samples {
		return fmt.Errorf("%d positives > %d samples: %w", md.Data.Positives, md.Data.Samples, ErrMeta)
	}
	if len(md.Data.Traces) > MaxListLen {
		return fmt.Errorf("%d traces, max %d: %w", len(md.Data.Traces), MaxListLen, ErrMeta)
	}
	for i, t := range md.Data.Traces {
		if err := checkString(fmt.Sprintf("trace[%d]", i), t, false); err != nil {
			return err
		}
	}
	if len(md.Notes) > MaxListLen {
		return fmt.Errorf("%d notes, max %d: %w", len(md.Notes), MaxListLen, ErrMeta)
	}
	for k, v := range md.Notes {
		if err := checkString("note key", k, false); err != nil {
			return err
		}
		if err := checkString(fmt.Sprintf("note %q", k), v, true); err != nil {
			return err
		}
	}
	return nil
}

func checkMetric(name string, v float64) error {
	if math.IsNaN(v) {
		return nil // not measured
	}
	if !(v >= 0 && v <= 1) {
		return fmt.Errorf("metric %s = %v, want 0..1 or NaN: %w", name, v, ErrMeta)
	}
	return nil
}

func checkString(name, s string, emptyOK bool) error {
	switch {
	case len(s) == 0 && !emptyOK:
		return fmt.Errorf("%s is empty: %w", name, ErrMeta)
	case len(s) > MaxStringLen:
		return fmt.Errorf("%s is %d bytes, max %d: %w", name, len(s), MaxStringLen, ErrMeta)
	case !utf8.ValidString(s):
		return fmt.Errorf("%s is not UTF-8: %w", name, ErrMeta)
	}
	return nil
}

func checkFloats(at func(string, int) string, name string, xs []float32, maxAbs float32) error {
	for i, x := range xs {
		if !finite32(x) {
			return fmt.Errorf("%s = %v: %w", at(name, i), x, ErrNonFinite)
		}
		if x > maxAbs || x < -maxAbs {
			return fmt.Errorf("%s = %v, max magnitude %g: %w", at(name, i), x, maxAbs, ErrRange)
		}
	}
	return nil
}

func finite32(x float32) bool {
	return !math.IsNaN(float64(x)) && !math.IsInf(float64(x), 0)
}

// MaxAbstainMargin bounds AbstainMargin (logit units: beyond it a model abstains on nearly
// everything).
const MaxAbstainMargin = 16

// Abstains says whether a logit is inside the model's abstention band (no opinion).
func (m *Model) Abstains(logit float64) bool {
	t := float64(m.Threshold)
	return math.Abs(logit-math.Log(t/(1-t))) < float64(m.AbstainMargin)
}

// NoteHeuristicNs is the note in which train records the one-parameter on-CPU heuristic's
// bound (R yields if it has been on the CPU less than this many ns), chosen on the training rows.
const NoteHeuristicNs = "heuristic_oncpu_ns"

// HeuristicOnCPU returns the heuristic's bound recorded in the model's notes; false if none.
func (m *Model) HeuristicOnCPU() (time.Duration, bool) {
	ns, err := strconv.ParseUint(m.Meta.Notes[NoteHeuristicNs], 10, 64)
	if err != nil || ns == 0 || ns > math.MaxInt64 {
		return 0, false
	}
	return time.Duration(ns), true
}

// Normalize writes the model's normalised inputs for the input vector in (features.Sample's
// Feats): out[i] = (InputValue(i, in[i]) - Mean[i]) / Std[i], in float64. Values above their
// range (features.MaxCount, features.MaxExtraInput), which a valid snapshot never has, are
// clamped, as in Predictor. out must hold at least Inputs values.
func (m *Model) Normalize(in *[NumInputs]uint32, out []float64) {
	out = out[:len(in)]
	for i, v := range in {
		out[i] = Standardized(InputValue(i, v), m.Mean[i], m.Std[i])
	}
}

// InputValue is the input normalisation's first step, the one training and inference share:
// log1p of a fixed-point count (input i < features.NumBuckets), clamped to features.MaxCount;
// an extra's integer / features.ExtraInputScale, clamped to features.MaxExtraInput.
func InputValue(i int, v uint32) float64 {
	if i >= features.NumBuckets {
		return ExtraValue(v)
	}
	return Log1pCount(v)
}

// Log1pCount is InputValue of a count.
func Log1pCount(v uint32) float64 {
	return math.Log1p(float64(min(v, features.MaxCount)) / features.FixedOne)
}

// ExtraValue is InputValue of an extra.
func ExtraValue(v uint32) float64 {
	return float64(min(v, features.MaxExtraInput)) / features.ExtraInputScale
}

// Standardized is its second step: (x - mean) / std, in float64, with the stored float32 mean
// and std (so that training standardises exactly as the exported model does).
func Standardized(x float64, mean, std float32) float64 {
	return (x - float64(mean)) / float64(std)
}

// Forward is the reference forward pass in float64 over already normalised inputs x
// (len(x) >= Inputs): sigmoid(b2 + W2 . relu(b1 + W1 x)). It returns the probability that the
// running task yields within the horizon. It is plain and slow on purpose: golden tests
// compare it with the trainer, and Predictor's fast paths with it.
func (m *Model) Forward(x []float64) float64 {
	return sigmoid64(m.forwardLogit(x))
}

func (m *Model) forwardLogit(x []float64) float64 {
	x = x[:m.Inputs]
	out := float64(m.B2)
	for k := 0; k < m.Hidden; k++ {
		row := m.W1[k*m.Inputs : (k+1)*m.Inputs]
		h := float64(m.B1[k])
		for j, w := range row {
			h += float64(w) * x[j]
		}
		if h > 0 {
			out += float64(m.W2[k]) * h
		}
	}
	return out
}

func sigmoid64(z float64) float64 { return 1 / (1 + math.Exp(-z)) }
