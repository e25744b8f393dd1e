package sched

import (
	"errors"
	"os"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf/ringbuf"
	"github.com/mlsched/mlsched/bpf"
	"github.com/mlsched/mlsched/features"
)

// DecisionWriter is where decisions go: the user ring buffer in production.
type DecisionWriter interface {
	Reserve(n int) (bpf.Sample, error)
	Submit(s bpf.Sample)
}

// loop reads events until the reader is closed. It runs on a locked OS thread; per event it
// copies the record into a reused buffer, decides and writes: no allocation. When the event
// ring is empty and decisions were written, flush (if set) has BPF apply them at once.
// It returns when the reader is closed, or flushed (Reader.Flush) once stop is set.
// With poll > 0 (--infer kernel: BPF submits without waking the reader) it reads what
// accumulated every poll instead of being woken per event.
func loop(rd *ringbuf.Reader, d *Decider, w DecisionWriter, flush func() error, stop *atomic.Bool, poll time.Duration) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var rec ringbuf.Record
	rec.RawSample = make([]byte, 0, 512)
	unflushed := 0
	if poll > 0 {
		// Nothing wakes the reader (BPF submits with BPF_RB_NO_WAKEUP): without a deadline it
		// would wait for ever, with records already in the ring. Drain what is there now, then
		// once per poll: each drain reads until the ring is empty and ends with the deadline.
		rd.SetDeadline(time.Now())
	}
	for {
		if err := rd.ReadInto(&rec); err != nil {
			if errors.Is(err, ringbuf.ErrClosed) {
				return nil
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				d.kickAdapter() // the batch is read: the adapter may learn from it
				if stop.Load() {
					return nil
				}
				if poll > 0 {
					rd.SetDeadline(time.Now().Add(poll))
				}
				continue
			}
			if errors.Is(err, ringbuf.ErrFlushed) {
				if stop.Load() {
					return nil
				}
				continue
			}
			return err
		}
		if handle(rec.RawSample, d, w) {
			unflushed++
		}
		if unflushed > 0 && flush != nil && (rd.AvailableBytes() == 0 || unflushed >= flushMax) {
			if flush() != nil {
				d.Stats.FlushErrors.Add(1)
			}
			d.Stats.Flushes.Add(1)
			unflushed = 0
		}
	}
}

// flushMax bounds the decisions written between two flushes under a steady stream.
const flushMax = 64

// handle processes one raw event; it reports whether it wrote a decision.
func handle(raw []byte, d *Decider, w DecisionWriter) bool {
	if len(raw) == 0 {
		d.Stats.DecodeErrors.Add(1)
		return false
	}
	switch raw[0] {
	case features.EventSchedWake:
		var dec Decision
		if d.Wake(raw, &dec) != nil {
			return false
		}
		if d.wake.Flags&features.WakeNoDecision != 0 { // BPF already queued W (guard tripped)
			d.Stats.Informational.Add(1)
			return false
		}
		s, err := w.Reserve(features.DecisionSize)
		if err != nil {
			d.Stats.RingFull.Add(1)
			return false
		}
		features.EncodeDecision(s.Data, &dec)
		w.Submit(s)
		return true
	case features.EventSchedOutcome:
		_ = d.Outcome(raw)
	default:
		d.Stats.DecodeErrors.Add(1)
	}
	return false
}
