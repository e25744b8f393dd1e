package training

import (
	"fmt"
	"io"
	"math"
	"os"
	"strconv"

	"github.com/mlsched/mlsched/features"
	"github.com/mlsched/mlsched/model"
)

// Evaluation is a model's performance on traces, with the baselines on the same samples.
type Evaluation struct {
	Net      Metrics
	Majority Metrics
	// Heuristic uses the on-CPU bound recorded in the model (HeuristicNs); HasHeuristic is
	// false when the model does not record one.
	Heuristic    Metrics
	HeuristicNs  uint64
	HasHeuristic bool
	Threshold    float64
	Traces       []string
}

// EvaluateFiles runs m over every sample of the trace files, as the scheduler would (model's
// Predictor: its decision and its logit as the score), and scores it. The traces must have
// the model's feature schema and a horizon at least the model's (longer ones are relabelled,
// see Relabel). Memory: 19 bytes per sample.
func EvaluateFiles(m *model.Model, paths []string) (*Evaluation, error) {
	ev := &Evaluation{Threshold: float64(m.Threshold)}
	if s, ok := m.Meta.Notes[NoteHeuristicNs]; ok {
		if t, err := strconv.ParseUint(s, 10, 64); err == nil {
			ev.HeuristicNs, ev.HasHeuristic = t, true
		}
	}
	pred := model.NewPredictor(m)
	var labels []uint8
	var decisions []bool
	var scores []float64
	var onCPU []uint64
	for _, path := range paths {
		err := func() error {
			f, err := os.Open(path)
			if err != nil {
				return fmt.Errorf("open trace: %w", err)
			}
			defer f.Close()
			tr, err := features.NewTraceReader(f)
			if err != nil {
				return fmt.Errorf("trace %s: %w", path, err)
			}
			// A trace captured with a longer horizon is relabelled for the model's.
			if h := tr.Header().HorizonNs; h < m.HorizonNs {
				return fmt.Errorf("trace %s: captured with horizon %s, the model predicts for the longer %s: %w",
					path, fmtNs(h), fmtNs(m.HorizonNs), ErrHorizonMismatch)
			}
			var s features.Sample
			for {
				err := tr.Next(&s)
				if err == io.EOF {
					return nil
				}
				if err != nil {
					return fmt.Errorf("trace %s: %w", path, err)
				}
				Relabel(&s, m.HorizonNs)
				labels = append(labels, s.Label&1)
				decisions = append(decisions, pred.KeepLocal(&s.Feats))
				scores = append(scores, float64(pred.Logit(&s.Feats)))
				onCPU = append(onCPU, s.ROnCPUNs)
			}
		}()
		if err != nil {
			return nil, err
		}
		ev.Traces = append(ev.Traces, path)
	}
	ev.Net = Score(labels, decisions, scores)
	ev.Majority = Majority(labels)
	if ev.HasHeuristic {
		ev.Heuristic = Heuristic(labels, onCPU, ev.HeuristicNs)
	} else {
		ev.Heuristic = Metrics{N: len(labels), Accuracy: math.NaN(), BalancedAccuracy: math.NaN(),
			Precision: math.NaN(), Recall: math.NaN(), AUC: math.NaN()}
	}
	return ev, nil
}
