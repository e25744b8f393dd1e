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
	// Confident is the model with its abstention margin (Margin 0: it decides everything).
	Confident Confident

	// Kernel is set when the evaluation ran with a kernel form (EvaluateFilesWith): how its
	// decisions compare with the float net's, and its own figures against the labels.
	Kernel *KernelEvaluation
}

// KernelEvaluation is the kernel form (model.KernelForm, the integer net BPF evaluates) on the
// same samples as the float net (model.Predictor).
type KernelEvaluation struct {
	// Agree counts the samples on which KernelForm.KeepLocal decided as Predictor.KeepLocal;
	// KernelKeeps and FloatKeeps those each decided to keep local.
	N, Agree                int
	KernelKeeps, FloatKeeps int
	// MaxLogitErr is the largest |KernelForm.FloatLogit - Predictor.Logit| over the samples.
	MaxLogitErr float64
	// Net scores the kernel form's decisions (its logit as the AUC score).
	Net Metrics
}

// Agreement is the fraction of the samples on which both decided alike (1 with no samples).
func (k *KernelEvaluation) Agreement() float64 {
	if k.N == 0 {
		return 1
	}
	return float64(k.Agree) / float64(k.N)
}

// EvaluateFiles runs m over every sample of the trace files, as the scheduler would (model's
// Predictor: its decision and its logit as the score), and scores it. The traces must have
// the model's feature schema and a horizon at least the model's (longer ones are relabelled,
// see Relabel). Memory: 19 bytes per sample.
func EvaluateFiles(m *model.Model, paths []string) (*Evaluation, error) {
	return EvaluateFilesWith(m, paths, nil)
}

// EvaluateFilesWith is EvaluateFiles that also runs kf, the kernel form of m, on every sample
// and fills Evaluation.Kernel (kf nil: EvaluateFiles). Memory: 28 bytes per sample with kf.
func EvaluateFilesWith(m *model.Model, paths []string, kf *model.KernelForm) (*Evaluation, error) {
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
	var kdecisions []bool
	var kscores []float64
	var kev KernelEvaluation
	var logits []float64
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
				keep, logit := pred.KeepLocal(&s.Feats), float64(pred.Logit(&s.Feats))
				decisions = append(decisions, keep)
				scores = append(scores, logit)
				if m.AbstainMargin > 0 {
					logits = append(logits, logit)
				}
				onCPU = append(onCPU, s.ROnCPUNs)
				if kf != nil {
					kkeep, klogit := kf.KeepLocal(&s.Feats), kf.FloatLogit(&s.Feats)
					kev.add(keep, kkeep, math.Abs(klogit-logit))
					kdecisions = append(kdecisions, kkeep)
					kscores = append(kscores, klogit)
				}
			}
		}()
		if err != nil {
			return nil, err
		}
		ev.Traces = append(ev.Traces, path)
	}
	ev.Net = Score(labels, decisions, scores)
	ev.Confident = ScoreConfident(labels, decisions, scores, float64(float32(math.Log(ev.Threshold/(1-ev.Threshold)))), 0)
	if m.AbstainMargin > 0 {
		ev.Confident = ScoreConfident(labels, decisions, logits, float64(float32(math.Log(ev.Threshold/(1-ev.Threshold)))), float64(m.AbstainMargin))
	}
	if kf != nil {
		kev.Net = Score(labels, kdecisions, kscores)
		ev.Kernel = &kev
	}
	ev.Majority = Majority(labels)
	if ev.HasHeuristic {
		ev.Heuristic = Heuristic(labels, onCPU, ev.HeuristicNs)
	} else {
		ev.Heuristic = Metrics{N: len(labels), Accuracy: math.NaN(), BalancedAccuracy: math.NaN(),
			Precision: math.NaN(), Recall: math.NaN(), AUC: math.NaN()}
	}
	return ev, nil
}

func (k *KernelEvaluation) add(floatKeep, kernelKeep bool, logitErr float64) {
	k.N++
	if floatKeep == kernelKeep {
		k.Agree++
	}
	if floatKeep {
		k.FloatKeeps++
	}
	if kernelKeep {
		k.KernelKeeps++
	}
	k.MaxLogitErr = max(k.MaxLogitErr, logitErr)
}
