package bpf

import (
	"cmp"
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
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
	// hooks picks older kernels' programs where newer ones would load: tests cover every
	// set this way.
	hooks hookSet
	// clockSamples is how many switches per tick and CPU calibrate the cast hooks' clock
	// offset (0: 8); tests lower it so that most switches go by the offset.
	clockSamples uint32
}

// hookSet names the variants of the switch and wakeup hooks.
type hookSet int

const (
	hooksAuto      hookSet = iota // the newest the kernel supports
	hooksNoCast                   // 5.18-6.1: prev_state from the tracepoint, fields by probe read
	hooksProbeRead                // 5.15-5.17: prev_state by probe read too
)

// Hook variants, as Capture.Hooks reports them.
const (
	HooksCast      = "cast"       // >= 6.2: task fields read directly (bpf_rdonly_cast), no clock read per switch
	HooksPrevState = "prev-state" // >= 5.18: prev_state from the tracepoint, task fields by probe read
	HooksProbeRead = "probe-read" // >= 5.15: everything by probe read
)

// DefaultMaxRate is mlsched capture's default cap on samples per second and CPU: 20,000 keeps
// every wakeup of ordinary workloads and bounds the probes' cost (~0.3 us per sample) on
// wakeup-heavy ones.
const DefaultMaxRate = 20000

// MaxRateLimit is the largest MaxRate: the probes' per-tick arithmetic stays in 64 bits below it.
const MaxRateLimit = 1 << 30

// captureProgs are the programs every kernel loads; captureCastProgs need bpf_rdonly_cast.
type captureProgs struct {
	MlsProcessExit  *ebpf.Program `ebpf:"mls_process_exit"`
	MlsProcessFork  *ebpf.Program `ebpf:"mls_process_fork"`
	MlsSchedSwitch  *ebpf.Program `ebpf:"mls_sched_switch"`
	MlsSchedSwitch4 *ebpf.Program `ebpf:"mls_sched_switch4"`
	MlsSchedWaking  *ebpf.Program `ebpf:"mls_sched_waking"`
	MlsSysEnter     *ebpf.Program `ebpf:"mls_sys_enter"`
}

type captureCastProgs struct {
	MlsSchedSwitchCast *ebpf.Program `ebpf:"mls_sched_switch_cast"`
	MlsSchedWakingCast *ebpf.Program `ebpf:"mls_sched_waking_cast"`
}

type captureBase struct {
	captureMaps
	captureProgs
}

type captureAll struct {
	captureMaps
	captureProgs
	captureCastProgs // nil programs where the kernel lacks bpf_rdonly_cast
}

func (o *captureAll) Close() error {
	err := o.captureMaps.Close()
	for _, p := range []*ebpf.Program{o.MlsProcessExit, o.MlsProcessFork, o.MlsSchedSwitch,
		o.MlsSchedSwitch4, o.MlsSchedWaking, o.MlsSysEnter, o.MlsSchedSwitchCast, o.MlsSchedWakingCast} {
		if p != nil {
			err = errors.Join(err, p.Close())
		}
	}
	return err
}

// Capture is the loaded and attached set of capture probes.
type Capture struct {
	objs   captureAll
	links  []link.Link
	Events *ringbuf.Reader
	// Hooks is the variant of the switch and wakeup hooks attached (HooksCast, ...).
	Hooks string
	// CastErr says why the HooksCast programs are not used, where they are not.
	CastErr error
}

// LoadCapture loads the capture probes, attaches them and opens the event reader.
func LoadCapture(cfg CaptureConfig) (*Capture, error) {
	if err := CheckBTF(); err != nil {
		return nil, err
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
		"clk_samples":  cmp.Or(cfg.clockSamples, 8),
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
	if cfg.hooks == hooksAuto {
		c.CastErr = kernelHasFunc("bpf_rdonly_cast")
		if c.CastErr == nil {
			// Should the kernel refuse them all the same, the older programs still work.
			// (LoadAndAssign fills fields one by one and closes them all on error: load
			// into a local, so that no closed program is left behind.)
			var all captureAll
			if err := spec.LoadAndAssign(&all, opts); err != nil {
				c.CastErr = describeLoadError("load capture probes", err, false)
			} else {
				c.objs = all
			}
		}
	} else {
		c.CastErr = errors.New("not tried (test setting)")
	}
	if c.CastErr != nil {
		var b captureBase
		if err := spec.LoadAndAssign(&b, opts); err != nil {
			return nil, describeLoadError("load capture probes", err, cfg.LogVerifier)
		}
		c.objs.captureMaps, c.objs.captureProgs = b.captureMaps, b.captureProgs
	}
	if err := c.attach(cfg.hooks); err != nil {
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
func (c *Capture) attach(hooks hookSet) error {
	// The newest switch hook that attaches: direct reads (>= 6.2), prev_state from the
	// tracepoint (>= 5.18), or prev_state read from the task. The wakeup hook follows.
	var l link.Link
	err := errors.New("not tried")
	waking := c.objs.MlsSchedWaking
	if hooks == hooksAuto && c.objs.MlsSchedSwitchCast != nil {
		l, err = link.AttachRawTracepoint(link.RawTracepointOptions{Name: "sched_switch", Program: c.objs.MlsSchedSwitchCast})
		if err == nil {
			c.Hooks, waking = HooksCast, c.objs.MlsSchedWakingCast
		} else {
			c.CastErr = fmt.Errorf("attach: %w", err)
		}
	}
	if err != nil && hooks != hooksProbeRead {
		l, err = link.AttachRawTracepoint(link.RawTracepointOptions{Name: "sched_switch", Program: c.objs.MlsSchedSwitch4})
		c.Hooks = HooksPrevState
	}
	if err != nil {
		l, err = link.AttachRawTracepoint(link.RawTracepointOptions{Name: "sched_switch", Program: c.objs.MlsSchedSwitch})
		c.Hooks = HooksProbeRead
	}
	if err != nil {
		return fmt.Errorf("attach raw tracepoint sched_switch: %w", err)
	}
	c.links = append(c.links, l)
	for _, a := range []struct {
		tp   string
		prog *ebpf.Program
	}{
		{"sched_waking", waking},
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

// CounterPerCPU reads counter idx of each possible CPU into into (grown as needed): a CPU's
// own count is what its programs counted there.
func (c *Capture) CounterPerCPU(idx Counter, into []uint64) ([]uint64, error) {
	if err := c.objs.Counters.Lookup(uint32(idx), &into); err != nil {
		return into, fmt.Errorf("read counter %d: %w", idx, err)
	}
	return into, nil
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

// kernelHasFunc says whether the kernel's BTF has function name (a kfunc the programs call),
// or why not.
func kernelHasFunc(name string) error {
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		return fmt.Errorf("load kernel BTF: %w", err)
	}
	if !specHasFunc(spec, name) {
		return fmt.Errorf("kernel BTF has no %s (Linux >= 6.2 has it)", name)
	}
	return nil
}
