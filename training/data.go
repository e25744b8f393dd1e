package training

import (
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"sort"

	"github.com/mlsched/mlsched/features"
	"github.com/mlsched/mlsched/model"
)

// Inputs is the net's input width: one decayed syscall count per bucket, then the extras of
// R's scheduling state (feature schema v2).
const Inputs = features.NumInputs

// DefaultMaxSamples bounds the samples held in memory. Training keeps every sample as a row of
// 68 float32 plus its label, on-CPU time and timestamp: about 280 bytes, so the default is
// about 5.6 GB. Traces beyond it are refused, not silently subsampled.
const DefaultMaxSamples = 20_000_000

// BytesPerSample is what one loaded sample costs in memory (see DefaultMaxSamples).
const BytesPerSample = 4*Inputs + 1 + 8 + 8 + 4

// ErrTooLarge is returned when the traces hold more samples than the memory budget allows.
var ErrTooLarge = errors.New("training data exceeds the in-memory limit")

// ErrHorizonMismatch is returned when traces were captured with different horizons.
var ErrHorizonMismatch = errors.New("traces have different horizons")

// Dataset is a set of samples in memory, split by time into training and validation rows.
type Dataset struct {
	// X holds one row of Inputs values per sample: log1p of the decayed counts, and after
	// Standardize, those values standardised with Mean and Std.
	X       []float32
	Y       []uint8
	OnCPUNs []uint64 // R's on-CPU time at the wakeup, for the heuristic baseline
	TsNs    []uint64 // sample time relative to its trace's start

	// Train and Val index rows. Each trace contributes its last ValFrac (by time) to Val.
	Train, Val []int32

	// HorizonNs is the label's horizon. When it is set before the first trace is added, the
	// traces may have been captured with any horizon at least as long and are relabelled
	// (see Relabel); otherwise it is the first trace's and every trace must have the same.
	HorizonNs uint64
	Traces    []string
	ValFrac   float64

	// Mean and Std of the log1p inputs over the training rows, once Standardize ran.
	Mean, Std []float32

	// TrainPerTrace, when > 0, keeps at most that many of each trace's training rows, drawn
	// at random (seeded by the trace's position): each program then weighs at most alike,
	// however many wakeups it makes. Validation keeps every row. Set it before adding traces.
	TrainPerTrace int

	maxSamples int
	standard   bool
	relabel    bool
}

// SetHorizon makes the data set label every sample for horizon h (> 0), which must not be
// longer than any trace's capture horizon. Call it before adding traces.
func (ds *Dataset) SetHorizon(h uint64) error {
	if len(ds.Traces) > 0 {
		return errors.New("set horizon: traces already added")
	}
	if h == 0 {
		return errors.New("set horizon: must be > 0")
	}
	ds.HorizonNs, ds.relabel = h, true
	return nil
}

// Relabel turns a sample labelled for a horizon H into one labelled for h <= H: R yields
// within h if it yielded within H and its switch-out came at most h after the wakeup (the
// same rule as the capture's, which stores that delay in LeaveNs).
func Relabel(s *features.Sample, h uint64) {
	if s.Outcome == features.OutcomeTimeout {
		return // still running at the capture's horizon, so at any shorter one too
	}
	s.Outcome, s.Label = features.Label(s.Outcome == features.OutcomeVoluntary, s.LeaveNs, h)
	if s.Outcome == features.OutcomeTimeout {
		s.LeaveNs = 0
	}
}

// NewDataset returns an empty data set that puts the last valFrac (0 <= valFrac < 1) of each
// trace into validation and refuses more than maxSamples samples (<= 0: DefaultMaxSamples).
func NewDataset(valFrac float64, maxSamples int) (*Dataset, error) {
	if !(valFrac >= 0 && valFrac < 1) {
		return nil, fmt.Errorf("validation fraction %v: want 0 <= f < 1", valFrac)
	}
	if maxSamples <= 0 {
		maxSamples = DefaultMaxSamples
	}
	return &Dataset{ValFrac: valFrac, maxSamples: maxSamples}, nil
}

// LoadTraces reads trace files into a new data set. horizonNs, if not 0, relabels the
// samples for that horizon (see SetHorizon).
func LoadTraces(paths []string, valFrac float64, maxSamples int, horizonNs uint64) (*Dataset, error) {
	return LoadTracesPerTrace(paths, valFrac, maxSamples, horizonNs, 0)
}

// LoadTracesPerTrace is LoadTraces with Dataset.TrainPerTrace set to perTrace.
func LoadTracesPerTrace(paths []string, valFrac float64, maxSamples int, horizonNs uint64, perTrace int) (*Dataset, error) {
	ds, err := NewDataset(valFrac, maxSamples)
	if err != nil {
		return nil, err
	}
	ds.TrainPerTrace = perTrace
	if horizonNs != 0 {
		if err := ds.SetHorizon(horizonNs); err != nil {
			return nil, err
		}
	}
	for _, p := range paths {
		if err := ds.AddFile(p); err != nil {
			return nil, err
		}
	}
	return ds, nil
}

// AddFile reads one trace file.
func (ds *Dataset) AddFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("open trace: %w", err)
	}
	defer f.Close()
	return ds.Add(path, f)
}

// Add reads one trace from r; name identifies it in errors and in the model's metadata.
// The trace's feature schema must be this binary's and its horizon that of the traces
// already added. A damaged or unfinished trace is an error.
func (ds *Dataset) Add(name string, r io.Reader) error {
	if ds.standard {
		return errors.New("add trace: data set already standardised")
	}
	tr, err := features.NewTraceReader(r)
	if err != nil {
		return fmt.Errorf("trace %s: %w", name, err)
	}
	h := tr.Header()
	if h.HorizonNs == 0 {
		return fmt.Errorf("trace %s: horizon is 0", name)
	}
	switch {
	case ds.HorizonNs == 0:
		ds.HorizonNs = h.HorizonNs
	case ds.relabel && h.HorizonNs < ds.HorizonNs:
		return fmt.Errorf("trace %s: captured with horizon %s, cannot label it for the longer %s: %w",
			name, fmtNs(h.HorizonNs), fmtNs(ds.HorizonNs), ErrHorizonMismatch)
	case !ds.relabel && h.HorizonNs != ds.HorizonNs:
		return fmt.Errorf("trace %s: horizon %s, but %s has %s: %w (train one model per horizon, "+
			"or relabel both for a common shorter one with --horizon)",
			name, fmtNs(h.HorizonNs), ds.Traces[0], fmtNs(ds.HorizonNs), ErrHorizonMismatch)
	}
	first := len(ds.Y)
	var s features.Sample
	for {
		err := tr.Next(&s)
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("trace %s: %w", name, err)
		}
		if len(ds.Y) >= ds.maxSamples {
			return fmt.Errorf("trace %s: more than %d samples (%d bytes each, %.1f GB): %w; "+
				"train on fewer or shorter traces, or raise --max-samples if the machine has the memory",
				name, ds.maxSamples, BytesPerSample, float64(ds.maxSamples)*BytesPerSample/1e9, ErrTooLarge)
		}
		if ds.relabel {
			Relabel(&s, ds.HorizonNs)
		}
		ds.appendSample(&s)
	}
	ds.Traces = append(ds.Traces, name)
	ds.split(first)
	return nil
}

func (ds *Dataset) appendSample(s *features.Sample) {
	var row [Inputs]float32
	for i, v := range s.Feats {
		if v != 0 {
			row[i] = float32(model.InputValue(i, v))
		}
	}
	ds.X = append(ds.X, row[:]...)
	ds.Y = append(ds.Y, s.Label&1)
	ds.OnCPUNs = append(ds.OnCPUNs, s.ROnCPUNs)
	ds.TsNs = append(ds.TsNs, s.TsNs)
}

// split assigns rows first.. (one trace) to Train and Val by time: the last ValFrac of the
// trace's samples, in timestamp order, are validation.
func (ds *Dataset) split(first int) {
	n := len(ds.Y) - first
	rows := make([]int32, n)
	for i := range rows {
		rows[i] = int32(first + i)
	}
	sort.SliceStable(rows, func(a, b int) bool { return ds.TsNs[rows[a]] < ds.TsNs[rows[b]] })
	nVal := int(math.Round(float64(n) * ds.ValFrac))
	train := rows[:n-nVal]
	if k := ds.TrainPerTrace; k > 0 && len(train) > k {
		rng := rand.New(rand.NewPCG(uint64(len(ds.Traces)), 0x7472616365))
		rng.Shuffle(len(train), func(i, j int) { train[i], train[j] = train[j], train[i] })
		train = train[:k]
		sort.SliceStable(train, func(a, b int) bool { return ds.TsNs[train[a]] < ds.TsNs[train[b]] }) // in time order, as the others
	}
	ds.Train = append(ds.Train, train...)
	ds.Val = append(ds.Val, rows[n-nVal:]...)
}

// Len is the number of samples.
func (ds *Dataset) Len() int { return len(ds.Y) }

// Positives counts the samples labelled 1 among rows (nil: all samples).
func (ds *Dataset) Positives(rows []int32) int {
	n := 0
	if rows == nil {
		for _, y := range ds.Y {
			n += int(y)
		}
		return n
	}
	for _, r := range rows {
		n += int(ds.Y[r])
	}
	return n
}

// Labels returns the labels of rows.
func (ds *Dataset) Labels(rows []int32) []uint8 {
	out := make([]uint8, len(rows))
	for i, r := range rows {
		out[i] = ds.Y[r]
	}
	return out
}

// OnCPU returns the on-CPU times of rows.
func (ds *Dataset) OnCPU(rows []int32) []uint64 {
	out := make([]uint64, len(rows))
	for i, r := range rows {
		out[i] = ds.OnCPUNs[r]
	}
	return out
}

// Row returns sample r's inputs.
func (ds *Dataset) Row(r int32) []float32 { return ds.X[int(r)*Inputs : (int(r)+1)*Inputs] }

// Standardize computes Mean and Std of each input over the training rows and standardises
// every row with them in place. A constant input gets Std 1 (it carries no information, and a
// tiny Std would only amplify noise in other data). The stored float32 Mean and Std are the
// ones applied, so that the exported model normalises exactly as training did.
func (ds *Dataset) Standardize() {
	if ds.standard {
		return
	}
	var sum, sq [Inputs]float64
	for _, r := range ds.Train {
		for j, x := range ds.Row(r) {
			sum[j] += float64(x)
		}
	}
	n := float64(max(len(ds.Train), 1))
	ds.Mean = make([]float32, Inputs)
	ds.Std = make([]float32, Inputs)
	for j := range sum {
		ds.Mean[j] = float32(sum[j] / n)
	}
	for _, r := range ds.Train {
		for j, x := range ds.Row(r) {
			d := float64(x) - float64(ds.Mean[j])
			sq[j] += d * d
		}
	}
	for j := range sq {
		sd := math.Sqrt(sq[j] / n)
		if sd < 1e-6 {
			sd = 1
		}
		ds.Std[j] = float32(sd)
	}
	for i := 0; i < len(ds.X); i += Inputs {
		row := ds.X[i : i+Inputs]
		for j, x := range row {
			row[j] = float32(model.Standardized(float64(x), ds.Mean[j], ds.Std[j]))
		}
	}
	ds.standard = true
}

func fmtNs(ns uint64) string {
	switch {
	case ns >= 1e9 && ns%1e9 == 0:
		return fmt.Sprintf("%ds", ns/1e9)
	case ns >= 1e6 && ns%1e3 == 0:
		return fmt.Sprintf("%gms", float64(ns)/1e6)
	case ns >= 1e3:
		return fmt.Sprintf("%gµs", float64(ns)/1e3)
	}
	return fmt.Sprintf("%dns", ns)
}
