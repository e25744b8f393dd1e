package training

import (
	"math"
	"math/rand/v2"
	"testing"
)

// Near the threshold the labels are coins, far from it the model is right: the margin chosen
// abstains on (most of) the coins, keeps coverage at least the minimum, and the confident
// accuracy beats both the overall accuracy and the majority over the same samples. Where the
// model is right everywhere no margin gains, and none is chosen.
func TestChooseMargin(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	const n = 20000
	labels, pred, logits := make([]uint8, n), make([]bool, n), make([]float64, n)
	for i := range n {
		logits[i] = rng.NormFloat64() * 2
		pred[i] = logits[i] >= 0
		y := pred[i]
		if math.Abs(logits[i]) < 1 { // a coin near the threshold
			y = rng.IntN(2) == 0
		}
		if y {
			labels[i] = 1
		}
	}
	all := ScoreConfident(labels, pred, logits, 0, 0)
	c := ChooseMargin(labels, pred, logits, 0, 0.5)
	t.Logf("overall %.3f; margin %.3f: coverage %.3f, confident %.3f vs baseline %.3f", all.Accuracy, c.Margin, c.Coverage, c.Accuracy, c.BaselineAccuracy)
	if c.Margin < 0.7 || c.Margin > 1.1 || c.Coverage < 0.5 {
		t.Fatalf("margin %v coverage %v: want about 1 (the coins' band), coverage >= 0.5", c.Margin, c.Coverage)
	}
	if !(c.Accuracy > all.Accuracy+0.05) || !(c.Accuracy > c.BaselineAccuracy) {
		t.Fatalf("confident %v, overall %v, baseline %v", c.Accuracy, all.Accuracy, c.BaselineAccuracy)
	}
	// The minimum coverage binds: at 0.8 the band must be narrower.
	if c8 := ChooseMargin(labels, pred, logits, 0, 0.8); c8.Coverage < 0.8 || c8.Margin >= c.Margin {
		t.Fatalf("min coverage 0.8: margin %v coverage %v", c8.Margin, c8.Coverage)
	}
	if c1 := ChooseMargin(labels, pred, logits, 0, 1); c1.Margin != 0 || c1.Coverage != 1 {
		t.Fatalf("min coverage 1: margin %v coverage %v", c1.Margin, c1.Coverage)
	}
	for i := range n { // right everywhere
		labels[i] = 0
		if pred[i] {
			labels[i] = 1
		}
	}
	if c0 := ChooseMargin(labels, pred, logits, 0, 0.5); c0.Margin != 0 || c0.Accuracy != 1 {
		t.Fatalf("a model right everywhere got margin %v (accuracy %v)", c0.Margin, c0.Accuracy)
	}
}
