package sched

import (
	"errors"
	"runtime"

	"github.com/cilium/ebpf/ringbuf"
	"github.com/mlsched/mlsched/bpf"
)

// DecisionWriter is where decisions go: the user ring buffer in production.
type DecisionWriter interface {
	Reserve(n int) (bpf.Sample, error)
	Submit(s bpf.Sample)
}

// loop reads events until the reader is closed. It runs on a locked OS thread; per event it
// copies the record into a reused buffer, decides and writes: no allocation.
func loop(rd *ringbuf.Reader, d *Decider, w DecisionWriter) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var rec ringbuf.Record
	rec.RawSample = make([]byte, 0, 512)
	for {
		if err := rd.ReadInto(&rec); err != nil {
			if errors.Is(err, ringbuf.ErrClosed) {
				return nil
			}
			return err
		}
		handle(rec.RawSample, d, w)
	}
}

// handle processes one raw event.
func handle(raw []byte, d *Decider, w DecisionWriter) {
	if len(raw) == 0 {
		d.Stats.DecodeErrors.Add(1)
		return
	}
	switch raw[0] {
	case bpf.EventSchedWake:
		var dec Decision
		if d.Wake(raw, &dec) != nil {
			return
		}
		s, err := w.Reserve(bpf.DecisionSize)
		if err != nil {
			d.Stats.RingFull.Add(1)
			return
		}
		EncodeDecision(s.Data, &dec)
		w.Submit(s)
	case bpf.EventSchedOutcome:
		_ = d.Outcome(raw)
	default:
		d.Stats.DecodeErrors.Add(1)
	}
}
