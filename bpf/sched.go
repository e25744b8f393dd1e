package bpf

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"
)

// SchedConfig sets up the scheduler before it is loaded.
type SchedConfig struct {
	// SelfTgid is mlsched's own process: every one of its threads is dispatched directly.
	SelfTgid uint32
	// UseModel sends wakeups with a busy previous CPU to user space for a decision; without
	// it the scheduler is its base queue alone, in BPF.
	UseModel bool
	// InferKernel (with UseModel) decides every wakeup in BPF with the net written by SetNet,
	// instead of asking user space; KeepBudget bounds how long a kept task waits for its CPU.
	InferKernel bool
	KeepBudget  time.Duration
	// Placement (with InferKernel) is what decides in BPF: the net (features.PlaceNet), or a
	// fixed rule (PlaceKeep, PlaceMigrate, PlaceOnCPU with OnCPU its bound on R's run time).
	Placement uint8
	OnCPU     time.Duration
	// Shadow (with InferKernel): the net decides and every decision is scored, but W goes
	// where the base queue puts it.
	Shadow bool
	// TimeNet times every evaluation of the net in BPF (counters net_runs, net_ns): for
	// --bpf-stats, at the cost of two clock reads per evaluation.
	TimeNet bool
	// Explore (with InferKernel and the net) is the fraction of all decided wakeups taken at
	// random, among the scored ones (marked in their samples): --explore.
	Explore float64
	// NoVerdictCache evaluates the net on every decision, even when R made no syscall since
	// its last verdict (to measure what the cache saves).
	NoVerdictCache bool
	// Net is the first net (model.KernelForm.MarshalBinary), written before the scheduler
	// attaches.
	Net []byte
	// QueueVtime orders the base queue (the shared DSQ every fallback goes to) by weighted
	// virtual time, as the kernel's scx_simple does; false: a plain FIFO.
	QueueVtime bool
	// Slice is the time slice given to every task.
	Slice time.Duration
	// PendingTimeout is how long a task waits for a decision before BPF puts it on the FIFO.
	PendingTimeout time.Duration
	// UserStall ends the scheduler from BPF (exit kind unreg_bpf) when tasks have waited for
	// decisions and none was read for this long: user space is stopped or wedged. 0: never.
	UserStall time.Duration
	// TimerPeriod is the period of the timer that kicks idle CPUs while tasks wait.
	TimerPeriod time.Duration
	// Watchdog is the kernel's timeout_ms: a runnable task not scheduled for this long
	// ejects the scheduler. 0 keeps the kernel default (30 s).
	Watchdog time.Duration
	// EventRingBytes and DecisionRingBytes size the two ring buffers (powers of two, at
	// least one page); 0 keeps the defaults.
	EventRingBytes    uint32
	DecisionRingBytes uint32
	// MaxTasks is the number of feature slots, a power of two; 0 sizes them from pid_max.
	MaxTasks uint32
	// LogVerifier puts the whole verifier log in a load error.
	LogVerifier bool
}

// ExitInfoSize is sizeof(struct mls_exit_info) (bpf/abi.h), the layout of ExitInfo.
const ExitInfoSize = 16 + 128 + 1024

// MaxCPUs is MLS_MAX_CPUS (bpf/abi.h): the most possible CPUs the scheduler handles.
const MaxCPUs = 4096

// ExitInfo is what the kernel said when it disabled the scheduler (struct mls_exit_info).
type ExitInfo struct {
	Kind     int32
	ExitCPU  int32
	ExitCode int64
	Reason   [128]byte
	Msg      [1024]byte
}

// Exit kinds (enum scx_exit_kind) and exit code bits (enum scx_exit_code).
const (
	ExitNone       = 0
	ExitDone       = 1
	ExitUnreg      = 64
	ExitUnregBPF   = 65
	ExitUnregKern  = 66
	ExitSysRq      = 67
	ExitParent     = 68
	ExitError      = 1024
	ExitErrorBPF   = 1025
	ExitErrorStall = 1026

	ExitCodeActRestart = 1 << 48
)

// KindName names an exit kind as the kernel's enum does, lower case.
func (e *ExitInfo) KindName() string {
	switch e.Kind {
	case ExitNone:
		return "none"
	case ExitDone:
		return "done"
	case ExitUnreg:
		return "unreg"
	case ExitUnregBPF:
		return "unreg_bpf"
	case ExitUnregKern:
		return "unreg_kern"
	case ExitSysRq:
		return "sysrq"
	case ExitParent:
		return "parent"
	case ExitError:
		return "error"
	case ExitErrorBPF:
		return "error_bpf"
	case ExitErrorStall:
		return "error_stall"
	}
	return fmt.Sprintf("kind%d", e.Kind)
}

// ReasonString and MsgString return the C strings.
func (e *ExitInfo) ReasonString() string { return cstr(e.Reason[:]) }
func (e *ExitInfo) MsgString() string    { return cstr(e.Msg[:]) }

// Restart reports whether the kernel asks the scheduler to restart (e.g. CPU hotplug).
func (e *ExitInfo) Restart() bool { return e.ExitCode&ExitCodeActRestart != 0 }

func cstr(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

// schedObjs names what the loader uses in either scheduler object (sched, schedcompat).
type schedObjs struct {
	Ops        *ebpf.Map      `ebpf:"mlsched_ops"`
	Events     *ebpf.Map      `ebpf:"events"`
	Decisions  *ebpf.Map      `ebpf:"decisions"`
	Counters   *ebpf.Map      `ebpf:"sched_counters"`
	TaskFeats  *ebpf.Map      `ebpf:"task_feat_slots"`
	SysEnter   *ebpf.Program  `ebpf:"mls_sched_sys_enter"`
	Apply      *ebpf.Program  `ebpf:"mls_apply"`
	ExitInfo   *ebpf.Variable `ebpf:"exit_info"`
	SeqCounter *ebpf.Variable `ebpf:"mls_seq"`
	Nets       *ebpf.Map      `ebpf:"nets"`
	NetActive  *ebpf.Variable `ebpf:"net_active"`
	GuardFIFO  *ebpf.Variable `ebpf:"guard_fifo"`
}

// Sched is the loaded and attached scheduler.
type Sched struct {
	applyOpts ebpf.RunOptions
	coll      *ebpf.Collection
	objs      schedObjs
	ops       link.Link
	sysEnter  link.Link
	Variant   string // which object loaded: "sched (___v2 kfuncs)", ...
	Events    *ringbuf.Reader
	Decisions *UserRingbuf
}

// kfuncVariant says which scheduler object fits the running kernel, from its BTF.
type kfuncVariant struct {
	v2     bool // scx_bpf_dsq_insert___v2 exists: load `sched`
	legacy bool // only scx_bpf_dispatch exists (6.12): schedcompat with kf_legacy_names
}

func probeKernel() (kfuncVariant, error) {
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		return kfuncVariant{}, fmt.Errorf("load kernel BTF: %w", err)
	}
	return probeSpec(spec)
}

// specHasFunc says whether spec has a function (a kfunc) named exactly name.
func specHasFunc(spec *btf.Spec, name string) bool {
	// AnyTypesByName may return extra flavours in v0.22: check every name.
	types, err := spec.AnyTypesByName(name)
	if err != nil {
		return false
	}
	for _, t := range types {
		if _, ok := t.(*btf.Func); ok && t.TypeName() == name {
			return true
		}
	}
	return false
}

func probeSpec(spec *btf.Spec) (kfuncVariant, error) {
	has := func(name string) bool { return specHasFunc(spec, name) }
	var st *btf.Struct
	if err := spec.TypeByName("sched_ext_ops", &st); err != nil {
		return kfuncVariant{}, ErrNoSchedExt
	}
	v := kfuncVariant{v2: has("scx_bpf_dsq_insert___v2")}
	if !v.v2 && !has("scx_bpf_dsq_insert") {
		v.legacy = has("scx_bpf_dispatch")
		if !v.legacy {
			return v, fmt.Errorf("%w: no known dispatch kfunc in kernel BTF", ErrNoSchedExt)
		}
	}
	return v, nil
}

// LoadSched loads the scheduler and attaches it: from here on, sched_ext schedules every
// task with it until Close, the process's exit, or the kernel ejects it.
func LoadSched(cfg SchedConfig) (*Sched, error) {
	if err := CheckBTF(); err != nil {
		return nil, err
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("remove memlock limit: %w", err)
	}
	spec, variant, err := schedSpec(cfg)
	if err != nil {
		return nil, err
	}
	s := &Sched{Variant: variant}
	// The whole collection, not LoadAndAssign: cilium/ebpf v0.22 fills the struct_ops value
	// only when every program it names was loaded.
	coll, err := ebpf.NewCollection(spec)
	if err != nil {
		return nil, describeLoadError("load scheduler "+variant, err, cfg.LogVerifier)
	}
	s.coll = coll
	s.objs = schedObjs{
		Ops: coll.Maps["mlsched_ops"], Events: coll.Maps["events"], Decisions: coll.Maps["decisions"],
		Counters: coll.Maps["sched_counters"], TaskFeats: coll.Maps["task_feat_slots"],
		SysEnter: coll.Programs["mls_sched_sys_enter"], Apply: coll.Programs["mls_apply"], ExitInfo: coll.Variables["exit_info"],
		SeqCounter: coll.Variables["mls_seq"], GuardFIFO: coll.Variables["guard_fifo"],
		Nets: coll.Maps["nets"], NetActive: coll.Variables["net_active"],
	}
	if s.objs.Ops == nil || s.objs.Events == nil || s.objs.Decisions == nil || s.objs.Counters == nil ||
		s.objs.SysEnter == nil || s.objs.ExitInfo == nil || s.objs.GuardFIFO == nil || s.objs.Nets == nil || s.objs.NetActive == nil {
		coll.Close()
		return nil, errors.New("load scheduler: object lacks an expected map, program or variable")
	}
	if cfg.Net != nil {
		if err := s.SetNet(cfg.Net); err != nil {
			coll.Close()
			return nil, err
		}
	}
	if err := s.attach(cfg.UseModel); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// schedSpec picks the scheduler object for the running kernel and sets it up for cfg: its
// variables, the struct_ops watchdog, and the maps' sizes.
func schedSpec(cfg SchedConfig) (*ebpf.CollectionSpec, string, error) {
	kv, err := probeKernel()
	if err != nil {
		return nil, "", err
	}
	load, variant := loadSched, "sched (___v2 kfuncs)"
	if !kv.v2 {
		load, variant = loadSchedcompat, "schedcompat (plain kfuncs)"
		if kv.legacy {
			variant = "schedcompat (6.12 kfuncs)"
		}
	}
	spec, err := load()
	if err != nil {
		return nil, "", fmt.Errorf("load scheduler spec: %w", err)
	}
	ncpu := uint32(PossibleCPUs())
	if ncpu > MaxCPUs {
		// The keep queues (one per CPU) and the per-CPU loops stop at MLS_MAX_CPUS: a CPU
		// beyond it would have no keep queue, and a keep there would eject the scheduler.
		return nil, "", fmt.Errorf("this machine has %d possible CPUs; the scheduler supports at most %d (MLS_MAX_CPUS in bpf/abi.h)", ncpu, MaxCPUs)
	}
	slots, err := featSlots(cfg.MaxTasks)
	if err != nil {
		return nil, "", err
	}
	spec.Maps["cpu_states"].MaxEntries = ncpu
	if cfg.EventRingBytes != 0 {
		spec.Maps["events"].MaxEntries = cfg.EventRingBytes
	}
	if cfg.DecisionRingBytes != 0 {
		spec.Maps["decisions"].MaxEntries = cfg.DecisionRingBytes
	}
	if !cfg.UseModel {
		// No events without the model: keep the unused maps small.
		slots = 1024
		spec.Maps["events"].MaxEntries = uint32(os.Getpagesize())
		spec.Maps["decisions"].MaxEntries = uint32(os.Getpagesize())
	}
	spec.Maps["task_feat_slots"].MaxEntries = slots
	vars := map[string]any{
		"self_tgid": cfg.SelfTgid, "use_model": boolU8(cfg.UseModel), "queue_vtime": boolU8(cfg.QueueVtime),
		"infer_kernel": boolU8(cfg.UseModel && cfg.InferKernel),
		"placement":    cfg.Placement, "shadow": boolU8(cfg.Shadow), "time_net": boolU8(cfg.TimeNet),
		"verdict_cache": boolU8(!cfg.NoVerdictCache),
		"nr_cpus":       ncpu, "kf_legacy_names": boolU8(kv.legacy), "mls_feat_mask": slots - 1,
	}
	for name, d := range map[string]time.Duration{"slice_ns": cfg.Slice, "pending_timeout_ns": cfg.PendingTimeout, "keep_budget_ns": cfg.KeepBudget,
		"user_stall_ns": cfg.UserStall, "timer_period_ns": cfg.TimerPeriod} {
		if d > 0 {
			vars[name] = uint64(d)
		}
	}
	if cfg.Shadow {
		vars["score_mask"] = uint32(0) // the operator wants the model's live accuracy: score every decision
	}
	if cfg.OnCPU > 0 {
		vars["oncpu_ns"] = uint64(cfg.OnCPU)
	}
	if cfg.Explore > 0 {
		vars["explore_thresh"] = exploreThresh(cfg.Explore)
	}
	if err := setVars(spec, vars); err != nil {
		return nil, "", err
	}
	if err := setOpsField(spec.Maps["mlsched_ops"], "timeout_ms", uint32(cfg.Watchdog/time.Millisecond)); err != nil {
		return nil, "", err
	}
	return spec, variant, nil
}

// attach opens the two rings, attaches the sys_enter feature hook (model policy only) and
// then the scheduler itself.
func (s *Sched) attach(useModel bool) error {
	var err error
	if s.Events, err = ringbuf.NewReader(s.objs.Events); err != nil {
		return fmt.Errorf("open event ring buffer: %w", err)
	}
	if s.Decisions, err = NewUserRingbuf(s.objs.Decisions); err != nil {
		return fmt.Errorf("open decision ring buffer: %w", err)
	}
	if useModel {
		s.sysEnter, err = link.AttachRawTracepoint(link.RawTracepointOptions{Name: "sys_enter", Program: s.objs.SysEnter})
		if err != nil {
			return fmt.Errorf("attach raw tracepoint sys_enter: %w", err)
		}
	}
	if s.ops, err = link.AttachStructOps(link.StructOpsOptions{Map: s.objs.Ops}); err != nil {
		return fmt.Errorf("attach struct_ops mlsched_ops: %w", err)
	}
	return nil
}

// setOpsField patches a scalar member of the struct_ops value before load: the ELF's initial
// value is all cilium/ebpf passes on for non-program members.
func setOpsField(ms *ebpf.MapSpec, name string, v uint32) error {
	st, ok := ms.Value.(*btf.Struct)
	if !ok || len(ms.Contents) != 1 {
		return fmt.Errorf("struct_ops map %s: unexpected spec", ms.Name)
	}
	data, ok := ms.Contents[0].Value.([]byte)
	if !ok {
		return fmt.Errorf("struct_ops map %s: contents are %T", ms.Name, ms.Contents[0].Value)
	}
	for _, m := range st.Members {
		if m.Name != name {
			continue
		}
		off := int(m.Offset.Bytes())
		if off+4 > len(data) {
			return fmt.Errorf("struct_ops %s.%s: offset out of range", ms.Name, name)
		}
		binary.LittleEndian.PutUint32(data[off:], v)
		return nil
	}
	return fmt.Errorf("struct_ops %s: no member %s", ms.Name, name)
}

// Apply makes BPF apply the decisions written so far, now (a BPF_PROG_TEST_RUN of mls_apply,
// one syscall). It does not allocate.
func (s *Sched) Apply() error {
	_, err := s.objs.Apply.Run(&s.applyOpts)
	return err
}

// SetNet makes net (a model.KernelForm's MarshalBinary) the one BPF decides with: it is written
// to the slot not in use, then BPF is pointed at it, so a wakeup reads the old net or the new
// one, never half of each. Call it from one goroutine.
func (s *Sched) SetNet(net []byte) error {
	var active uint32
	if err := s.objs.NetActive.Get(&active); err != nil {
		return fmt.Errorf("read the active net: %w", err)
	}
	next := (active & 1) ^ 1
	if err := s.objs.Nets.Update(next, net, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("write the net: %w", err)
	}
	if err := s.objs.NetActive.Set(next); err != nil {
		return fmt.Errorf("switch to the new net: %w", err)
	}
	return nil
}

// SetGuardFIFO tells BPF that the model guard holds the policy at FIFO: wakeups then go to
// the FIFO in BPF at once, and their events are sent only for scoring.
func (s *Sched) SetGuardFIFO(on bool) error {
	return s.objs.GuardFIFO.Set(boolU8(on))
}

// scoreEvery is one over the scored share of decided wakeups: score_mask + 1 in sched.bpf.c.
const scoreEvery = 8

// exploreThresh is explore_thresh for an overall exploration rate: exploration happens among
// the scored decisions, one in scoreEvery (not under --shadow, which places nothing).
func exploreThresh(rate float64) uint32 {
	p := rate * scoreEvery
	if p >= 1 {
		return math.MaxUint32
	}
	return uint32(p * (1 << 32))
}

// ProgStat is one BPF program's run time and run count since the kernel's run-time statistics
// were enabled (EnableRunTimeStats).
type ProgStat struct {
	Runs    uint64
	Runtime time.Duration
}

// EnableRunTimeStats turns on the kernel's per-program run-time statistics
// (kernel.bpf_stats_enabled) until the returned closer is closed. They cost two clock reads
// per program run, for every BPF program on the machine.
func EnableRunTimeStats() (io.Closer, error) {
	c, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		return nil, fmt.Errorf("enable BPF run-time statistics: %w", err)
	}
	return c, nil
}

// ProgStats returns each of the scheduler's programs' statistics, by program name.
func (s *Sched) ProgStats() (map[string]ProgStat, error) {
	out := make(map[string]ProgStat, len(s.coll.Programs))
	for name, p := range s.coll.Programs {
		st, err := p.Stats()
		if err != nil {
			return nil, fmt.Errorf("read the statistics of %s: %w", name, err)
		}
		out[name] = ProgStat{Runs: st.RunCount, Runtime: st.Runtime}
	}
	return out, nil
}

// ExitInfo reads what ops.exit recorded; Kind is ExitNone while the scheduler runs.
func (s *Sched) ExitInfo() (ExitInfo, error) {
	var e ExitInfo
	if err := s.objs.ExitInfo.Get(&e); err != nil {
		return e, fmt.Errorf("read exit info: %w", err)
	}
	return e, nil
}

// Counters reads the scheduler's counters, summed over CPUs.
func (s *Sched) Counters() (SchedCounters, error) {
	var out SchedCounters
	var per []uint64
	for i := range out {
		if err := s.objs.Counters.Lookup(uint32(i), &per); err != nil {
			return out, fmt.Errorf("read counter %s: %w", SchedCounter(i), err)
		}
		for _, v := range per {
			out[i] += v
		}
	}
	return out, nil
}

// Detach unregisters the scheduler: the kernel moves every task back to the fair class and
// records the exit (kind unreg) before this returns.
func (s *Sched) Detach() error {
	var err error
	if s.ops != nil {
		err = s.ops.Close()
		s.ops = nil
	}
	if s.sysEnter != nil {
		s.sysEnter.Close()
		s.sysEnter = nil
	}
	return err
}

// Close detaches and frees everything.
func (s *Sched) Close() error {
	err := s.Detach()
	if s.Events != nil {
		s.Events.Close()
	}
	if s.Decisions != nil {
		s.Decisions.Close()
	}
	if s.coll != nil {
		s.coll.Close()
	}
	return err
}
