//go:build ignore

// SPDX-License-Identifier: GPL-2.0
// Capture probes for `mlsched capture`: plain raw tracepoints only (no fentry/tp_btf, no
// sched_ext), so traces can be recorded on any kernel >= 5.15 with BTF.
//
//   sys_enter      -> per-task syscall-decay features (features.h), O(1) per syscall
//   sched_switch   -> which task runs on each CPU since when; resolves pending samples
//   sched_waking   -> a sample: W wakes while its previous CPU runs R; R's features
//   sched_process_fork/exit -> process-tree filter, feature state cleanup
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

#include "features.h"

char LICENSE[] SEC("license") = "GPL";

// Set by the loader before load.
const volatile __u32 self_tgid = 0;   // mlsched's own process: never sampled
const volatile __u8 filter_tree = 0;  // only tasks whose tgid is in tree_tgids
const volatile __u32 nr_cpus = 1;
const volatile __u32 sample_every = 1; // keep one wakeup in this many, at random
const volatile __u32 max_rate = 0;     // samples per second per CPU at most (0: no limit)
const volatile __u32 clk_samples = 8;  // switches per tick and CPU that calibrate the clock offset

struct cpu_cur {
	struct mls_cpu_run run; // who runs here since when, and the pending sample (features.h)
	__u64 task;             // the running task's task_struct, compared with a wakee's (never dereferenced)
	// Cast path (see on_switch): the least bpf_ktime_get_ns() minus the runqueue's clock over
	// the first switches of the tick turns the scheduler's clock into ours.
	__u64 clk_off;
	__u64 clk_jiffy;
	__u32 clk_n;    // switches that read the clock in this tick
} __attribute__((aligned(64))); // one cache line per CPU: no false sharing between switches

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MLS_MAX_CPUS); // resized by the loader to the possible CPUs
	__type(key, __u32);
	__type(value, struct cpu_cur);
} cpu_cur SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, __u8);
} tree_tgids SEC(".maps");

// Events are submitted with BPF_RB_NO_WAKEUP: user space polls on a timer, so no event costs
// a wakeup of the reader (which would be a context switch per sample on a busy machine).
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 16 << 20); // resized by the loader
} events SEC(".maps");

// A sample is built here (a per-CPU line set that stays in cache) and copied into the ring
// with its real length.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct mls_wake);
} wake_scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MLS_CNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

static __always_inline void count(__u32 idx)
{
	mls_count_add(&counters, idx, 1);
}

// The CPU a task last ran on: thread_info.cpu since 5.16, task_struct.cpu before.
struct task_struct___old {
	unsigned int cpu;
} __attribute__((preserve_access_index));

static __always_inline __u32 task_cpu(struct task_struct *p)
{
	if (bpf_core_field_exists(p->thread_info.cpu))
		return BPF_CORE_READ(p, thread_info.cpu);
	return BPF_CORE_READ((struct task_struct___old *)p, cpu);
}

// The state field of task_struct: __state since 5.14, state before.
struct task_struct___pre514 {
	long state;
} __attribute__((preserve_access_index));

static __always_inline __u32 task_state(struct task_struct *p)
{
	if (bpf_core_field_exists(p->__state))
		return BPF_CORE_READ(p, __state);
	return BPF_CORE_READ((struct task_struct___pre514 *)p, state);
}

// A task's pid and tgid with one probe read: they are adjacent in task_struct on every kernel
// (checked through CO-RE: otherwise two reads), and probe reads dominate the switch hook.
struct pid_pair {
	__u32 pid;
	__u32 tgid;
};

static __always_inline struct pid_pair task_ids(struct task_struct *p)
{
	struct pid_pair ids = {};

	if (bpf_core_field_offset(p->tgid) == bpf_core_field_offset(p->pid) + 4) {
		bpf_core_read(&ids, sizeof(ids), &p->pid);
	} else {
		ids.pid = BPF_CORE_READ(p, pid);
		ids.tgid = BPF_CORE_READ(p, tgid);
	}
	return ids;
}

// bpf_rdonly_cast (kernels >= 6.2) turns a task pointer from a raw tracepoint's arguments into
// one the verifier lets the program read directly: each field is then a plain load (the JIT adds
// a fault handler) instead of a bpf_probe_read_kernel call (~10 ns here). The programs that use
// it (*_cast) are loaded only where the kernel has it; the others read with probe reads.
extern void *bpf_rdonly_cast(const void *obj, __u32 btf_id) __ksym;

static __always_inline struct task_struct *task_view(struct task_struct *p)
{
	return bpf_rdonly_cast(p, bpf_core_type_id_kernel(struct task_struct));
}

static __always_inline __u32 task_cpu_of(struct task_struct *p, bool cast)
{
	if (cast) // >= 6.2: the CPU is in thread_info
		return task_view(p)->thread_info.cpu;
	return task_cpu(p);
}

static __always_inline struct pid_pair task_ids_of(struct task_struct *p, bool cast)
{
	if (cast) {
		struct task_struct *t = task_view(p);
		struct pid_pair ids = { .pid = t->pid, .tgid = t->tgid };

		return ids;
	}
	return task_ids(p);
}

SEC("raw_tp/sys_enter")
int BPF_PROG(mls_sys_enter, struct pt_regs *regs, long id)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();

	if (filter_tree) {
		__u32 tgid = pid_tgid >> 32;

		if (!bpf_map_lookup_elem(&tree_tgids, &tgid))
			return 0;
	}
	mls_on_sys_enter(&cpu_cur, &counters, MLS_CNT_FEAT_TAKEOVER, (__u32)pid_tgid, id);
	return 0;
}

// When the task switched in here started: the runqueue's clock plus its offset to ours where
// that clock is fresh, else our clock (now, if the caller read it already).
static __always_inline __u64 switch_in_ns(struct cpu_cur *c, struct task_struct *next, bool preempt,
					  __u32 prev_state, bool have_state, bool cast, __u64 now)
{
	// The runqueue's clock is fresh only if prev blocked (or exited): a wakeup that preempts
	// the running task (and sched_yield) asks __schedule() to skip the clock update, so the
	// clock is then as old as the last update, up to a tick. Those switches read ours.
	if (cast && have_state && !preempt && prev_state != 0 && bpf_core_field_exists(next->se.cfs_rq)) {
		// This CPU's runqueue: every task's se.cfs_rq (its group's, on its CPU) points to it.
		__u64 clock = task_view(next)->se.cfs_rq->rq->clock, jiffy = bpf_jiffies64();

		if (clock) { // (the loads fault to 0: no runqueue clock to go by)
			if (jiffy != c->clk_jiffy) {
				c->clk_jiffy = jiffy;
				c->clk_n = 0;
			}
			if (c->clk_n < clk_samples || now) {
				__u64 off;

				if (!now)
					now = bpf_ktime_get_ns();
				off = now - clock;
				if (c->clk_n == 0 || (__s64)(off - c->clk_off) < 0)
					c->clk_off = off;
				c->clk_n++;
			}
			return now ? now : clock + c->clk_off;
		}
	}
	return now ? now : bpf_ktime_get_ns();
}

// The switch hook. It runs on every context switch, so it does the least it can: note which
// task now runs here and since when, and, only if a sample names the task leaving, report how
// it left. With the cast hooks, "since when" is, where prev blocked or exited, the runqueue's
// clock (rq->clock, sched_clock), which __schedule() has just updated before picking the next
// task. The offset to bpf_ktime_get_ns() comes from the first clk_samples (8) such switches of
// each tick, which read our clock too: each reads it some time after the runqueue's (usually
// well under a microsecond, tens of microseconds after a newly idle balance), so the least
// difference is kept. The other such switches pay for no clock read (~37 ns on the test VM).
// Switches that preempt or yield read ours, as the runqueue's is stale then (see below). (Not
// se.exec_start, which would need no pointer chase: it is rq_clock_task, which leaves out IRQ
// and steal time, so its offset to our clock jumps whenever a VM's CPU is preempted.) Without
// bpf_rdonly_cast (before 6.2) the pointer chase would take three probe reads, about what a
// clock read costs, so those programs read the clock, and the task's ids by probe read. The
// idle task is never sampled and gets no timestamp. prev_state is the tracepoint's own argument
// on kernels >= 5.18 (mls_sched_switch4, _cast); before, a probe read of prev->__state. (One
// rare difference: on 5.18-6.12 the argument keeps the sleeping state of a task that a pending
// signal put back to running, so such a switch counts as voluntary there and as involuntary
// with the probe read or on >= 6.13.)
static __always_inline void on_switch(bool preempt, struct task_struct *prev, struct task_struct *next,
				      __u32 prev_state, bool have_state, bool cast)
{
	__u32 cpu = bpf_get_smp_processor_id();
	struct cpu_cur *c = bpf_map_lookup_elem(&cpu_cur, &cpu);
	struct pid_pair ids;
	__u64 now = 0, t;
	bool voluntary = false;

	if (!c)
		return;
	ids = task_ids_of(next, cast);
	// c->run.tid is the task switched in here last, which is prev. Still runnable: preempted,
	// or TASK_RUNNING (preempted in user mode, or sched_yield, which sys_enter marks).
	if (c->run.tid) {
		__u32 state = have_state ? prev_state : task_state(prev);

		voluntary = mls_left_voluntarily(preempt || state == 0, c->run.yielding);
	}
	if (mls_run_take_sample(&c->run, c->run.tid)) {
		struct mls_switch_event *e;

		now = bpf_ktime_get_ns();
		e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
		if (!e) {
			count(MLS_CNT_SWITCH_DROP);
		} else {
			e->type = MLS_EV_SWITCH;
			e->voluntary = voluntary;
			e->cpu = cpu;
			e->prev_tid = c->run.tid;
			e->next_tid = ids.pid;
			e->_pad = 0;
			e->ts_ns = now;
			bpf_ringbuf_submit(e, BPF_RB_NO_WAKEUP);
			count(MLS_CNT_SWITCH_EMITTED);
		}
	}
	c->task = (__u64)next;
	// The switch's time ends prev's stint and starts next's: both tasks' scheduling state
	// (features.h), as the scheduler's stopping() and running() keep it. A task without a
	// feature slot gets one here, unless only a tree is captured: then the fork hook gave its
	// tasks theirs (a tree lookup on every switch would double this hook's cost).
	t = switch_in_ns(c, next, preempt, prev_state, have_state, cast, now);
	if (c->run.tid)
		mls_on_stint_end(c->run.tid, c->run.start_ns, t, voluntary, !filter_tree, &counters, MLS_CNT_FEAT_TAKEOVER);
	if (ids.pid)
		mls_on_stint_start(ids.pid, t, !filter_tree, &counters, MLS_CNT_FEAT_TAKEOVER);
	mls_run_start(&c->run, ids.pid, ids.tgid, ids.pid ? t : 0);
}

SEC("raw_tp/sched_switch")
int BPF_PROG(mls_sched_switch, bool preempt, struct task_struct *prev, struct task_struct *next)
{
	on_switch(preempt, prev, next, 0, false, false);
	return 0;
}

// Attached instead of mls_sched_switch where the tracepoint has prev_state (>= 5.18; attaching
// fails before, as the program reads past the tracepoint's arguments).
SEC("raw_tp/sched_switch")
int BPF_PROG(mls_sched_switch4, bool preempt, struct task_struct *prev, struct task_struct *next,
	     unsigned int prev_state)
{
	on_switch(preempt, prev, next, prev_state, true, false);
	return 0;
}

// Attached instead of both where the kernel has bpf_rdonly_cast (>= 6.2).
SEC("raw_tp/sched_switch")
int BPF_PROG(mls_sched_switch_cast, bool preempt, struct task_struct *prev, struct task_struct *next,
	     unsigned int prev_state)
{
	on_switch(preempt, prev, next, prev_state, true, true);
	return 0;
}

// The sampling rate limit, per waking CPU. Each tick (a jiffy, read without the TSC; the clock
// is read once per tick, to learn its length) the previous window's candidates per tick give
// the probability of keeping one, quota / candidates, with quota = max_rate * tick: so the
// samples spread over the tick at random instead of taking its first wakeups. A token bucket,
// in units of 1e-9 sample, bounds the rest: each tick adds the quota, up to 8 ticks' worth (or 2
// samples, if a tick earns less), so a quiet spell or a sudden burst earns at most that, and a
// cap below the tick rate still averages out.
struct rate_state {
	__u64 jiffy;     // the current window (one or more ticks)
	__u64 window_ns; // its start
	__u64 seen;      // candidates in it
	__u64 tokens;    // in 1e-9 samples
	__u64 keep;      // probability of keeping a candidate, in units of 2^-32 (2^32: all)
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct rate_state);
} rate SEC(".maps");

#define MLS_SAMPLE 1000000000ULL // one sample, in tokens

static __always_inline struct rate_state *rate_state(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&rate, &zero);
}

static __always_inline bool rate_keep(void)
{
	struct rate_state *r = rate_state();
	__u64 jiffy = bpf_jiffies64();

	if (!r)
		return true;
	if (jiffy != r->jiffy) {
		__u64 now = bpf_ktime_get_ns(), ticks = jiffy - r->jiffy, tick_ns = 1000000, quota, cap;

		if (r->window_ns && ticks < 1000 && now > r->window_ns)
			tick_ns = (now - r->window_ns) / ticks;
		if (tick_ns == 0)
			tick_ns = 1;
		if (tick_ns > 100000000)
			tick_ns = 100000000;
		quota = max_rate * tick_ns; // max_rate <= 2^30 (the loader checks), so < 2^57
		cap = quota * 8 > 2 * MLS_SAMPLE ? quota * 8 : 2 * MLS_SAMPLE;
		if (ticks > 1 + cap / quota)
			r->tokens = cap;
		else
			r->tokens += quota * ticks; // <= quota + cap < 2^61
		if (r->tokens > cap)
			r->tokens = cap;
		// Candidates per tick in the window that ends now predict the next one.
		if (r->window_ns == 0 || r->seen / ticks * MLS_SAMPLE <= quota)
			r->keep = 1ULL << 32;
		else
			r->keep = ((quota / (r->seen / ticks)) << 32) / MLS_SAMPLE;
		r->jiffy = jiffy;
		r->window_ns = now;
		r->seen = 0;
	}
	r->seen++;
	if (r->keep < (1ULL << 32) && bpf_get_prandom_u32() >= r->keep)
		return false;
	if (r->tokens < MLS_SAMPLE)
		return false;
	r->tokens -= MLS_SAMPLE;
	return true;
}

// rate_refund gives back the token of a kept candidate that turned out not to be a sample.
static __always_inline void rate_refund(void)
{
	struct rate_state *r = rate_state();

	if (max_rate && r)
		r->tokens += MLS_SAMPLE;
}

static __always_inline void on_waking(struct task_struct *p, bool cast)
{
	__u32 cpu = task_cpu_of(p, cast);
	struct mls_wake *e;
	struct cpu_cur *c;
	__u32 r_tid, r_tgid, pending, zero = 0;
	struct pid_pair ids;

	count(MLS_CNT_WAKE_TOTAL);
	c = bpf_map_lookup_elem(&cpu_cur, &cpu);
	if (!c)
		return;
	r_tid = c->run.tid;
	r_tgid = c->run.tgid;
	if (r_tid == 0) {
		count(MLS_CNT_WAKE_IDLE);
		return;
	}
	if (filter_tree && !bpf_map_lookup_elem(&tree_tgids, &r_tgid)) {
		count(MLS_CNT_WAKE_FILTERED);
		return;
	}
	// The checks that need no probe read come before sampling, so that they spend no budget.
	if (c->task == (__u64)p) {
		count(MLS_CNT_WAKE_SELF);
		return;
	}
	if (r_tgid == self_tgid) {
		count(MLS_CNT_WAKE_OURS);
		return;
	}
	// Sampling next, before the probe read and the snapshot: a sampled-out wakeup costs little.
	if ((max_rate && !rate_keep()) || (sample_every > 1 && bpf_get_prandom_u32() % sample_every)) {
		count(MLS_CNT_WAKE_SAMPLED_OUT);
		return;
	}
	ids = task_ids_of(p, cast);
	if (ids.pid == r_tid) { // a stale c->task (the switch hook missed a switch)
		rate_refund();
		count(MLS_CNT_WAKE_SELF);
		return;
	}
	if (ids.tgid == self_tgid) {
		rate_refund();
		count(MLS_CNT_WAKE_OURS);
		return;
	}
	e = bpf_map_lookup_elem(&wake_scratch, &zero);
	if (!e) {
		count(MLS_CNT_WAKE_DROP);
		return;
	}
	pending = c->run.sample_tid;
	mls_wake_fill(e, &c->run, MLS_EV_WAKE, cpu, ids.pid, bpf_ktime_get_ns(), 0);
	if (bpf_ringbuf_output(&events, e, mls_wake_len(e), BPF_RB_NO_WAKEUP)) {
		// This sample is not pending after all; an earlier one of the same stint of R, sent,
		// still is: its switch-out must still be sent (zeroing here labelled it a timeout).
		c->run.sample_tid = pending;
		count(MLS_CNT_WAKE_DROP);
		return;
	}
	count(MLS_CNT_WAKE_EMITTED);
}

SEC("raw_tp/sched_waking")
int BPF_PROG(mls_sched_waking, struct task_struct *p)
{
	on_waking(p, false);
	return 0;
}

// Attached instead of mls_sched_waking where the kernel has bpf_rdonly_cast (>= 6.2).
SEC("raw_tp/sched_waking")
int BPF_PROG(mls_sched_waking_cast, struct task_struct *p)
{
	on_waking(p, true);
	return 0;
}

SEC("raw_tp/sched_process_fork")
int BPF_PROG(mls_process_fork, struct task_struct *parent, struct task_struct *child)
{
	__u32 ptgid, ctgid;
	__u8 one = 1;

	if (!filter_tree)
		return 0;
	ptgid = BPF_CORE_READ(parent, tgid);
	if (!bpf_map_lookup_elem(&tree_tgids, &ptgid))
		return 0;
	ctgid = BPF_CORE_READ(child, tgid);
	bpf_map_update_elem(&tree_tgids, &ctgid, &one, BPF_ANY);
	// The child's feature slot, so that its scheduling state is kept from its first stint
	// even if it makes no syscall (the switch hook claims none while a tree is captured).
	mls_feat_sched_slot(BPF_CORE_READ(child, pid), true, &counters, MLS_CNT_FEAT_TAKEOVER);
	return 0;
}

SEC("raw_tp/sched_process_exit")
int BPF_PROG(mls_process_exit)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();

	mls_feat_forget(tid);
	return 0;
}
