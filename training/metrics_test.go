package training

import (
	"math"
	"testing"
)

func near(a, b float64) bool { return math.Abs(a-b) < 1e-12 || (math.IsNaN(a) && math.IsNaN(b)) }

// TestScoreByHand checks every metric against values computed by hand on a tiny fixture.
func TestScoreByHand(t *testing.T) {
	labels := []uint8{1, 1, 1, 0, 0, 0, 0, 0}
	scores := []float64{0.9, 0.6, 0.3, 0.6, 0.2, 0.1, 0.3, 0.05}
	pred := threshold(scores, 0.5) // predicted positive: 0.9, 0.6 (pos), 0.6 (neg)
	m := Score(labels, pred, scores)
	// TP=2 FN=1 FP=1 TN=4.
	if m.TP != 2 || m.FN != 1 || m.FP != 1 || m.TN != 4 || m.N != 8 || m.Positives != 3 {
		t.Fatalf("confusion %+v", m)
	}
	// AUC by pairs: 15 (pos, neg) pairs. 0.9 beats all 5. 0.6 beats 4, ties 1 (0.6): 4.5.
	// 0.3 beats 0.2, 0.1, 0.05 (3), ties 0.3 (0.5): 3.5. Total 13/15.
	want := map[string][2]float64{
		"accuracy":          {m.Accuracy, 6.0 / 8},
		"balanced_accuracy": {m.BalancedAccuracy, (2.0/3 + 4.0/5) / 2},
		"precision":         {m.Precision, 2.0 / 3},
		"recall":            {m.Recall, 2.0 / 3},
		"auc":               {m.AUC, 13.0 / 15},
	}
	for name, v := range want {
		if !near(v[0], v[1]) {
			t.Errorf("%s = %v, want %v", name, v[0], v[1])
		}
	}

	// All scores tied: AUC one half.
	if a := AUC(labels, make([]float64, len(labels))); !near(a, 0.5) {
		t.Errorf("all-ties AUC %v, want 0.5", a)
	}
	// One class only: undefined.
	if a := AUC([]uint8{1, 1}, []float64{1, 2}); !math.IsNaN(a) {
		t.Errorf("single-class AUC %v, want NaN", a)
	}

	maj := Majority(labels)
	if !near(maj.Accuracy, 5.0/8) || !near(maj.BalancedAccuracy, 0.5) || maj.TP != 0 || !near(maj.AUC, 0.5) {
		t.Errorf("majority %+v", maj)
	}
	if m := Score([]uint8{0, 0}, []bool{false, false}, nil); !near(m.BalancedAccuracy, 1) || m.Precision != 0 || !math.IsNaN(m.AUC) {
		t.Errorf("single class, all right: %+v", m)
	}
}

func TestBestThreshold(t *testing.T) {
	labels := []uint8{1, 1, 1, 0, 0, 0, 0, 0}
	scores := []float64{0.9, 0.6, 0.3, 0.6, 0.2, 0.1, 0.3, 0.05}
	// Candidates (predict >= t): above 0.9 -> 0.5; 0.9 -> (1/3+1)/2=0.667; 0.6 -> (2/3+4/5)/2=0.733;
	// 0.3 -> (1+3/5)/2=0.8; 0.2 -> (1+2/5)/2=0.7 ... best is t between 0.3 and 0.2.
	tr, bal := BestThreshold(labels, scores)
	if !near(tr, 0.25) || !near(bal, 0.8) {
		t.Errorf("threshold %v balanced %v, want 0.25 and 0.8", tr, bal)
	}
	// Separable: the threshold splits the classes exactly.
	tr, bal = BestThreshold([]uint8{0, 1, 0, 1}, []float64{0.1, 0.8, 0.3, 0.7})
	if !near(tr, 0.5) || !near(bal, 1) {
		t.Errorf("separable: threshold %v balanced %v", tr, bal)
	}
}

func TestHeuristic(t *testing.T) {
	// Short on-CPU times yield, mostly.
	labels := []uint8{1, 1, 0, 1, 0, 1, 0}
	onCPU := []uint64{100, 200, 250, 300, 900, 950, 1000}
	tNs := HeuristicThreshold(labels, onCPU)
	// Balanced accuracy of "yields iff onCPU <= x": x=100 .625, x=200 .75, x=250 .583,
	// x=300 .708, x=900 .542, x=950 .667: the best bound lies in (200, 250]; ours is 226.
	if tNs != 226 {
		t.Errorf("heuristic bound %d, want 226", tNs)
	}
	m := Heuristic(labels, onCPU, tNs)
	if m.TP != 2 || m.FP != 0 || m.TN != 3 || m.FN != 2 || !near(m.Accuracy, 5.0/7) {
		t.Errorf("heuristic %+v", m)
	}
	// Its AUC is that of -onCPU: positives {100,200,300,950} beat 3+3+2+1 of the 12 pairs.
	if !near(m.AUC, 9.0/12) {
		t.Errorf("heuristic AUC %v, want 0.75", m.AUC)
	}
}

func TestBestAccuracyThreshold(t *testing.T) {
	labels := []uint8{1, 1, 1, 0, 0, 0, 0, 0}
	scores := []float64{0.9, 0.6, 0.3, 0.6, 0.2, 0.1, 0.3, 0.05}
	// Accuracy of (predict >= t): none 5/8; >=0.9 6/8; >=0.6 6/8; >=0.3 6/8; >=0.2 5/8 ...
	// The first best (highest threshold) wins: between 0.9 and 0.6.
	tr, acc := BestAccuracyThreshold(labels, scores)
	if !near(tr, 0.75) || !near(acc, 0.75) {
		t.Errorf("threshold %v accuracy %v, want 0.75 and 0.75", tr, acc)
	}
}
