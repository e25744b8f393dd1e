package model

import (
	_ "embed"
	"fmt"
)

// defaultModel is the model `mlsched run` uses without --model: trained on this project's
// machine from a documented workload mix (`make default-model`, docs/TRAINING.md).
//
//go:embed default.bin
var defaultModel []byte

// Default returns the model embedded in the binary, validated like any model file.
func Default() (*Model, error) {
	m, err := Unmarshal(defaultModel)
	if err != nil {
		return nil, fmt.Errorf("embedded default model: %w", err)
	}
	return m, nil
}
