package bpf

import (
	"errors"
	"fmt"
	"os"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/cilium/ebpf/rlimit"
)

// CaptureConfig sets up the capture probes before they are loaded.
type CaptureConfig struct {
	// SelfTgid is mlsched's own process: samples that involve it are skipped.
	SelfTgid uint32
	// FilterTree limits features and samples to the processes added with AddTreeTgid and
	// their descendants.
	FilterTree bool
	// RingBytes is the event ring buffer's size: a power of two, at least one page.
	RingBytes uint32
	// MaxTasks is the number of feature slots, a power of two; 0 sizes them from pid_max.
	MaxTasks uint32
	// SampleEvery keeps one wakeup in this many (chosen at random); 0 or 1 keeps all.
	SampleEvery uint32
	// MaxRate caps the samples per second and CPU (wakeups over the cap are sampled at
	// random, uniformly within each clock tick); 0: no cap. mlsched capture's default is
	// DefaultMaxRate.
	MaxRate uint32
	// LogVerifier prints the verifier log of a program that fails to load in full.
	LogVerifier bool
	// switchProbeRead attaches the switch hook of kernels before 5.18 (prev_state by probe
	// read) even where the tracepoint passes prev_state: tests cover both this way.
	switchProbeRead bool
}

// DefaultMaxRate is mlsched capture's default cap on samples per second and CPU: 20,000 keeps
// every wakeup of ordinary workloads and bounds the probes' cost (~0.3 us per sample) on
// wakeup-heavy ones.
const DefaultMaxRate = 20000

// MaxRateLimit is the largest MaxRate: the probes' per-tick arithmetic stays in 64 bits below it.
const MaxRateLimit = 1 << 30

// Counter indexes the probes' per-CPU counters (enum mls_counter in capture.h).
type Counter int

const (
	CntWakeTotal Counter = iota
	CntWakeIdle
	CntWakeSelf
	CntWakeOurs
	CntWakeFiltered
	CntWakeEmitted
	CntWakeDrop
	CntSwitchEmitted
	CntSwitchDrop
	CntFeatTakeover
	CntWakeSampledOut
	NumCounters
)

// Counters are the probes' counters summed over CPUs.
type Counters [NumCounters]uint64

// Capture is the loaded and attached set of capture probes.
type Capture struct {
	objs   captureObjects
	links  []link.Link
	Events *ringbuf.Reader
}

// ErrNoBTF means the kernel exposes no BTF, which CO-RE relocations need.
var ErrNoBTF = errors.New("kernel has no BTF (/sys/kernel/btf/vmlinux missing): a kernel built with CONFIG_DEBUG_INFO_BTF=y is needed")

// LoadCapture loads the capture probes, attaches them and opens the event reader.
func LoadCapture(cfg CaptureConfig) (*Capture, error) {
	if _, err := os.Stat("/sys/kernel/btf/vmlinux"); err != nil {
		return nil, ErrNoBTF
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("remove memlock limit: %w", err)
	}
	spec, err := loadCapture()
	if err != nil {
		return nil, fmt.Errorf("load capture spec: %w", err)
	}
	if cfg.MaxRate > MaxRateLimit {
		return nil, fmt.Errorf("max rate %d: at most %d samples per second", cfg.MaxRate, MaxRateLimit)
	}
	if err := setVars(spec, map[string]any{
		"self_tgid":    cfg.SelfTgid,
		"filter_tree":  boolU8(cfg.FilterTree),
		"nr_cpus":      uint32(PossibleCPUs()),
		"sample_every": max(cfg.SampleEvery, 1),
		"max_rate":     cfg.MaxRate,
	}); err != nil {
		return nil, err
	}
	if cfg.RingBytes != 0 {
		spec.Maps["events"].MaxEntries = cfg.RingBytes
	}
	slots, err := featSlots(cfg.MaxTasks)
	if err != nil {
		return nil, err
	}
	spec.Maps["task_feat_slots"].MaxEntries = slots
	if err := setVars(spec, map[string]any{"mls_feat_mask": slots - 1}); err != nil {
		return nil, err
	}
	spec.Maps["cpu_cur"].MaxEntries = uint32(PossibleCPUs())

	c := &Capture{}
	opts := &ebpf.CollectionOptions{}
	if err := spec.LoadAndAssign(&c.objs, opts); err != nil {
		return nil, describeLoadError("load capture probes", err, cfg.LogVerifier)
	}
	if err := c.attach(cfg.switchProbeRead); err != nil {
		c.Close()
		return nil, err
	}
	c.Events, err = ringbuf.NewReader(c.objs.Events)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("open event ring buffer: %w", err)
	}
	return c, nil
}

// AddTreeTgid adds a process to the filter set; its descendants follow automatically.
func (c *Capture) AddTreeTgid(tgid uint32) error {
	if err := c.objs.TreeTgids.Put(tgid, uint8(1)); err != nil {
		return fmt.Errorf("add process %d to filter: %w", tgid, err)
	}
	return nil
}

// Detach stops the probes; events already in the ring buffer can still be read.
func (c *Capture) Detach() {
	for _, l := range c.links {
		l.Close()
	}
	c.links = nil
}

// attach attaches the probes (Detach undoes it).
func (c *Capture) attach(switchProbeRead bool) error {
	// The switch hook that takes prev_state from the tracepoint (>= 5.18), else the one that
	// reads it from the task.
	var l link.Link
	err := errors.New("not tried")
	if !switchProbeRead {
		l, err = link.AttachRawTracepoint(link.RawTracepointOptions{Name: "sched_switch", Program: c.objs.MlsSchedSwitch4})
	}
	if err != nil {
		l, err = link.AttachRawTracepoint(link.RawTracepointOptions{Name: "sched_switch", Program: c.objs.MlsSchedSwitch})
	}
	if err != nil {
		return fmt.Errorf("attach raw tracepoint sched_switch: %w", err)
	}
	c.links = append(c.links, l)
	for _, a := range []struct {
		tp   string
		prog *ebpf.Program
	}{
		{"sched_waking", c.objs.MlsSchedWaking},
		{"sched_process_fork", c.objs.MlsProcessFork},
		{"sched_process_exit", c.objs.MlsProcessExit},
		{"sys_enter", c.objs.MlsSysEnter},
	} {
		l, err := link.AttachRawTracepoint(link.RawTracepointOptions{Name: a.tp, Program: a.prog})
		if err != nil {
			c.Detach()
			return fmt.Errorf("attach raw tracepoint %s: %w", a.tp, err)
		}
		c.links = append(c.links, l)
	}
	return nil
}

// Counters reads the probes' counters, summed over CPUs.
func (c *Capture) Counters() (Counters, error) {
	return readCounters(c.objs.Counters)
}

// Close detaches everything and frees the maps.
func (c *Capture) Close() error {
	c.Detach()
	if c.Events != nil {
		c.Events.Close()
	}
	return c.objs.Close()
}

func readCounters(m *ebpf.Map) (Counters, error) {
	var out Counters
	var per []uint64
	for i := range out {
		if err := m.Lookup(uint32(i), &per); err != nil {
			return out, fmt.Errorf("read counter %d: %w", i, err)
		}
		for _, v := range per {
			out[i] += v
		}
	}
	return out, nil
}
