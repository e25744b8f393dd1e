package model

import (
	"testing"

	"github.com/mlsched/mlsched/features"
)

// The embedded model must load with this binary's schema: a schema change that forgets to
// retrain it (make default-model) fails here, not on a user's machine.
func TestDefaultModelLoads(t *testing.T) {
	m, err := Default()
	if err != nil {
		t.Fatal(err)
	}
	if m.Inputs != features.NumInputs || m.Hidden < 1 || m.HorizonNs == 0 {
		t.Fatalf("default model: %d inputs, %d hidden, horizon %d", m.Inputs, m.Hidden, m.HorizonNs)
	}
	p := NewPredictor(m)
	var in [features.NumInputs]uint32
	if v := p.Predict(&in); v < 0 || v > 1 {
		t.Fatalf("prediction %v outside [0,1]", v)
	}
}
