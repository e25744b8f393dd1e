package training

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	G "gorgonia.org/gorgonia"

	"github.com/mlsched/mlsched/features"
	"github.com/mlsched/mlsched/model"
)

// Config holds the training hyperparameters.
type Config struct {
	Hidden    int     // hidden units (default model.DefaultHidden)
	Epochs    int     // passes over the training rows (default 20)
	BatchSize int     // minibatch size (default 256)
	LearnRate float64 // Adam's step size (default 0.003)
	Seed      uint64  // weights and minibatch order; same seed, same data: same model
	// ThresholdFor is what the decision threshold maximises on the validation data:
	// "balanced" (balanced accuracy, the default) or "accuracy".
	ThresholdFor string
	// MinCoverage is the least coverage the abstention margin may leave on the validation
	// data (ChooseMargin); 0 is DefaultMinCoverage, 1 or more: no margin.
	MinCoverage float64
	// CountDropout is the probability that a training row's 64 syscall counts are hidden
	// from the net for one step (set to their training mean: 0 once standardised), so that it
	// learns to answer from R's scheduling state alone as well and leans less on the counts,
	// the inputs that carry least to a program it has not seen (docs/TRAINING.md). 0: off.
	// Validation rows are never dropped.
	CountDropout float64
	// Progress, when set, is called after every epoch.
	Progress func(EpochStats)
	// Stop, when set, is asked after every epoch: true ends training there, with the best
	// epoch so far (Result.Stopped says so).
	Stop func() bool
}

func (c *Config) defaults() {
	if c.Hidden == 0 {
		c.Hidden = model.DefaultHidden
	}
	if c.Epochs == 0 {
		c.Epochs = 20
	}
	if c.BatchSize == 0 {
		c.BatchSize = 256
	}
	if c.LearnRate == 0 {
		c.LearnRate = 0.003
	}
	if c.ThresholdFor == "" {
		c.ThresholdFor = "balanced"
	}
	if c.MinCoverage == 0 {
		c.MinCoverage = DefaultMinCoverage
	}
}

// EpochStats reports one epoch. Validation accuracies use the threshold chosen on the
// validation data at that epoch (Config.ThresholdFor), as the final model does.
type EpochStats struct {
	Epoch               int     `json:"epoch"`
	TrainLoss           float64 `json:"train_loss"`
	ValLoss             float64 `json:"val_loss"`
	ValAccuracy         float64 `json:"val_accuracy"`
	ValBalancedAccuracy float64 `json:"val_balanced_accuracy"`
	ValAUC              float64 `json:"val_auc"`
	SamplesPerSec       float64 `json:"samples_per_sec"` // training rows per second of this epoch's training
	Seconds             float64 `json:"seconds"`
}

// Report compares the net with the baselines on the evaluation rows.
type Report struct {
	Net       Metrics `json:"net"`
	Majority  Metrics `json:"majority"`
	Heuristic Metrics `json:"heuristic"`
	// Threshold is the net's decision threshold: P(yield) >= Threshold predicts a yield.
	Threshold float64 `json:"threshold"`
	// HeuristicNs is the heuristic's bound: R yields if its on-CPU time is below it.
	HeuristicNs uint64 `json:"heuristic_oncpu_ns"`
	// Confident is the model with its abstention margin (chosen on the same rows).
	Confident Confident `json:"confident"`
}

// Result is a trained model and how it got there.
type Result struct {
	Model   *model.Model
	Params  *Params
	History []EpochStats
	// BestEpoch is the epoch (1-based) whose weights were kept: the lowest validation loss.
	BestEpoch int
	// Report is measured on the validation rows, or on the training rows when there are none
	// (OnTraining), which then says little about the future.
	Report     Report
	OnTraining bool
	TrainRows  int
	ValRows    int
	// SamplesPerSec is the training throughput over all epochs (forward, backward, Adam).
	SamplesPerSec float64
	// Stopped is the epoch after which Config.Stop ended training (0: every epoch ran).
	Stopped int
}

// Train trains a net on ds (which it standardises) and exports it to the model format.
// The validation rows choose the epoch to keep and the decision threshold (the one that
// maximises balanced accuracy); the training rows choose the heuristic's bound.
func Train(ds *Dataset, cfg Config) (*Result, error) {
	cfg.defaults()
	if cfg.Hidden < 1 || cfg.Hidden > model.MaxHidden {
		return nil, fmt.Errorf("hidden %d: want 1..%d", cfg.Hidden, model.MaxHidden)
	}
	if cfg.Epochs < 1 || cfg.BatchSize < 1 || !(cfg.LearnRate > 0) {
		return nil, fmt.Errorf("epochs %d, batch %d, learning rate %v: each must be positive", cfg.Epochs, cfg.BatchSize, cfg.LearnRate)
	}
	if !(cfg.CountDropout >= 0 && cfg.CountDropout < 1) {
		return nil, fmt.Errorf("count dropout %v: want 0 <= p < 1", cfg.CountDropout)
	}
	choose := BestThreshold
	switch cfg.ThresholdFor {
	case "balanced":
	case "accuracy":
		choose = BestAccuracyThreshold
	default:
		return nil, fmt.Errorf("threshold objective %q: want balanced or accuracy", cfg.ThresholdFor)
	}
	nTrain := len(ds.Train)
	if nTrain == 0 {
		return nil, errors.New("no training samples")
	}
	pos := ds.Positives(ds.Train)
	if pos == 0 || pos == nTrain {
		return nil, fmt.Errorf("the %d training samples all have label %d: nothing to learn", nTrain, min(pos, 1))
	}
	ds.Standardize()

	// Class weights so that each class carries half the loss: the net is not pulled towards
	// always predicting the majority.
	wPos := float32(float64(nTrain) / (2 * float64(pos)))
	wNeg := float32(float64(nTrain) / (2 * float64(nTrain-pos)))

	rng := rand.New(rand.NewPCG(cfg.Seed, 0x6d6c73636865642e)) // "mlsched."
	// The dropout draws have their own stream: a model trained without dropout is the same
	// as before the option existed.
	drop := rand.New(rand.NewPCG(cfg.Seed, 0x64726f706f75742e)) // "dropout."
	batch := min(cfg.BatchSize, nTrain)
	gr, err := newGraph(batch, InitParams(cfg.Hidden, rng), true)
	if err != nil {
		return nil, err
	}
	defer gr.vm.Close()
	solver := G.NewAdamSolver(G.WithLearnRate(cfg.LearnRate))
	grads := G.NodesToValueGrads(gr.learnables)

	evalRows, onTraining := ds.Val, false
	if len(evalRows) == 0 {
		evalRows, onTraining = ds.Train, true
	}
	evalLabels := ds.Labels(evalRows)

	res := &Result{TrainRows: nTrain, ValRows: len(ds.Val), OnTraining: onTraining}
	order := append([]int32(nil), ds.Train...)
	var best *Params
	bestLoss := math.Inf(1)
	var trainTime time.Duration
	trained := 0
	for epoch := 1; epoch <= cfg.Epochs; epoch++ {
		start := time.Now()
		rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		var lossSum float64
		nb := len(order) / batch // the remainder of the shuffled order waits for the next epoch
		for b := 0; b < nb; b++ {
			for i, r := range order[b*batch : (b+1)*batch] {
				x := gr.xBuf[i*Inputs : (i+1)*Inputs]
				copy(x, ds.Row(r))
				if cfg.CountDropout > 0 && drop.Float64() < cfg.CountDropout {
					clear(x[:features.NumBuckets])
				}
				y := ds.Y[r]
				gr.yBuf[i] = float32(y)
				if y == 1 {
					gr.wtBuf[i] = wPos
				} else {
					gr.wtBuf[i] = wNeg
				}
			}
			if err := gr.run(); err != nil {
				return nil, fmt.Errorf("epoch %d: %w", epoch, err)
			}
			lossSum += gr.lossValue()
			if err := solver.Step(grads); err != nil {
				return nil, fmt.Errorf("epoch %d: adam step: %w", epoch, err)
			}
		}
		gr.sync()
		elapsed := time.Since(start)
		trainTime += elapsed
		trained += nb * batch
		p := gr.params()
		probs := p.predict(ds, evalRows)
		st := EpochStats{
			Epoch:         epoch,
			TrainLoss:     lossSum / float64(nb),
			ValLoss:       weightedLoss(evalLabels, probs, float64(wPos), float64(wNeg)),
			SamplesPerSec: float64(nb*batch) / elapsed.Seconds(),
			Seconds:       elapsed.Seconds(),
		}
		if math.IsNaN(st.TrainLoss) || math.IsNaN(st.ValLoss) {
			return nil, fmt.Errorf("epoch %d: loss is NaN (try a smaller --lr)", epoch)
		}
		t, _ := choose(evalLabels, probs)
		m := Score(evalLabels, threshold(probs, t), probs)
		st.ValAccuracy, st.ValBalancedAccuracy, st.ValAUC = m.Accuracy, m.BalancedAccuracy, m.AUC
		res.History = append(res.History, st)
		if st.ValLoss < bestLoss {
			bestLoss, best, res.BestEpoch = st.ValLoss, p, epoch
		}
		if cfg.Progress != nil {
			cfg.Progress(st)
		}
		if cfg.Stop != nil && epoch < cfg.Epochs && cfg.Stop() {
			res.Stopped = epoch
			break
		}
	}
	res.SamplesPerSec = float64(trained) / trainTime.Seconds()
	res.Params = best

	probs := best.predict(ds, evalRows)
	thr, _ := choose(evalLabels, probs)
	thr32 := float32(min(max(thr, 1e-6), 1-1e-6))
	res.Report.Threshold = float64(thr32)
	res.Report.Net = Score(evalLabels, threshold(probs, float64(thr32)), probs)
	res.Report.Majority = Majority(evalLabels)
	res.Report.HeuristicNs = HeuristicThreshold(ds.Labels(ds.Train), ds.OnCPU(ds.Train))
	res.Report.Heuristic = Heuristic(evalLabels, ds.OnCPU(evalRows), res.Report.HeuristicNs)

	// The abstention margin, on the same rows as the threshold, in the float32 logit the
	// predictor compares.
	thrLogit := float64(float32(math.Log(float64(thr32) / (1 - float64(thr32)))))
	logits := make([]float64, len(probs))
	for i, p := range probs {
		p = min(max(p, 1e-12), 1-1e-12)
		logits[i] = math.Log(p / (1 - p))
	}
	res.Report.Confident = ChooseMargin(evalLabels, threshold(probs, float64(thr32)), logits, thrLogit, cfg.MinCoverage)
	res.Report.Confident.Margin = float64(float32(res.Report.Confident.Margin))

	res.Model = res.export(ds, cfg, thr32)
	res.Model.AbstainMargin = float32(min(res.Report.Confident.Margin, model.MaxAbstainMargin))
	if err := res.Model.Validate(); err != nil {
		return nil, fmt.Errorf("export model: %w", err)
	}
	return res, nil
}

// metaTraces is the trace list as the model's metadata can hold it (model.Meta: at most
// model.MaxListLen UTF-8 strings of at most model.MaxStringLen bytes): a Linux file name may be
// any bytes and a training run any number of files, and neither may cost the trained model at
// export. Invalid UTF-8 becomes U+FFFD, a name too long is cut at a rune, and past the limit the
// last entry says how many more there were.
func metaTraces(names []string) []string {
	out := make([]string, 0, min(len(names), model.MaxListLen))
	for i, n := range names {
		if len(out) == model.MaxListLen-1 && len(names) > model.MaxListLen {
			out = append(out, fmt.Sprintf("... and %d more", len(names)-i))
			break
		}
		n = strings.ToValidUTF8(n, "\uFFFD")
		if len(n) > model.MaxStringLen {
			n = strings.ToValidUTF8(n[:model.MaxStringLen], "")
		}
		if n == "" {
			n = "?"
		}
		out = append(out, n)
	}
	return out
}

// Baseline names as stored in the model's metadata.
const (
	BaselineMajority  = "majority"
	BaselineHeuristic = "oncpu-heuristic"
	// NoteHeuristicNs is the model note holding the heuristic's on-CPU bound in ns.
	NoteHeuristicNs = model.NoteHeuristicNs
)

func (res *Result) export(ds *Dataset, cfg Config, thr float32) *model.Model {
	H := res.Params.Hidden
	m := res.Params.Model(ds.Mean, ds.Std, ds.HorizonNs, thr)
	r := &res.Report
	m.Meta = model.Meta{
		CreatedUnixNs: time.Now().UnixNano(),
		Metrics: model.Metrics{
			Accuracy:         r.Net.Accuracy,
			BalancedAccuracy: r.Net.BalancedAccuracy,
			Precision:        r.Net.Precision,
			Recall:           r.Net.Recall,
			AUC:              r.Net.AUC,
			Baselines: []model.Baseline{
				{Name: BaselineMajority, Accuracy: r.Majority.Accuracy},
				{Name: BaselineHeuristic, Accuracy: r.Heuristic.Accuracy},
			},
		},
		Data: model.DataSummary{
			Samples:   uint64(ds.Len()),
			Positives: uint64(ds.Positives(nil)),
			Traces:    metaTraces(ds.Traces),
		},
		Notes: map[string]string{
			"trainer":                     "mlsched training (gorgonia v0.9.18)",
			"hidden":                      strconv.Itoa(H),
			"epochs":                      strconv.Itoa(cfg.Epochs),
			"best_epoch":                  strconv.Itoa(res.BestEpoch),
			"batch":                       strconv.Itoa(cfg.BatchSize),
			"learn_rate":                  strconv.FormatFloat(cfg.LearnRate, 'g', -1, 64),
			"seed":                        strconv.FormatUint(cfg.Seed, 10),
			"val_frac":                    strconv.FormatFloat(ds.ValFrac, 'g', -1, 64),
			"train_samples":               strconv.Itoa(res.TrainRows),
			"val_samples":                 strconv.Itoa(res.ValRows),
			"metrics_on":                  map[bool]string{true: "training", false: "validation"}[res.OnTraining],
			NoteHeuristicNs:               strconv.FormatUint(r.HeuristicNs, 10),
			"heuristic_balanced_accuracy": strconv.FormatFloat(r.Heuristic.BalancedAccuracy, 'f', 4, 64),
			"threshold_chosen_on":         "validation: max " + cfg.ThresholdFor,
			"abstain_chosen_on":           fmt.Sprintf("validation: max (confident accuracy - its majority) x coverage, coverage >= %g", cfg.MinCoverage),
			"abstain_coverage":            strconv.FormatFloat(r.Confident.Coverage, 'f', 4, 64),
		},
	}
	if cfg.CountDropout > 0 {
		m.Meta.Notes["count_dropout"] = strconv.FormatFloat(cfg.CountDropout, 'g', -1, 64)
	}
	if res.Stopped > 0 {
		m.Meta.Notes["stopped_after_epoch"] = strconv.Itoa(res.Stopped)
	}
	return m
}

// Model converts the weights to the model format (whose W1 is Hidden x Inputs) with the
// input normalisation mean/std, the horizon and the decision threshold; no metadata.
func (p *Params) Model(mean, std []float32, horizonNs uint64, threshold float32) *model.Model {
	H := p.Hidden
	m := model.New(H, horizonNs)
	copy(m.Mean, mean)
	copy(m.Std, std)
	for j := 0; j < Inputs; j++ {
		for k := 0; k < H; k++ {
			m.W1[k*Inputs+j] = p.W1[j*H+k]
		}
	}
	copy(m.B1, p.B1)
	copy(m.W2, p.W2)
	m.B2 = p.B2
	m.Threshold = threshold
	return m
}

// predict returns P(yield) for rows of the standardised data set, in parallel.
func (p *Params) predict(ds *Dataset, rows []int32) []float64 {
	out := make([]float64, len(rows))
	workers := max(1, min(runtime.GOMAXPROCS(0), len(rows)/4096))
	var wg sync.WaitGroup
	chunk := (len(rows) + workers - 1) / workers
	for w := 0; w < workers; w++ {
		lo, hi := w*chunk, min((w+1)*chunk, len(rows))
		wg.Add(1)
		go func() {
			defer wg.Done()
			h := make([]float64, p.Hidden)
			for i := lo; i < hi; i++ {
				out[i] = sigmoid(p.Logit(ds.Row(rows[i]), h))
			}
		}()
	}
	wg.Wait()
	return out
}

func threshold(probs []float64, t float64) []bool {
	pred := make([]bool, len(probs))
	for i, p := range probs {
		pred[i] = p >= t
	}
	return pred
}

// weightedLoss is the class-weighted binary cross-entropy the net is trained on.
func weightedLoss(labels []uint8, probs []float64, wPos, wNeg float64) float64 {
	if len(labels) == 0 {
		return math.NaN()
	}
	const eps = 1e-7
	var s float64
	for i, y := range labels {
		p := min(max(probs[i], eps), 1-eps)
		if y == 1 {
			s -= wPos * math.Log(p)
		} else {
			s -= wNeg * math.Log(1-p)
		}
	}
	return s / float64(len(labels))
}
