// Package model owns mlsched's model file format (model.bin) and the allocation-free
// inference the dispatch loop runs on every wakeup: a 64 -> Hidden (ReLU) -> 1 (sigmoid) net
// that predicts, from a running task's decayed syscall counts, whether it yields its CPU soon.
//
// It is standard library only (plus the features schema): the daemon links it, so it must
// never import gorgonia or any training code. training/ writes this format; sched/ reads it.
//
// The byte layout, the validation rules and the inference arithmetic are documented in
// docs/MODEL_FORMAT.md.
package model
