// Package sched runs mlsched's sched_ext scheduler: it loads and attaches the BPF side
// (bpf.LoadSched), reads wake events with no allocation per event, asks the model whether the
// task running on the waking task's previous CPU will leave it soon, writes decisions to the
// user ring buffer, watches live accuracy from the outcome stream (the model guard), and
// reports counters as a --stats line and Prometheus metrics.
//
// It may import bpf, features and model; never training (gorgonia stays out of the daemon).
package sched
