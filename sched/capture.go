package sched

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/cilium/ebpf/ringbuf"
	"github.com/mlsched/mlsched/bpf"
	"github.com/mlsched/mlsched/features"
	"golang.org/x/sys/unix"
)

// A capture session, beside Run: the probes attached, their ring buffer drained into the
// label join, the labelled samples written as a trace, and the summary at the end. `mlsched
// capture` adds the command line, the output file, the command it runs and the progress line.

// CaptureConfig sets up a capture session.
type CaptureConfig struct {
	Probes bpf.CaptureConfig
	Header features.TraceHeader // HorizonNs and the description fields; the rest is filled in
}

// CaptureSession is a running capture. Use it from one goroutine.
type CaptureSession struct {
	Probes *bpf.Capture
	Header features.TraceHeader // as written
	Start  time.Time

	tw           *features.TraceWriter
	bw           *bufio.Writer
	cw           countingWriter
	joiner       *features.Joiner
	decodeErrors uint64
	switchDrops  []uint64 // per CPU, the switch events the probes could not send, last read
	dropsBuf     []uint64
	failed       bool   // a write failed: samples are counted (writeLost), no longer written
	writeLost    uint64 // samples the joiner resolved after a write failed
	rec          ringbuf.Record
	wake         features.WakeEvent
	sw           features.SwitchEvent
}

// CaptureReport is how a capture ended.
type CaptureReport struct {
	Summary    features.TraceSummary
	Bytes      int64  // trace bytes written
	SampledOut uint64 // wakeups left out by --max-rate or --sample-every
}

// capturePoll is how often the ring buffer is drained. The default 16 MiB ring holds ~58,000
// wake samples: 50 ms of polling keeps up with over a million events per second.
const capturePoll = 50 * time.Millisecond

// StartCapture loads and attaches the probes and writes the trace header to out.
func StartCapture(cfg CaptureConfig, out io.Writer) (*CaptureSession, error) {
	probes, err := bpf.LoadCapture(cfg.Probes)
	if err != nil {
		return nil, err
	}
	s := &CaptureSession{Probes: probes, Header: cfg.Header, Start: time.Now()}
	s.Header.SchemaID = features.SchemaID()
	s.Header.StartUnixNs = s.Start.UnixNano()
	s.Header.StartKtimeNs = monotonicNs()
	s.Header.NumCPU = uint32(bpf.PossibleCPUs())
	s.cw.w = out
	s.bw = bufio.NewWriterSize(&s.cw, 256<<10)
	if s.tw, err = features.NewTraceWriter(s.bw, s.Header); err != nil {
		probes.Close()
		return nil, err
	}
	s.joiner = features.NewJoiner(int(s.Header.NumCPU), s.Header.HorizonNs, s.write)
	return s, nil
}

// write is the joiner's sink: the trace, until a write fails; then a count of what is lost.
func (s *CaptureSession) write(smp *features.Sample) error {
	if s.failed {
		s.writeLost++
		return nil
	}
	if err := s.tw.Write(smp); err != nil {
		s.failed = true
		return err
	}
	return nil
}

// Run drains and joins events until a stop reason arrives, and returns it. tick, if not nil,
// is called about once a second (for a progress line).
func (s *CaptureSession) Run(stop <-chan string, tick func()) (string, error) {
	last := time.Now()
	for {
		select {
		case reason := <-stop:
			return reason, nil
		default:
		}
		// The probes never wake the reader (BPF_RB_NO_WAKEUP): read what accumulated each period.
		s.Probes.Events.SetDeadline(time.Now().Add(capturePoll))
		if err := s.drain(); err != nil {
			return "", err
		}
		if tick != nil && time.Since(last) >= time.Second {
			last = time.Now()
			tick()
		}
	}
}

// drain handles records until none is available before the reader's deadline, then tells
// the joiner that everything stamped before now has been seen.
func (s *CaptureSession) drain() error {
	for {
		err := s.Probes.Events.ReadInto(&s.rec)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			now := monotonicNs()
			if err := s.noteSwitchDrops(); err != nil {
				return err
			}
			return s.joiner.Advance(now)
		}
		if errors.Is(err, ringbuf.ErrClosed) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read events: %w", err)
		}
		if err := s.handle(s.rec.RawSample); err != nil {
			return err
		}
	}
}

func (s *CaptureSession) handle(raw []byte) error {
	switch features.EventType(raw) {
	case features.EventWake:
		if features.DecodeWake(raw, &s.wake) != nil {
			s.decodeErrors++
			return nil
		}
		return s.joiner.Wake(&s.wake)
	case features.EventSwitch:
		if features.DecodeSwitch(raw, &s.sw) != nil {
			s.decodeErrors++
			return nil
		}
		return s.joiner.Switch(&s.sw)
	}
	s.decodeErrors++
	return nil
}

// Finish detaches the probes, reads what is left in the ring buffer, resolves the samples that
// can be resolved, writes the trailer and flushes. The caller then commits the output.
func (s *CaptureSession) Finish() (CaptureReport, error) {
	sum, sampledOut, err := s.endJoin()
	if err != nil {
		return CaptureReport{}, err
	}
	if err := s.tw.Close(sum); err != nil {
		s.failed = true
		return CaptureReport{}, err
	}
	if err := s.bw.Flush(); err != nil {
		s.failed = true
		return CaptureReport{}, fmt.Errorf("write trace: %w: %w", features.ErrWrite, err)
	}
	sum.Samples, sum.Positives = s.tw.Samples()
	return CaptureReport{Summary: sum, Bytes: s.cw.n, SampledOut: sampledOut}, nil
}

// Truncater is an output that can be cut back (outfile.File).
type Truncater interface{ Truncate(size int64) error }

// Salvage ends a capture whose trace write failed (features.ErrWrite: a full disk, an I/O
// error) with a valid trace: the probes detach, the rest of the ring is read and joined with
// its samples counted as lost, out is cut back to the last whole block that reached it, and a
// trailer is written there whose write_lost counts every sample after that block. Samples
// reports what the trace holds. An error: the trace could not be ended (the trailer did not
// fit either, or out cannot be cut); the caller then keeps what was written as it is.
func (s *CaptureSession) Salvage(out Truncater) (CaptureReport, error) {
	s.failed = true
	sum, sampledOut, err := s.endJoin()
	if err != nil {
		return CaptureReport{}, err
	}
	off, kept, pos, ok := s.tw.Durable(s.cw.n)
	if !ok {
		return CaptureReport{}, fmt.Errorf("the trace's header did not reach the file")
	}
	handed, _ := s.tw.Samples()
	sum.Samples, sum.Positives = kept, pos
	sum.WriteLost = handed - kept + s.writeLost
	if err := out.Truncate(off); err != nil {
		return CaptureReport{}, fmt.Errorf("cut the trace back to its last whole block: %w", err)
	}
	trailer := features.Trailer(sum)
	if _, err := s.cw.w.Write(trailer); err != nil {
		return CaptureReport{}, fmt.Errorf("end the trace: %w", err)
	}
	return CaptureReport{Summary: sum, Bytes: off + int64(len(trailer)), SampledOut: sampledOut}, nil
}

// noteSwitchDrops tells the joiner which CPUs lost a switch event since the last look, so that
// the samples pending there are counted lost rather than timed out with a wrong label.
func (s *CaptureSession) noteSwitchDrops() error {
	var err error
	if s.dropsBuf, err = s.Probes.CounterPerCPU(bpf.CntSwitchDrop, s.dropsBuf); err != nil {
		return err
	}
	if s.switchDrops == nil {
		s.switchDrops = make([]uint64, len(s.dropsBuf))
	}
	for cpu, v := range s.dropsBuf {
		if cpu < len(s.switchDrops) && v != s.switchDrops[cpu] {
			s.switchDrops[cpu] = v
			s.joiner.SwitchLost(cpu)
		}
	}
	return nil
}

// endJoin detaches the probes, reads what is left in the ring, resolves what can be resolved
// and returns the capture's accounting (without the sample counts, which are the writer's).
func (s *CaptureSession) endJoin() (features.TraceSummary, uint64, error) {
	s.Probes.Detach()
	end := monotonicNs()
	s.Probes.Events.SetDeadline(time.Now().Add(capturePoll))
	for s.Probes.Events.ReadInto(&s.rec) == nil {
		if err := s.handle(s.rec.RawSample); err != nil {
			return features.TraceSummary{}, 0, err
		}
	}
	if err := s.noteSwitchDrops(); err != nil {
		return features.TraceSummary{}, 0, err
	}
	if err := s.joiner.Finish(end); err != nil {
		return features.TraceSummary{}, 0, err
	}
	cnt, err := s.Probes.Counters()
	if err != nil {
		return features.TraceSummary{}, 0, err
	}
	js := s.joiner.Stats
	sum := features.TraceSummary{
		DurationNs:   end - s.Header.StartKtimeNs,
		WakeTotal:    cnt[bpf.CntWakeTotal],
		WakeIdle:     cnt[bpf.CntWakeIdle],
		WakeSkipped:  cnt[bpf.CntWakeSelf] + cnt[bpf.CntWakeOurs] + cnt[bpf.CntWakeFiltered] + cnt[bpf.CntWakeSampledOut],
		RingDrops:    cnt[bpf.CntWakeDrop],
		SwitchDrops:  cnt[bpf.CntSwitchDrop],
		LostSwitch:   js.LostSwitch,
		Unresolved:   js.Unresolved + js.BadCPU,
		FeatTakeover: cnt[bpf.CntFeatTakeover],
		DecodeErrors: s.decodeErrors,
		WakeEmitted:  cnt[bpf.CntWakeEmitted],
	}
	return sum, cnt[bpf.CntWakeSampledOut], nil
}

// Progress is a running capture's figures for a progress line.
type Progress struct {
	Elapsed           time.Duration
	Samples, Positive uint64
	RingDrops         uint64
	Bytes             int64
}

// Progress reads the session's figures so far.
func (s *CaptureSession) Progress() Progress {
	n, pos := s.tw.Samples()
	cnt, _ := s.Probes.Counters()
	return Progress{Elapsed: time.Since(s.Start), Samples: n, Positive: pos,
		RingDrops: cnt[bpf.CntWakeDrop] + cnt[bpf.CntSwitchDrop], Bytes: s.cw.n}
}

// Close detaches and frees the probes.
func (s *CaptureSession) Close() error { return s.Probes.Close() }

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

func monotonicNs() uint64 {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return uint64(ts.Nano())
}
