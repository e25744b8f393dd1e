package main

import "github.com/mlsched/mlsched/model"

// defaultModel returns the model embedded in the binary, or nil when the build has none.
func defaultModel() *model.Model {
	return nil
}
