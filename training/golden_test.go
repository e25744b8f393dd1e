package training

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/mlsched/mlsched/features"
	"github.com/mlsched/mlsched/model"
)

// randomModel returns random weights, normalisation and their model/ export.
func randomModel(rng *rand.Rand, hidden int) (*Params, *model.Model) {
	p := InitParams(hidden, rng)
	for i := range p.B1 {
		p.B1[i] = float32(rng.NormFloat64() * 0.3)
	}
	p.B2 = float32(rng.NormFloat64() * 0.3)
	mean := make([]float32, Inputs)
	std := make([]float32, Inputs)
	for j := range mean {
		mean[j] = float32(rng.Float64() * 2)
		std[j] = float32(0.2 + rng.Float64())
	}
	return p, p.Model(mean, std, 1_000_000, 0.5)
}

func randomCounts(rng *rand.Rand) *[features.NumInputs]uint32 {
	var in [features.NumInputs]uint32
	for j := range in {
		if rng.IntN(4) == 0 {
			in[j] = uint32(rng.IntN(features.MaxCount + 1))
		}
	}
	return &in
}

// TestGoldenForward checks that model/'s forward pass (Normalize then Forward) equals gorgonia's
// on the same weights within 1e-5, and that the Predictor the scheduler runs stays close too.
func TestGoldenForward(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	for _, hidden := range []int{16, 5} {
		p, m := randomModel(rng, hidden)
		if err := m.Validate(); err != nil {
			t.Fatal(err)
		}
		const n = 500
		counts := make([]*[features.NumInputs]uint32, n)
		x64 := make([][]float64, n)
		x32 := make([]float32, 0, n*Inputs)
		for i := range counts {
			counts[i] = randomCounts(rng)
			x64[i] = make([]float64, Inputs)
			m.Normalize(counts[i], x64[i])
			for _, v := range x64[i] {
				x32 = append(x32, float32(v))
			}
		}
		g, err := Probabilities(p, x32)
		if err != nil {
			t.Fatal(err)
		}
		pred := model.NewPredictor(m)
		var worst, worstPred float64
		var pos int
		for i := range counts {
			want := m.Forward(x64[i])
			worst = max(worst, math.Abs(g[i]-want))
			worstPred = max(worstPred, math.Abs(float64(pred.Predict(counts[i]))-want))
			if want >= 0.5 {
				pos++
			}
		}
		t.Logf("hidden %d: max |gorgonia - Forward| = %.2g, max |Predictor - Forward| = %.2g, %d/%d >= 0.5",
			hidden, worst, worstPred, pos, n)
		if worst > 1e-5 {
			t.Errorf("hidden %d: gorgonia and model.Forward differ by %g, want <= 1e-5", hidden, worst)
		}
		if worstPred > 1e-3 {
			t.Errorf("hidden %d: model.Predictor and model.Forward differ by %g", hidden, worstPred)
		}
		if pos == 0 || pos == n {
			t.Errorf("all outputs on one side of 0.5: a weak test")
		}
	}
}
