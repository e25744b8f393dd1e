// Package training owns offline learning for mlsched: loading traces into a time-split data
// set, training the 64 -> hidden (ReLU) -> 1 (sigmoid) net with gorgonia, the evaluation
// metrics and baselines, and the export to the model/ file format.
//
// It is the only package that imports gorgonia. model/ and sched/ must never import this
// package: the daemon runs the exported model with model/'s own inference code.
package training
