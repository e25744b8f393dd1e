package training

import (
	"math"
	"slices"
)

// Confident scores a model with an abstention margin: the samples it decides (its logit at
// least the margin away from the threshold's), their accuracy, and the majority class's
// accuracy over the same samples (the majority of their own labels). A margin that buys
// accuracy by deciding almost nothing is no model: Coverage says how much it decides.
type Confident struct {
	Margin           float64 `json:"abstain_margin"` // logit units
	N, Decided       int     `json:"-"`
	Coverage         float64 `json:"coverage"`
	Accuracy         float64 `json:"confident_accuracy"`
	BaselineAccuracy float64 `json:"confident_baseline_accuracy"`
}

// ScoreConfident scores decisions pred (with logits and the threshold's logit) under margin.
func ScoreConfident(labels []uint8, pred []bool, logits []float64, thrLogit, margin float64) Confident {
	c := Confident{Margin: margin, N: len(labels)}
	correct, pos := 0, 0
	for i, y := range labels {
		if math.Abs(logits[i]-thrLogit) < margin {
			continue
		}
		c.Decided++
		if pred[i] == (y == 1) {
			correct++
		}
		pos += int(y)
	}
	c.fill(correct, pos)
	return c
}

func (c *Confident) fill(correct, pos int) {
	if c.N == 0 || c.Decided == 0 {
		c.Coverage, c.Accuracy, c.BaselineAccuracy = 0, math.NaN(), math.NaN()
		return
	}
	c.Coverage = float64(c.Decided) / float64(c.N)
	c.Accuracy = float64(correct) / float64(c.Decided)
	c.BaselineAccuracy = float64(max(pos, c.Decided-pos)) / float64(c.Decided)
}

// DefaultMinCoverage is the least coverage ChooseMargin accepts on the data it chooses on:
// above the 0.5 a model must keep on programs it has not seen, with room for those to differ.
const DefaultMinCoverage = 0.7

// ChooseMargin picks the abstention margin on validation data: among the margins that leave
// at least minCoverage of the samples decided, the one that maximises how many more decided
// samples the model gets right than the majority class of those samples would,
// (confident accuracy - confident baseline) * coverage; the smallest on a tie, 0 when no
// margin gains (or minCoverage >= 1). A sample inside the band is one the model is less sure
// of than the majority answer is right, so abstaining on it costs nothing.
func ChooseMargin(labels []uint8, pred []bool, logits []float64, thrLogit, minCoverage float64) Confident {
	n := len(labels)
	best := ScoreConfident(labels, pred, logits, thrLogit, 0)
	if n == 0 || minCoverage >= 1 {
		return best
	}
	order := make([]int, n)
	for i := range order {
		order[i] = i
	}
	dist := func(i int) float64 { return math.Abs(logits[i] - thrLogit) }
	// Most confident first: a margin decides a prefix.
	slices.SortFunc(order, func(a, b int) int { return -cmpFloat(dist(a), dist(b)) })
	gain := func(k, correct, pos int) float64 { return float64(correct-max(pos, k-pos)) / float64(n) }
	// Margin 0's gain, from the whole set.
	correct, pos := 0, 0
	for _, i := range order {
		if pred[i] == (labels[i] == 1) {
			correct++
		}
		pos += int(labels[i])
	}
	bestGain, bestK := gain(n, correct, pos), n
	correct, pos = 0, 0
	minK := int(math.Ceil(minCoverage * float64(n)))
	for k, i := range order {
		if pred[i] == (labels[i] == 1) {
			correct++
		}
		pos += int(labels[i])
		// The prefix of k+1 samples is a margin only where the next one is strictly closer.
		if k+1 < minK || k+1 < n && dist(order[k+1]) == dist(i) {
			continue
		}
		if g := gain(k+1, correct, pos); g > bestGain {
			bestGain, bestK = g, k+1
		}
	}
	if bestK == n {
		return best
	}
	// Abstain iff dist < margin: the margin is the last decided sample's distance.
	return ScoreConfident(labels, pred, logits, thrLogit, dist(order[bestK-1]))
}

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
