package training

import (
	"math"
	"sort"
)

// Metrics describes binary predictions against labels. Rates are in [0, 1]; AUC is NaN when
// the labels have a single class (it is undefined then).
type Metrics struct {
	N         int `json:"n"`
	Positives int `json:"positives"`

	TP int `json:"tp"`
	FP int `json:"fp"`
	TN int `json:"tn"`
	FN int `json:"fn"`

	Accuracy float64 `json:"accuracy"`
	// BalancedAccuracy is the mean of the recall of each class present in the labels: 0.5 for
	// any constant prediction when both classes are present.
	BalancedAccuracy float64 `json:"balanced_accuracy"`
	// Precision is TP/(TP+FP), 0 when nothing is predicted positive.
	Precision float64 `json:"precision"`
	// Recall is TP/(TP+FN), 0 when there are no positives.
	Recall float64 `json:"recall"`
	// AUC is the ROC AUC of the scores (ties count one half), NaN with a single class.
	AUC float64 `json:"auc"`
}

// Score computes the metrics of predictions pred against labels (0/1), and the ROC AUC of
// scores (higher means more likely positive). scores may be nil: AUC is then NaN.
func Score(labels []uint8, pred []bool, scores []float64) Metrics {
	var m Metrics
	m.N = len(labels)
	for i, y := range labels {
		switch {
		case y == 1 && pred[i]:
			m.TP++
		case y == 1:
			m.FN++
		case pred[i]:
			m.FP++
		default:
			m.TN++
		}
	}
	m.Positives = m.TP + m.FN
	neg := m.TN + m.FP
	if m.N > 0 {
		m.Accuracy = float64(m.TP+m.TN) / float64(m.N)
	}
	var rates []float64
	if m.Positives > 0 {
		m.Recall = float64(m.TP) / float64(m.Positives)
		rates = append(rates, m.Recall)
	}
	if neg > 0 {
		rates = append(rates, float64(m.TN)/float64(neg))
	}
	for _, r := range rates {
		m.BalancedAccuracy += r / float64(len(rates))
	}
	if m.TP+m.FP > 0 {
		m.Precision = float64(m.TP) / float64(m.TP+m.FP)
	}
	m.AUC = math.NaN()
	if scores != nil {
		m.AUC = AUC(labels, scores)
	}
	return m
}

// AUC is the area under the ROC curve of scores for labels: the probability that a random
// positive scores above a random negative, ties counting one half (the Mann-Whitney U
// statistic with mid-ranks). NaN when either class is absent.
func AUC(labels []uint8, scores []float64) float64 {
	n := len(labels)
	idx := make([]int32, n)
	for i := range idx {
		idx[i] = int32(i)
	}
	sort.Slice(idx, func(a, b int) bool { return scores[idx[a]] < scores[idx[b]] })
	var pos, neg int
	var rankSumPos float64 // 1-based mid-ranks of the positives
	for i := 0; i < n; {
		j := i
		for j < n && scores[idx[j]] == scores[idx[i]] {
			j++
		}
		mid := float64(i+1+j) / 2 // mean of ranks i+1..j
		for k := i; k < j; k++ {
			if labels[idx[k]] == 1 {
				pos++
				rankSumPos += mid
			} else {
				neg++
			}
		}
		i = j
	}
	if pos == 0 || neg == 0 {
		return math.NaN()
	}
	return (rankSumPos - float64(pos)*float64(pos+1)/2) / (float64(pos) * float64(neg))
}

// BestThreshold returns the threshold t that maximises balanced accuracy when predicting
// positive for score >= t, and that balanced accuracy. t lies halfway between two adjacent
// distinct scores (or just outside the range of the scores), so small rounding of a score
// does not flip its decision. With a single class it returns the midpoint of the scores' range.
func BestThreshold(labels []uint8, scores []float64) (float64, float64) {
	return bestThreshold(labels, scores, func(tp, fp, pos, neg int) float64 {
		return (float64(tp)/float64(pos) + float64(neg-fp)/float64(neg)) / 2
	})
}

// BestAccuracyThreshold is BestThreshold maximising accuracy instead: fewer wrong decisions
// overall, at the cost of the minority class's recall.
func BestAccuracyThreshold(labels []uint8, scores []float64) (float64, float64) {
	return bestThreshold(labels, scores, func(tp, fp, pos, neg int) float64 {
		return float64(tp+neg-fp) / float64(pos+neg)
	})
}

func bestThreshold(labels []uint8, scores []float64, objective func(tp, fp, pos, neg int) float64) (float64, float64) {
	n := len(labels)
	if n == 0 {
		return 0.5, 0
	}
	idx := make([]int32, n)
	for i := range idx {
		idx[i] = int32(i)
	}
	// Descending: the first k samples are predicted positive.
	sort.Slice(idx, func(a, b int) bool { return scores[idx[a]] > scores[idx[b]] })
	var pos, neg int
	for _, y := range labels {
		if y == 1 {
			pos++
		} else {
			neg++
		}
	}
	lo, hi := scores[idx[n-1]], scores[idx[0]]
	if pos == 0 || neg == 0 {
		return (lo + hi) / 2, 1
	}
	// Predict nothing positive: threshold above the top score.
	bestT, best := hi+margin(hi), objective(0, 0, pos, neg)
	var tp, fp int
	for i := 0; i < n; {
		j := i
		for j < n && scores[idx[j]] == scores[idx[i]] {
			if labels[idx[j]] == 1 {
				tp++
			} else {
				fp++
			}
			j++
		}
		bal := objective(tp, fp, pos, neg)
		if bal > best {
			best = bal
			s := scores[idx[i]]
			if j < n {
				bestT = (s + scores[idx[j]]) / 2
			} else {
				bestT = s - margin(s)
			}
		}
		i = j
	}
	return bestT, best
}

func margin(x float64) float64 { return max(math.Abs(x)*1e-6, 1e-9) }

// Majority is the majority-class baseline on labels: the constant prediction of whichever
// class is more frequent in labels themselves (ties: positive). Its accuracy is therefore an
// upper bound for any constant prediction on this data.
func Majority(labels []uint8) Metrics {
	pos := 0
	for _, y := range labels {
		pos += int(y)
	}
	c := 2*pos >= len(labels)
	pred := make([]bool, len(labels))
	scores := make([]float64, len(labels))
	for i := range pred {
		pred[i] = c
	}
	return Score(labels, pred, scores)
}

// HeuristicThreshold chooses the on-CPU time t for the rule "R yields if it has been on the
// CPU for less than t" that maximises balanced accuracy on the given samples.
func HeuristicThreshold(labels []uint8, onCPUNs []uint64) uint64 {
	scores := heuristicScores(onCPUNs)
	t, _ := BestThreshold(labels, scores)
	// score >= t  <=>  -onCPU >= t  <=>  onCPU <= -t; as an integer strict bound: onCPU < floor(-t)+1.
	if -t < 0 {
		return 0
	}
	return uint64(math.Floor(-t)) + 1
}

// Heuristic scores the rule "R yields if its on-CPU time so far is below thresholdNs".
// Its AUC is that of the on-CPU time as a score (shorter means more likely to yield).
func Heuristic(labels []uint8, onCPUNs []uint64, thresholdNs uint64) Metrics {
	pred := make([]bool, len(labels))
	for i, d := range onCPUNs {
		pred[i] = d < thresholdNs
	}
	return Score(labels, pred, heuristicScores(onCPUNs))
}

func heuristicScores(onCPUNs []uint64) []float64 {
	s := make([]float64, len(onCPUNs))
	for i, d := range onCPUNs {
		s[i] = -float64(d)
	}
	return s
}
