package sched

import (
	"fmt"
	"math"
	"strings"
	"sync/atomic"
	"time"

	"github.com/mlsched/mlsched/bpf"
)

// Stats are the dispatch loop's counters. Written by the loop with atomics, read by --stats and
// the metrics collector at any time.
type Stats struct {
	Policy         string // set before the run starts: the policy and its base queue
	Queue          string
	BPFStats       bool          // --bpf-stats: the kernel keeps the programs' run-time statistics
	Events         atomic.Uint64 // wake events read
	Outcomes       atomic.Uint64 // outcome events read
	Informational  atomic.Uint64 // wake events scored but not answered (guard tripped: base queue in BPF)
	Keep           atomic.Uint64 // decisions sent, by action
	Migrate        atomic.Uint64
	FIFO           atomic.Uint64
	RingFull       atomic.Uint64 // decisions lost: the user ring buffer was full
	DecodeErrors   atomic.Uint64
	Flushes        atomic.Uint64 // runs of the BPF apply program after a batch
	FlushErrors    atomic.Uint64
	Unmatched      atomic.Uint64 // outcomes whose prediction was no longer remembered
	Misattributed  atomic.Uint64 // outcomes from another CPU or task than their sample's (never scored)
	KernelVerdicts atomic.Uint64 // wake events carrying BPF's own verdict (scored as BPF decided)
	Positives      atomic.Uint64 // scored outcomes with label 1
	Negatives      atomic.Uint64 // scored outcomes with label 0
	Correct        atomic.Uint64 // scored outcomes the model predicted right
	GuardTrips     atomic.Uint64 // switches to the base queue by the model guard
	GuardActive    atomic.Bool   // the guard holds the policy at the base queue now
	liveAccBits    atomic.Uint64 // float64 bits: the guard's window accuracy

	// Exploration and online adaptation (adapt.go). Explore and Adapt are set before the run.
	Explore         bool          // --explore > 0: BPF takes some decisions at random
	Adapt           bool          // --adapt: an Adapter learns from the outcomes
	ExploreOutcomes atomic.Uint64 // scored outcomes of explored decisions (MLS_WAKE_EXPLORE)
	Promotions      atomic.Uint64 // candidates promoted into BPF
	Learned         atomic.Uint64 // outcomes the adapter learned from
	AdaptTaken      atomic.Uint64 // outcomes handed to the adapter
	AdaptSkipped    atomic.Uint64 // usable samples the admission budget left out
	AdaptDropped    atomic.Uint64 // outcomes lost to a full adapter ring
	AdaptShed       atomic.Uint64 // outcomes dropped unread by the adapter's CPU governor
	AdaptSlices     atomic.Uint64 // slices closed
	AdaptRefused    atomic.Uint64 // candidates without a kernel form
	AdaptErrors     atomic.Uint64 // failed promotions and model writes
	AdaptCPUNs      atomic.Uint64 // the adapter goroutine's thread CPU time
	candAccBits     atomic.Uint64 // float64 bits: the candidate's accuracy on the last slice
	sliceActAccBits atomic.Uint64 // float64 bits: the active net's accuracy on the same outcomes
	sliceMajBits    atomic.Uint64 // float64 bits: the majority class's on the same outcomes
	liveMajBits     atomic.Uint64 // float64 bits: the majority rate of the guard's window
	Inference       Histogram     // sampled Predict durations, ns
	EventAge        Histogram     // sampled time from enqueue in BPF to the loop reading the event, ns
}

// LiveAccuracy is the model's accuracy over the guard's window (NaN before the first outcome).
func (s *Stats) LiveAccuracy() float64 { return loadFloat(&s.liveAccBits) }

// setLiveAccuracy stores v so that 0 (a model wrong on every outcome) reads as 0, not as NaN.
func (s *Stats) setLiveAccuracy(v float64) { s.liveAccBits.Store(math.Float64bits(v) ^ nanBits) }

// CandidateAccuracy is the adapter's candidate's accuracy on the last slice it was scored on,
// and SliceActiveAccuracy the active net's on the same outcomes (NaN before the first).
func (s *Stats) CandidateAccuracy() float64   { return loadFloat(&s.candAccBits) }
func (s *Stats) SliceActiveAccuracy() float64 { return loadFloat(&s.sliceActAccBits) }

// SliceMajority is the majority class's accuracy on the last slice the candidate was scored
// on; LiveMajority the majority rate of the guard's window (what LiveAccuracy is compared
// with). NaN before the first.
func (s *Stats) SliceMajority() float64 { return loadFloat(&s.sliceMajBits) }
func (s *Stats) LiveMajority() float64  { return loadFloat(&s.liveMajBits) }

func (s *Stats) setSliceMajority(v float64) { s.sliceMajBits.Store(math.Float64bits(v) ^ nanBits) }
func (s *Stats) setLiveMajority(v float64)  { s.liveMajBits.Store(math.Float64bits(v) ^ nanBits) }

func (s *Stats) setCandidateAccuracy(v float64) { s.candAccBits.Store(math.Float64bits(v) ^ nanBits) }
func (s *Stats) setSliceActiveAccuracy(v float64) {
	s.sliceActAccBits.Store(math.Float64bits(v) ^ nanBits)
}

// nanBits makes the zero value of a stored float read as NaN (nothing measured yet).
var nanBits = math.Float64bits(math.NaN())

func loadFloat(b *atomic.Uint64) float64 { return math.Float64frombits(b.Load() ^ nanBits) }

// Histogram is a fixed-bucket histogram of nanosecond durations, cheap enough for the hot path
// (one atomic add per bucket and per sum); the metrics collector exports it.
type Histogram struct {
	counts [len(histBounds) + 1]atomic.Uint64
	sum    atomic.Uint64
}

// histBounds are the bucket upper bounds in ns
// (inference is ~10-100 ns natively, event ages are µs to ms).
var histBounds = [...]uint64{10, 20, 40, 80, 160, 320, 640, 1280, 2560, 5120, 10240, 102400, 1e6, 1e7, 1e8}

// Observe adds one duration in ns.
func (h *Histogram) Observe(ns uint64) {
	i := 0
	for i < len(histBounds) && ns > histBounds[i] {
		i++
	}
	h.counts[i].Add(1)
	h.sum.Add(ns)
}

// Snapshot returns the cumulative counts per bound (seconds), the total count and the sum
// (seconds), in the shape Prometheus wants.
func (h *Histogram) Snapshot() (buckets map[float64]uint64, count uint64, sumSec float64) {
	buckets = make(map[float64]uint64, len(histBounds))
	for i, b := range histBounds {
		count += h.counts[i].Load()
		buckets[float64(b)/1e9] = count
	}
	count += h.counts[len(histBounds)].Load()
	return buckets, count, float64(h.sum.Load()) / 1e9
}

// Mean returns the mean observation in ns (0 with none).
func (h *Histogram) Mean() float64 {
	_, n, s := h.Snapshot()
	if n == 0 {
		return 0
	}
	return s * 1e9 / float64(n)
}

// statsLine formats one --stats line from deltas over d.
func statsLine(d time.Duration, cur, prev *bpf.SchedCounters, s *Stats, prevEvents uint64, qdepth int) string {
	delta := func(c bpf.SchedCounter) uint64 { return cur[c] - prev[c] }
	var b strings.Builder
	sec := d.Seconds()
	fmt.Fprintf(&b, "enq/s=%.0f ev/s=%.0f", float64(delta(bpf.SCEnqueue))/sec, float64(s.Events.Load()-prevEvents)/sec)
	fmt.Fprintf(&b, " dec keep=%d migrate=%d fifo=%d", cur[bpf.SCKeep], cur[bpf.SCMigrate], cur[bpf.SCFIFO])
	// Decided in BPF, at select_cpu or at enqueue (the scored ones).
	fmt.Fprintf(&b, " kernel keep=%d migrate=%d noidle=%d stolen=%d cached=%d", cur[bpf.SCKernelKeep]+cur[bpf.SCSelectKeep],
		cur[bpf.SCKernelMigrate]+cur[bpf.SCSelectMigrate], cur[bpf.SCKernelNoIdle]+cur[bpf.SCSelectNoIdle], cur[bpf.SCKeepStolen], cur[bpf.SCKernelCached])
	fmt.Fprintf(&b, " direct sel=%d ours=%d kthr=%d", cur[bpf.SCSelectDirect], cur[bpf.SCOurs], cur[bpf.SCKthread])
	fmt.Fprintf(&b, " base(%s) policy=%d", s.Queue, cur[bpf.SCFIFOPolicy]+cur[bpf.SCVtimePolicy])
	fmt.Fprintf(&b, " fb guard=%d ring=%d timeout=%d noidle=%d badcpu=%d stale=%d gone=%d reenq=%d norun=%d urbfull=%d",
		cur[bpf.SCGuardFIFO], cur[bpf.SCRingFull], cur[bpf.SCTimeout], cur[bpf.SCNoIdle], cur[bpf.SCBadCPU], cur[bpf.SCDecStale],
		cur[bpf.SCDecGone], cur[bpf.SCReenq], cur[bpf.SCNoRunning], s.RingFull.Load())
	fmt.Fprintf(&b, " q=%d", qdepth)
	if n := delta(bpf.SCKeep) + delta(bpf.SCMigrate) + delta(bpf.SCFIFO) + delta(bpf.SCNoIdle) + delta(bpf.SCBadCPU); n > 0 {
		fmt.Fprintf(&b, " rtt=%.0fus", float64(delta(bpf.SCRTTNs))/float64(n)/1e3)
	}
	acc := s.LiveAccuracy()
	if math.IsNaN(acc) {
		b.WriteString(" acc=-")
	} else {
		fmt.Fprintf(&b, " acc=%.3f", acc)
	}
	if s.GuardActive.Load() {
		b.WriteString("(guard:" + s.Queue + ")")
	}
	fmt.Fprintf(&b, " age=%.0fus inf=%.0fns drops=%d", s.EventAge.Mean()/1e3, s.Inference.Mean(), cur[bpf.SCRingFull]+cur[bpf.SCOutcomeDrop]+s.RingFull.Load())
	if n := delta(bpf.SCBusyPrev); n > 0 {
		fmt.Fprintf(&b, " decided=%.1f%%", 100*DecidedFraction(func(c bpf.SchedCounter) float64 { return float64(delta(c)) }))
	}
	return b.String()
}

// DecidedFraction is the share of the wakeups whose previous CPU was busy that BPF's placement
// (the net, or a fixed rule) decided and applied: not the guard, a fallback, --shadow, or W's
// affinity overriding the verdict. c reads a counter (a total or a delta); 0 with no such wakeup.
func DecidedFraction(c func(bpf.SchedCounter) float64) float64 {
	busy := c(bpf.SCBusyPrev)
	if busy == 0 {
		return 0
	}
	return (c(bpf.SCKernelKeep) + c(bpf.SCKernelMigrate) + c(bpf.SCKernelNoIdle) - c(bpf.SCKernelForced) +
		c(bpf.SCSelectKeep) + c(bpf.SCSelectMigrate) + c(bpf.SCSelectNoIdle)) / busy
}

// ExplorationRatio is the share of the placement's decisions that BPF took at random
// (--explore): explore over the keep, migrate and no-idle decisions of enqueue and select_cpu
// (an abstention is never explored). c reads a counter (a total or a delta); 0 with none.
func ExplorationRatio(c func(bpf.SchedCounter) float64) float64 {
	decided := c(bpf.SCKernelKeep) + c(bpf.SCKernelMigrate) + c(bpf.SCKernelNoIdle) +
		c(bpf.SCSelectKeep) + c(bpf.SCSelectMigrate) + c(bpf.SCSelectNoIdle)
	if decided == 0 {
		return 0
	}
	return c(bpf.SCExplore) / decided
}

// adaptLine formats the --stats line's exploration and adaptation section over an interval d
// (nothing when both are off): the exploration rate over the interval, the exploration
// outcomes scored, the majority rate of the guard's window (maj=, what acc= is compared with),
// and with --adapt the promotions, outcomes learned, outcomes lost (shed by the CPU governor or
// to a full ring), slices closed, the last slice's
// candidate, active and majority accuracies (on the same outcomes) and the adapter's CPU time
// as a share of one core.
func adaptLine(d time.Duration, cur, prev *bpf.SchedCounters, s *Stats, adaptCPU time.Duration) string {
	if !s.Explore && !s.Adapt {
		return ""
	}
	var b strings.Builder
	fmt.Fprintf(&b, " adapt explore=%.2f%% xout=%d maj=%s", 100*ExplorationRatio(func(c bpf.SchedCounter) float64 { return float64(cur[c] - prev[c]) }),
		s.ExploreOutcomes.Load(), fmtAcc(s.LiveMajority()))
	if s.Adapt {
		fmt.Fprintf(&b, " promotions=%d learned=%d shed=%d slices=%d cand=%s act=%s smaj=%s acpu=%.2f%%", s.Promotions.Load(), s.Learned.Load(),
			s.AdaptShed.Load()+s.AdaptDropped.Load(), s.AdaptSlices.Load(), fmtAcc(s.CandidateAccuracy()), fmtAcc(s.SliceActiveAccuracy()),
			fmtAcc(s.SliceMajority()), 100*adaptCPU.Seconds()/d.Seconds())
	}
	return b.String()
}

func fmtAcc(v float64) string {
	if math.IsNaN(v) {
		return "-"
	}
	return fmt.Sprintf("%.3f", v)
}

// progShort names the scheduler's programs in the --stats line's bpf= field.
var progShort = map[string]string{
	"mls_select_cpu": "sel", "mls_enqueue": "enq", "mls_dispatch": "disp", "mls_running": "run",
	"mls_stopping": "stop", "mls_sched_sys_enter": "sys",
}

// runtimeLine formats the --stats line's cost fields over an interval d: the process's CPU
// time as a share of one core, and with --bpf-stats each hook's mean run time per call and the
// net's share of the scheduler's BPF run time.
func runtimeLine(d time.Duration, cpu time.Duration, cur, prev map[string]bpf.ProgStat, netNs uint64) string {
	var b strings.Builder
	fmt.Fprintf(&b, " cpu=%.2f%%", 100*cpu.Seconds()/d.Seconds())
	if cur == nil {
		return b.String()
	}
	var total time.Duration
	b.WriteString(" bpf")
	for _, name := range []string{"mls_select_cpu", "mls_enqueue", "mls_dispatch", "mls_running", "mls_stopping", "mls_sched_sys_enter"} {
		c, p := cur[name], prev[name]
		if runs := c.Runs - p.Runs; runs > 0 {
			fmt.Fprintf(&b, " %s=%.0fns", progShort[name], float64(c.Runtime-p.Runtime)/float64(runs))
		}
	}
	for name, c := range cur {
		total += c.Runtime - prev[name].Runtime
	}
	if total > 0 {
		fmt.Fprintf(&b, " net=%.1f%%", 100*float64(netNs)/float64(total))
	}
	return b.String()
}
