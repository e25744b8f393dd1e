//go:build ignore

// SPDX-License-Identifier: GPL-2.0
// The mlsched sched_ext scheduler: a shared base queue (weighted virtual time, or a plain FIFO),
// plus, under the model policy, a decision for every wakeup whose previous CPU is busy: by the
// net in BPF at the wakeup (--infer kernel, decide_in_kernel below), or by a round trip to user
// space (--infer user):
//
//   enqueue(W), prev_cpu runs R -> event {W, prev_cpu, R, R's features, seq} on `events`,
//                                  W waits in PENDING_DSQ
//   dispatch(cpu)               -> drain decisions from `decisions` (user ring buffer) into the
//                                  pending tasks' storage, then move decided (and overdue)
//                                  tasks out of PENDING_DSQ: KEEP_LOCAL -> prev_cpu's local DSQ,
//                                  MIGRATE_IDLE -> an idle allowed CPU, FIFO -> the base
//                                  queue SHARED_DSQ
//   stopping(R)                 -> outcome {seq, voluntary, leave_ns}: the live label
//
// Waiting tasks always sit in a DSQ, never in BPF custody: if user space stalls, dispatch
// moves them to the base queue after pending_timeout_ns and a timer kicks idle CPUs to do it; if
// the machine stalls anyway the kernel's watchdog (timeout_ms) ejects the scheduler.
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

#include "features.h"
#include "net.h"
#include "compat.h"

char LICENSE[] SEC("license") = "GPL";

#define SHARED_DSQ 0
#define PENDING_DSQ 1
#define KEEP_DSQ(cpu) (2 + (u64)(cpu)) // --infer kernel: tasks the net kept on that CPU
#define SCAN_MAX 64   // pending tasks looked at per dispatch
#define DRAIN_MAX 128 // decisions read per dispatch

// Set by the loader before load.
const volatile u32 self_tgid = 0;
const volatile u64 slice_ns = 5000000;
const volatile u8 use_model = 0;                   // 0: --policy fifo or vtime, no events
const volatile u8 queue_vtime = 0;                 // SHARED_DSQ is ordered by weighted vtime
const volatile u64 pending_timeout_ns = 20000000;  // then the base queue without a decision
const volatile u64 timer_period_ns = 2000000;      // stall timer
const volatile u32 nr_cpus = 1;
const volatile u64 user_stall_ns = 0; // exit when tasks wait and no decision came for this long; 0: never
const volatile u8 infer_kernel = 0;     // the model policy decides in BPF with the net in `nets`
const volatile u64 keep_budget_ns = 1000000; // a kept task waits at most this long for its CPU
const volatile u32 score_mask = 7;           // --infer kernel: one decided sample in score_mask+1 is scored
const volatile u8 placement = MLS_PLACE_NET; // what decides in BPF (enum mls_placement)
const volatile u64 oncpu_ns = 1000000;       // MLS_PLACE_ONCPU: keep while R has run less than this
const volatile u8 shadow = 0;                // --shadow: the net decides and is scored, placement is the base queue's
const volatile u8 time_net = 0;              // --bpf-stats: time each evaluation of the net (MLS_SC_NET_NS)
const volatile u8 verdict_cache = 1;         // reuse R's verdict while R makes no syscall
const volatile u32 explore_thresh = 0;       // --explore: a scored decision is random when prandom < this

struct mls_exit_info exit_info;
u64 mls_seq;
u8 guard_fifo; // set by user space while the model guard holds the policy at the base queue
u64 nr_rx;         // decisions read, for the stall timer
u64 stall_rx_seen; // nr_rx at the stall timer's last tick
u64 stall_since_ns; // since when events wait unread and no decision is read (0: not stalled)
u64 vtime_now;      // the largest vtime of a task that started running (weighted ns)
u32 net_active;     // which slot of `nets` the wakeup path reads (user space flips it after a write)

enum task_state {
	TS_NONE = 0,
	TS_PENDING = 1, // in PENDING_DSQ, waiting for a decision
	TS_DECIDED = 2, // decision stored, to be applied at the next dispatch
};

struct task_ctx {
	u64 seq;
	u64 enq_ns;  // when it was queued for a decision, or kept (--infer kernel)
	u32 state;
	u16 cpu;
	u8 action;
	u8 _pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct task_ctx);
} task_ctxs SEC(".maps");

// What runs on each CPU, and the sample that names it.
struct cpu_state {
	struct mls_cpu_run run; // who runs here since when, and the pending sample (features.h)
	u64 exec_start;         // the running task's se.sum_exec_runtime when it started here
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MLS_MAX_CPUS); // resized by the loader
	__type(key, u32);
	__type(value, struct cpu_state);
} cpu_states SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 << 20); // resized by the loader
} events SEC(".maps");

// The net's kernel form (--infer kernel), two slots: user space writes the one not in use,
// then flips net_active, so the wakeup path never reads half of one.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, u32);
	__type(value, struct mls_net);
} nets SEC(".maps");

// Per CPU, --infer kernel: kept tasks it has run in a row ahead of the base queue (fairness to
// the base queue), and when it last looked for other CPUs' overdue kept tasks.
struct keep_state {
	u32 streak;
	u32 _pad;
	u64 scan_ns;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct keep_state);
} keep_states SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_USER_RINGBUF);
	__uint(max_entries, 1 << 20); // resized by the loader
} decisions SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MLS_SC_MAX);
	__type(key, u32);
	__type(value, u64);
} sched_counters SEC(".maps");

struct stall_timer {
	struct bpf_timer t;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct stall_timer);
} stall_timer SEC(".maps");

static __always_inline void count_add(u32 idx, u64 v)
{
	mls_count_add(&sched_counters, idx, v);
}

static __always_inline void count(u32 idx)
{
	count_add(idx, 1);
}

// An idle CPU dispatches only when kicked, so an overdue kept task on a busy CPU waits for the
// stall timer's kick unless another CPU dispatches first. While a keep queue holds a task the
// timer therefore fires when the oldest kept task's budget runs out (kept_oldest_ns), not on
// its long period, and kicks idle CPUs only if one is overdue. keep_timer_fast says the timer
// is so aimed: set when a task is kept (keep_timer_arm) and by the timer while keep queues hold
// tasks; cleared by the timer when they hold none.
static u32 keep_timer_fast;

// The shortest tick. After a kick that left a kept task overdue the next comes half a budget
// later: no idle CPU could take it, and the busy ones steal at their next dispatch anyway (at
// a 50 us tick, a machine whose CPUs are all busy spent its time in this timer).
#define KEEP_TICK_MIN_NS 50000ULL

static __always_inline u64 keep_tick_clamp(u64 t)
{
	if (t < KEEP_TICK_MIN_NS)
		t = KEEP_TICK_MIN_NS;
	if (t > timer_period_ns)
		t = timer_period_ns;
	return t;
}

// A task was just kept: if the timer is on its long period, make it fire when this task's
// budget runs out. Rare (once per spell of kept tasks; later ones queue behind it, and the
// timer re-aims at the oldest). See stall_timer_fn for the one race left.
static __always_inline void keep_timer_arm(void)
{
	struct stall_timer *st;
	u32 key = 0;

	if (keep_timer_fast)
		return;
	st = bpf_map_lookup_elem(&stall_timer, &key);
	if (!st)
		return;
	keep_timer_fast = 1;
	if (!bpf_timer_start(&st->t, keep_tick_clamp(keep_budget_ns), 0))
		count(MLS_SC_KEEP_TIMER);
}

static __always_inline struct cpu_state *cpu_state(s32 cpu)
{
	u32 key = cpu;

	return bpf_map_lookup_elem(&cpu_states, &key);
}

static __always_inline bool is_ours(const struct task_struct *p)
{
	return p->tgid == self_tgid;
}

// A task's lead over vtime_now is capped at this many slices: a low-weight task (nice 19 has
// weight 1 of 100) is charged 100x its run time, and uncapped it could wait for seconds behind
// CPU hogs, past the watchdog (see docs/SCHEDULER.md).
#define VTIME_LEAD_SLICES 8

// The vtime a task queues with: its own, but at most one slice behind the largest vtime of a
// running task, so that a long sleep earns at most one slice of credit over the tasks that ran
// meanwhile (the clamp is the queue's own slice, slice_ns: see docs/SCHEDULER.md), and at most
// VTIME_LEAD_SLICES ahead of it.
static __always_inline u64 queue_vtime_of(const struct task_struct *p)
{
	u64 vtime = p->scx.dsq_vtime, floor = vtime_now - slice_ns, ceiling = vtime_now + VTIME_LEAD_SLICES * slice_ns;

	if ((s64)(vtime - floor) < 0)
		vtime = floor;
	if ((s64)(vtime - ceiling) > 0)
		vtime = ceiling;
	return vtime;
}

// The base queue, in its own ordering (a DSQ that holds vtime-ordered tasks must never get a
// FIFO insert: the kernel ejects a scheduler that mixes them); wake an idle CPU to pull from it.
static __always_inline void enqueue_base(struct task_struct *p, u64 enq_flags)
{
	s32 cpu;

	if (queue_vtime)
		mls_dsq_insert_vtime(p, SHARED_DSQ, slice_ns, queue_vtime_of(p), enq_flags);
	else
		mls_dsq_insert(p, SHARED_DSQ, slice_ns, enq_flags);
	cpu = scx_bpf_pick_idle_cpu(p->cpus_ptr, 0);
	if (cpu >= 0)
		scx_bpf_kick_cpu(cpu, SCX_KICK_IDLE);
}

// Send the wake sample of W (waking while prev_cpu runs R, cs) to user space, named seq, and
// mark it pending on prev_cpu so that R's leaving reports its outcome. false: the ring is full.
static __always_inline bool send_sample(struct task_struct *p, s32 prev, struct cpu_state *cs, u64 now, u64 seq,
					u8 flags, u64 rb_flags)
{
	struct mls_wake *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);

	if (!e)
		return false;
	mls_wake_fill(e, &cs->run, MLS_EV_SCHED_WAKE, prev, p->pid, now, seq);
	e->flags = flags;
	e->nr_allowed = p->nr_cpus_allowed;
	bpf_ringbuf_submit(e, rb_flags);
	return true;
}

// The syscall part of R's hidden layer (the counts' lanes) from its cache (struct task_feat)
// into lane, if it is valid
// for R's current syscall count and net generation gen, and was not rewritten during the copy.
static __always_inline bool cached_counts(const struct task_feat *f, u64 gen, __u64 *lane)
{
	u32 mark = f->verdict_n;

	// mark 0 is "nothing cached" (or being rewritten), also when f->n + 1 wraps to 0.
	if (!mark || mark != f->n + 1 || f->verdict_gen != gen)
		return false;
	asm volatile("" ::: "memory");
#pragma unroll
	for (int p = 0; p < MLS_NET_PAIRS; p++)
		lane[p] = f->lanes[p];
	asm volatile("" ::: "memory");
	if (f->verdict_n != mark || f->verdict_gen != gen)
		return false;
	count(MLS_SC_KERNEL_CACHED);
	return true;
}

// The net's verdict on W behind R (cs), now: keep on prev_cpu (MLS_NET_KEEP), migrate
// (MLS_NET_MIGRATE) or no opinion (MLS_NET_ABSTAIN: inside the model's band); -1: no usable
// net. The syscall part of R's hidden layer is reused while R makes no syscall (its counts have
// not changed); R's scheduling state, which changes without syscalls, is added every time.
static __always_inline int net_verdict(struct cpu_state *cs, u64 now)
{
	u32 slot = net_active & 1;
	struct mls_net *net = bpf_map_lookup_elem(&nets, &slot);
	struct task_feat *f;
	struct mls_wake st;
	__u64 lane[MLS_NET_PAIRS];
	__u32 x[MLS_NUM_EXTRAS];
	u64 t0 = 0;
	int answer;
	u32 n;

	if (!net || !mls_net_usable(net))
		return -1;
	f = mls_feat_peek(cs->run.tid);
	if (time_net)
		t0 = bpf_ktime_get_ns();
	// R's state (with no slot: its on-CPU time, the rest unknown) and its counts' part (none).
	mls_state_fill(&st, f, cs->run.start_ns, now);
	mls_extras(&st, x);
	if (!f) {
#pragma unroll
		for (int p = 0; p < MLS_NET_PAIRS; p++)
			lane[p] = 0;
	} else if (!verdict_cache || !cached_counts(f, net->generation, lane)) {
		n = f->n; // before the net reads the state: R may make a syscall meanwhile
		mls_net_counts(net, f, lane);
		// Another CPU may be reading the cache (a wakeup on R's CPU from elsewhere): it is
		// marked invalid while the accumulators are rewritten, and cached_counts checks the
		// mark again after its copy (a sequence check; x86 keeps stores and loads in order).
		f->verdict_n = 0;
		asm volatile("" ::: "memory");
#pragma unroll
		for (int p = 0; p < MLS_NET_PAIRS; p++)
			f->lanes[p] = lane[p];
		f->verdict_gen = net->generation;
		asm volatile("" ::: "memory");
		f->verdict_n = n + 1;
	}
	answer = mls_net_decide(net, mls_net_finish(net, lane, x));
	if (time_net) {
		count_add(MLS_SC_NET_NS, bpf_ktime_get_ns() - t0);
		count(MLS_SC_NET_RUNS);
	}
	return answer;
}

// The placement's verdict on W behind R: the net's, or a fixed rule's (the yardsticks).
static __always_inline int verdict(struct cpu_state *cs, u64 now)
{
	switch (placement) {
	case MLS_PLACE_KEEP:
		return 1;
	case MLS_PLACE_MIGRATE:
		return 0;
	case MLS_PLACE_ONCPU:
		// R's start is read from another CPU: it may be newer than now (on-CPU time 0).
		return (s64)(now - cs->run.start_ns) < (s64)oncpu_ns;
	}
	return net_verdict(cs, now);
}

// Whether enqueue's decision seq on W is scored. select_cpu decides all but a random one in
// score_mask+1 of the wakeups it sees and leaves the rest to enqueue: those are scored, every
// one. A task allowed one CPU never passes select_cpu, and while the guard holds every wakeup
// comes here: one in score_mask+1 of those.
static __always_inline bool scored(const struct task_struct *p, u64 seq)
{
	if (p->nr_cpus_allowed > 1 && !guard_fifo)
		return true;
	return !(seq & score_mask);
}

// W wakes while prev_cpu runs R: decided in BPF, now (--infer kernel, or a fixed placement).
// Keep: W waits in prev_cpu's keep queue, which that CPU runs first, for at most keep_budget_ns
// (then any CPU may take it). Migrate: an idle CPU W may run on, else the base queue. Under
// --shadow or a tripped guard the verdict is only scored: W goes to the base queue. A sample of
// the decisions goes to user space, with the verdict, for scoring and the guard.
static __always_inline void decide_in_kernel(struct task_struct *p, u64 enq_flags, s32 prev, struct cpu_state *cs,
					     struct task_ctx *tctx)
{
	u64 now = bpf_ktime_get_ns(), seq;
	u8 flags = MLS_WAKE_NO_DECISION | MLS_WAKE_VERDICT;
	int v = verdict(cs, now);
	bool keep, want, sample;
	u32 cnt;
	s32 cpu;

	if (v < 0) {
		enqueue_base(p, enq_flags);
		count(MLS_SC_KERNEL_NO_NET);
		return;
	}
	keep = v == MLS_NET_KEEP;
	if (keep)
		flags |= MLS_WAKE_KEEP;
	seq = __sync_fetch_and_add(&mls_seq, 1) + 1;
	sample = scored(p, seq);
	if (v == MLS_NET_ABSTAIN) {
		// No opinion: the base queue's own placement; the sample still goes out (coverage).
		tctx->seq = seq;
		tctx->state = TS_NONE;
		enqueue_base(p, enq_flags);
		count(MLS_SC_ABSTAIN);
		if (sample && !send_sample(p, prev, cs, now, seq, flags | MLS_WAKE_ABSTAIN | MLS_WAKE_BASE, BPF_RB_NO_WAKEUP))
			count(MLS_SC_KERNEL_SAMPLE_DROP);
		return;
	}
	// --explore: a scored decision taken at random instead (marked), so that the outcomes the
	// model is judged and adapted by are not only those its own placements leave.
	if (sample && explore_thresh && !shadow && !guard_fifo && bpf_get_prandom_u32() < explore_thresh) {
		keep = bpf_get_prandom_u32() & 1;
		flags |= MLS_WAKE_EXPLORE;
		count(MLS_SC_EXPLORE);
	}
	want = keep;
	// W's affinity overrides the verdict: a task allowed one CPU stays, and one whose CPU is no
	// longer allowed to it (affinity changed since it ran there) cannot be kept.
	if (!keep && p->nr_cpus_allowed == 1)
		keep = true;
	else if (keep && !bpf_cpumask_test_cpu(prev, p->cpus_ptr))
		keep = false;
	tctx->seq = seq;
	tctx->enq_ns = now;
	tctx->state = TS_NONE;
	if (shadow || guard_fifo) {
		enqueue_base(p, enq_flags);
		flags |= MLS_WAKE_BASE;
		cnt = shadow ? MLS_SC_SHADOW : MLS_SC_GUARD_FIFO;
	} else if (keep) {
		mls_dsq_insert(p, KEEP_DSQ(prev), slice_ns, enq_flags);
		keep_timer_arm();
		flags |= MLS_WAKE_ACT_KEEP;
		cnt = MLS_SC_KERNEL_KEEP;
	} else if ((cpu = scx_bpf_pick_idle_cpu(p->cpus_ptr, 0)) >= 0) {
		mls_dsq_insert(p, SCX_DSQ_LOCAL_ON | cpu, slice_ns, enq_flags);
		scx_bpf_kick_cpu(cpu, SCX_KICK_IDLE);
		cnt = MLS_SC_KERNEL_MIGRATE;
	} else {
		enqueue_base(p, enq_flags);
		flags |= MLS_WAKE_BASE;
		cnt = MLS_SC_KERNEL_NO_IDLE;
	}
	count(cnt);
	if (keep != want && !(flags & MLS_WAKE_BASE))
		count(MLS_SC_KERNEL_FORCED);
	// enqueue runs under prev_cpu's runqueue lock, as R's stopping() does: sending after placing
	// W still marks the sample before R can leave. The sample goes without waking user space
	// (it polls): the loop is not in the decision path.
	if (sample && !send_sample(p, prev, cs, now, seq, flags, BPF_RB_NO_WAKEUP))
		count(MLS_SC_KERNEL_SAMPLE_DROP);
}

// --infer kernel or a fixed placement, W's previous CPU busy: the placement decides here, on
// the waker's CPU, for the wakeups that are not scored (all but one in score_mask+1, at random),
// and ops.enqueue is skipped: keep inserts W into prev_cpu's keep queue; migrate claims an idle
// CPU and inserts W into its local queue (no cross-CPU insert at enqueue), or with none left the
// base queue. A scored wakeup (and the guard, --shadow, no usable net, an affinity that excludes
// prev_cpu) goes on to enqueue, which decides under prev_cpu's runqueue lock: the sample an
// outcome is scored against must be marked before R can leave, and only that lock orders it
// with R's stopping(). false: enqueue decides.
static __always_inline bool decide_at_select(struct task_struct *p, s32 prev, u64 wake_flags, s32 *cpu)
{
	struct cpu_state *cs;
	struct task_ctx *tctx;
	u64 now;
	int v;

	// Only a wakeup (select_cpu also places forks and execs: enqueue sends those to the base queue).
	if (!(wake_flags & SCX_WAKE_TTWU) || !infer_kernel || shadow || guard_fifo || !(bpf_get_prandom_u32() & score_mask))
		return false;
	cs = cpu_state(prev);
	if (!cs || !cs->run.tid || cs->run.tgid == self_tgid || cs->run.tid == p->pid)
		return false;
	now = bpf_ktime_get_ns();
	v = verdict(cs, now);
	if (v < 0 || (v == MLS_NET_KEEP && !bpf_cpumask_test_cpu(prev, p->cpus_ptr)))
		return false;
	if (v == MLS_NET_ABSTAIN) {
		// No opinion: the base queue's own placement (an idle CPU, else the queue).
		if ((*cpu = scx_bpf_pick_idle_cpu(p->cpus_ptr, 0)) >= 0) {
			mls_dsq_insert(p, SCX_DSQ_LOCAL, slice_ns, 0);
		} else {
			enqueue_base(p, 0);
			*cpu = prev;
		}
		count(MLS_SC_SELECT_ABSTAIN);
	} else if (v) {
		tctx = bpf_task_storage_get(&task_ctxs, p, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
		if (!tctx)
			return false;
		tctx->seq = 0;
		tctx->enq_ns = now; // the keep budget runs from here
		tctx->state = TS_NONE;
		mls_dsq_insert(p, KEEP_DSQ(prev), slice_ns, 0);
		keep_timer_arm();
		count(MLS_SC_SELECT_KEEP);
		*cpu = prev;
	} else if ((*cpu = scx_bpf_pick_idle_cpu(p->cpus_ptr, 0)) >= 0) {
		mls_dsq_insert(p, SCX_DSQ_LOCAL, slice_ns, 0);
		count(MLS_SC_SELECT_MIGRATE);
	} else {
		enqueue_base(p, 0);
		count(MLS_SC_SELECT_NO_IDLE);
		*cpu = prev;
	}
	count(MLS_SC_BUSY_PREV);
	return true;
}

SEC("struct_ops/mls_select_cpu")
s32 BPF_PROG(mls_select_cpu, struct task_struct *p, s32 prev_cpu, u64 wake_flags)
{
	bool is_idle = false;
	s32 cpu;

	if (is_ours(p) || !use_model) {
		cpu = scx_bpf_select_cpu_dfl(p, prev_cpu, wake_flags, &is_idle);
		if (is_idle) {
			mls_dsq_insert(p, SCX_DSQ_LOCAL, slice_ns, 0);
			count(MLS_SC_SELECT_DIRECT);
		}
		return cpu;
	}
	// The model's question only exists when prev_cpu is busy. W's affinity may have changed
	// while it slept: claim prev_cpu's idle bit only if W may run there (else the core would
	// place W elsewhere and prev_cpu would stay idle but unmarked).
	if (bpf_cpumask_test_cpu(prev_cpu, p->cpus_ptr) && scx_bpf_test_and_clear_cpu_idle(prev_cpu)) {
		mls_dsq_insert(p, SCX_DSQ_LOCAL, slice_ns, 0);
		count(MLS_SC_SELECT_DIRECT);
		return prev_cpu;
	}
	if (decide_at_select(p, prev_cpu, wake_flags, &cpu))
		return cpu;
	return prev_cpu;
}

// Another CPU's kept task that has waited past the budget, moved to this CPU; false if none.
// Each CPU looks at most four times per budget (the scan costs a queue count per CPU), and
// the timer kicks idle CPUs every half budget while one stays overdue: an overdue task waits
// at most about half a budget more.
static __always_inline bool steal_overdue(s32 self, struct keep_state *ks)
{
	struct bpf_iter_scx_dsq it;
	struct task_struct *p;
	struct task_ctx *tctx;
	u64 now = bpf_ktime_get_ns();
	bool moved = false;

	if (now - ks->scan_ns < keep_budget_ns / 4)
		return false;
	ks->scan_ns = now;
	for (u32 c = 0; c < MLS_MAX_CPUS && !moved; c++) {
		if (c >= nr_cpus)
			break;
		if (c == (u32)self || scx_bpf_dsq_nr_queued(KEEP_DSQ(c)) == 0)
			continue;
		// The oldest first (the queue is FIFO): the first overdue task this CPU may run.
		bpf_iter_scx_dsq_new(&it, KEEP_DSQ(c), 0);
		for (int i = 0; i < 8 && !moved; i++) {
			p = bpf_iter_scx_dsq_next(&it);
			if (!p)
				break;
			if (!bpf_cpumask_test_cpu(self, p->cpus_ptr))
				continue;
			tctx = bpf_task_storage_get(&task_ctxs, p, 0, 0);
			// Signed: a task kept on c after this scan read the clock has enq_ns > now.
			if (tctx && (s64)(now - tctx->enq_ns) < (s64)keep_budget_ns)
				break; // the rest came later
			if (mls_dsq_move(&it, p, SCX_DSQ_LOCAL, 0)) {
				count(MLS_SC_KEEP_STOLEN);
				moved = true;
			}
		}
		bpf_iter_scx_dsq_destroy(&it);
	}
	return moved;
}

// --infer kernel: this CPU's kept tasks first (they wait for it, cache-warm), but after 4 in a
// row the base queue goes first once, so kept tasks never starve it.
static __always_inline bool dispatch_kept(s32 cpu, struct keep_state *ks)
{
	if (ks->streak >= 4 && scx_bpf_dsq_nr_queued(SHARED_DSQ) > 0) {
		ks->streak = 0;
		return false;
	}
	if (mls_dsq_move_to_local(KEEP_DSQ(cpu))) {
		ks->streak++;
		return true;
	}
	ks->streak = 0;
	return false;
}

SEC("struct_ops/mls_enqueue")
void BPF_PROG(mls_enqueue, struct task_struct *p, u64 enq_flags)
{
	struct cpu_state *cs;
	struct task_ctx *tctx;
	u64 now, seq;
	u8 guard;
	s32 prev;

	count(MLS_SC_ENQUEUE);
	// mlsched never waits behind the tasks it schedules: a waking thread of ours goes first,
	// preempting. One whose slice ran out queues behind the others, so that a busy thread of
	// ours cannot starve its CPU.
	if (is_ours(p)) {
		if (enq_flags & SCX_ENQ_WAKEUP)
			enq_flags |= SCX_ENQ_HEAD | SCX_ENQ_PREEMPT;
		mls_dsq_insert(p, SCX_DSQ_LOCAL, slice_ns, enq_flags);
		count(MLS_SC_OURS);
		return;
	}
	if ((p->flags & PF_KTHREAD) && p->nr_cpus_allowed == 1) {
		mls_dsq_insert(p, SCX_DSQ_LOCAL, slice_ns, enq_flags);
		count(MLS_SC_KTHREAD);
		return;
	}
	if (!use_model) {
		enqueue_base(p, enq_flags);
		count(queue_vtime ? MLS_SC_VTIME_POLICY : MLS_SC_FIFO_POLICY);
		return;
	}
	if (!(enq_flags & SCX_ENQ_WAKEUP)) {
		enqueue_base(p, enq_flags);
		count(MLS_SC_REENQ);
		return;
	}
	prev = scx_bpf_task_cpu(p);
	cs = cpu_state(prev);
	if (!cs || !cs->run.tid || cs->run.tgid == self_tgid || cs->run.tid == p->pid) {
		enqueue_base(p, enq_flags);
		count(MLS_SC_NO_RUNNING);
		return;
	}
	count(MLS_SC_BUSY_PREV);
	tctx = bpf_task_storage_get(&task_ctxs, p, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!tctx) {
		enqueue_base(p, enq_flags);
		count(MLS_SC_NO_CTX);
		return;
	}
	if (infer_kernel) {
		decide_in_kernel(p, enq_flags, prev, cs, tctx);
		return;
	}
	now = bpf_ktime_get_ns();
	seq = __sync_fetch_and_add(&mls_seq, 1) + 1;
	tctx->seq = seq;
	tctx->enq_ns = now;
	// Read once: user space may flip it meanwhile, and W's state, its event's flag and its
	// queue must agree.
	guard = *(volatile u8 *)&guard_fifo;
	// Pending before the event goes out: a decision may come back before W is in PENDING_DSQ
	// (it is stored, and applied when a scan finds W there).
	tctx->state = guard ? TS_NONE : TS_PENDING;
	if (!send_sample(p, prev, cs, now, seq, guard ? MLS_WAKE_NO_DECISION : 0, 0)) {
		tctx->state = TS_NONE;
		enqueue_base(p, enq_flags);
		count(MLS_SC_RING_FULL);
		return;
	}
	if (guard) {
		// The model guard tripped: the base queue without a round trip, but the event still
		// goes out so that user space keeps scoring the model and can switch back.
		enqueue_base(p, enq_flags);
		count(MLS_SC_GUARD_FIFO);
		return;
	}
	mls_dsq_insert(p, PENDING_DSQ, slice_ns, enq_flags);
	count(MLS_SC_EVENT);
}

struct drain_ctx {
	int n;
};

// One decision from user space: store it in the task's context if it still applies.
static long store_decision(struct bpf_dynptr *dp, void *data)
{
	struct drain_ctx *dc = data;
	struct mls_decision d;
	struct task_struct *p;
	struct task_ctx *tctx;

	dc->n++;
	__sync_fetch_and_add(&nr_rx, 1);
	if (bpf_dynptr_read(&d, sizeof(d), dp, 0, 0)) {
		count(MLS_SC_DEC_BAD);
		return 0;
	}
	count(MLS_SC_DEC_RX);
	p = bpf_task_from_pid(d.w_tid);
	if (!p) {
		count(MLS_SC_DEC_GONE);
		return dc->n >= DRAIN_MAX;
	}
	tctx = bpf_task_storage_get(&task_ctxs, p, 0, 0);
	if (tctx && tctx->seq == d.seq && tctx->state == TS_PENDING) {
		tctx->action = d.action;
		tctx->cpu = d.cpu;
		tctx->state = TS_DECIDED;
	} else {
		count(MLS_SC_DEC_STALE);
	}
	bpf_task_release(p);
	return dc->n >= DRAIN_MAX;
}

// Move one pending task where its decision says; false if it stays pending.
static __always_inline bool apply(struct bpf_iter_scx_dsq *it, struct task_struct *p, u64 now)
{
	struct task_ctx *tctx = bpf_task_storage_get(&task_ctxs, p, 0, 0);
	u64 dsq = SHARED_DSQ;
	u32 cnt = MLS_SC_FIFO;
	s32 kick = -1;
	u64 rtt = 0, seq;
	bool moved;

	if (!tctx) {
		cnt = MLS_SC_APPLY_NO_CTX;
	} else if (tctx->state == TS_DECIDED) {
		rtt = (s64)(now - tctx->enq_ns) > 0 ? now - tctx->enq_ns : 0;
		if (tctx->action == MLS_ACT_KEEP_LOCAL) {
			if (tctx->cpu < nr_cpus && bpf_cpumask_test_cpu(tctx->cpu, p->cpus_ptr)) {
				dsq = SCX_DSQ_LOCAL_ON | tctx->cpu;
				cnt = MLS_SC_KEEP;
			} else {
				cnt = MLS_SC_BAD_CPU;
			}
		} else if (tctx->action == MLS_ACT_MIGRATE_IDLE) {
			kick = scx_bpf_pick_idle_cpu(p->cpus_ptr, 0);
			if (kick >= 0) {
				dsq = SCX_DSQ_LOCAL_ON | kick;
				cnt = MLS_SC_MIGRATE;
			} else {
				cnt = MLS_SC_NO_IDLE;
			}
		}
	} else if (tctx->state == TS_PENDING) {
		// Signed: W may have been enqueued by another CPU after now was read.
		if ((s64)(now - tctx->enq_ns) < (s64)pending_timeout_ns)
			return false;
		cnt = MLS_SC_TIMEOUT;
	} else {
		// In PENDING_DSQ without a pending state: a race with a concurrent apply cleared it.
		// Never leave a task there: the base queue.
		cnt = MLS_SC_ORPHAN;
	}
	seq = tctx ? tctx->seq : 0;
	// Fails when the task left PENDING_DSQ meanwhile (moved by another CPU, dequeued) or was
	// enqueued again after the iteration started: then it is not ours to move now.
	if (dsq == SHARED_DSQ && queue_vtime)
		moved = mls_dsq_move_vtime(it, p, SHARED_DSQ, queue_vtime_of(p));
	else
		moved = mls_dsq_move(it, p, dsq, 0);
	if (!moved) {
		count(MLS_SC_MOVE_FAIL);
		return true;
	}
	// Only the instance we moved: the task may already be queued again with a new seq.
	if (tctx && tctx->seq == seq)
		tctx->state = TS_NONE;
	// Into the base queue (a timeout, fifo, no idle CPU, an orphan): an idle CPU takes it
	// now, as enqueue_base would, rather than at whichever CPU dispatches next.
	if (dsq == SHARED_DSQ)
		kick = scx_bpf_pick_idle_cpu(p->cpus_ptr, 0);
	if (kick >= 0)
		scx_bpf_kick_cpu(kick, SCX_KICK_IDLE);
	count(cnt);
	if (rtt)
		count_add(MLS_SC_RTT_NS, rtt);
	return true;
}

// Read decisions, then move decided and overdue tasks out of PENDING_DSQ. A syscall program
// must hold the RCU read lock to iterate a DSQ; ops.dispatch already runs under it.
static __always_inline void apply_decisions(bool rcu)
{
	struct drain_ctx dc = {};
	struct bpf_iter_scx_dsq it;
	struct task_struct *p;
	u64 now;
	long n;

	n = bpf_user_ringbuf_drain(&decisions, store_decision, &dc, 0);
	now = bpf_ktime_get_ns(); // after the drain, which may take microseconds
	if (n == -16 /* EBUSY */)
		count(MLS_SC_DRAIN_BUSY);
	else if (n < 0)
		count(MLS_SC_DRAIN_ERR);
	if (rcu)
		bpf_rcu_read_lock();
	if (scx_bpf_dsq_nr_queued(PENDING_DSQ) > 0) {
		bpf_iter_scx_dsq_new(&it, PENDING_DSQ, 0);
		for (int i = 0; i < SCAN_MAX; i++) {
			p = bpf_iter_scx_dsq_next(&it);
			if (!p)
				break;
			apply(&it, p, now);
		}
		bpf_iter_scx_dsq_destroy(&it);
	}
	if (rcu)
		bpf_rcu_read_unlock();
}

SEC("struct_ops/mls_dispatch")
void BPF_PROG(mls_dispatch, s32 cpu, struct task_struct *prev)
{
	count(MLS_SC_DISPATCH);
	if (use_model && infer_kernel) {
		u32 zero = 0;
		struct keep_state *ks = bpf_map_lookup_elem(&keep_states, &zero);

		// Overdue kept tasks of other CPUs before the base queue: a CPU busy with the base
		// queue must still take them, or they would wait for the watchdog.
		if (ks && (dispatch_kept(cpu, ks) || steal_overdue(cpu, ks)))
			return;
		if (!mls_dsq_move_to_local(SHARED_DSQ))
			mls_dsq_move_to_local(KEEP_DSQ(cpu));
		return;
	}
	if (use_model)
		apply_decisions(false);
	mls_dsq_move_to_local(SHARED_DSQ);
}

// Run by user space (BPF_PROG_TEST_RUN) after it writes a batch of decisions: applies them
// now instead of at the next ops.dispatch, which on busy CPUs can be a slice away.
SEC("syscall")
int mls_apply(void *ctx)
{
	count(MLS_SC_APPLY_RUN);
	apply_decisions(true);
	return 0;
}

SEC("struct_ops/mls_running")
void BPF_PROG(mls_running, struct task_struct *p)
{
	struct cpu_state *cs = cpu_state(bpf_get_smp_processor_id());
	u64 now = bpf_ktime_get_ns();

	if (!cs)
		return;
	mls_run_start(&cs->run, p->pid, p->tgid, now);
	mls_on_stint_start(p->pid, now, true, &sched_counters, MLS_SC_FEAT_TAKEOVER);
	if (queue_vtime) {
		cs->exec_start = p->se.sum_exec_runtime;
		if ((s64)(p->scx.dsq_vtime - vtime_now) > 0)
			vtime_now = p->scx.dsq_vtime;
	}
}

SEC("struct_ops/mls_stopping")
void BPF_PROG(mls_stopping, struct task_struct *p, bool runnable)
{
	struct cpu_state *cs = cpu_state(bpf_get_smp_processor_id());
	struct mls_sched_outcome *o;
	u64 now;

	if (!cs)
		return;
	// Weighted vtime: the run time since running() (the kernel's own account of it, which
	// sched_ext updates before calling stopping), x 100 / weight.
	if (queue_vtime && cs->run.tid == p->pid && p->scx.weight)
		mls_set_dsq_vtime(p, p->scx.dsq_vtime + (p->se.sum_exec_runtime - cs->exec_start) * 100 / p->scx.weight);
	now = bpf_ktime_get_ns();
	// The stint's end: p's scheduling state (features.h), as the capture's switch hook keeps it.
	if (cs->run.tid == p->pid)
		mls_on_stint_end(p->pid, cs->run.start_ns, now, mls_left_voluntarily(runnable, cs->run.yielding), true,
				 &sched_counters, MLS_SC_FEAT_TAKEOVER);
	cs->run.tid = 0;
	if (!mls_run_take_sample(&cs->run, p->pid))
		return;
	o = bpf_ringbuf_reserve(&events, sizeof(*o), 0);
	if (!o) {
		count(MLS_SC_OUTCOME_DROP);
	} else {
		o->type = MLS_EV_SCHED_OUTCOME;
		// stopping() says whether p stays runnable (preempted, out of slice or yielding).
		o->voluntary = mls_left_voluntarily(runnable, cs->run.yielding);
		o->cpu = bpf_get_smp_processor_id();
		o->r_tid = p->pid;
		o->seq = cs->run.sample_seq;
		o->leave_ns = now > cs->run.sample_ns ? now - cs->run.sample_ns : 0;
		o->ts_ns = now;
		bpf_ringbuf_submit(o, infer_kernel ? BPF_RB_NO_WAKEUP : 0);
		count(MLS_SC_OUTCOME);
	}
}

// A new task starts at the largest vtime of a running task: no credit, no debt.
SEC("struct_ops/mls_enable")
void BPF_PROG(mls_enable, struct task_struct *p)
{
	mls_set_dsq_vtime(p, vtime_now);
}

SEC("struct_ops/mls_exit_task")
void BPF_PROG(mls_exit_task, struct task_struct *p, struct scx_exit_task_args *args)
{
	u32 tid = p->pid;

	mls_feat_forget(tid);
}

// When the oldest task in any keep queue was kept (each queue is FIFO: its head), or 0 if they
// are all empty. A head without task storage counts as kept long ago (it may be overdue).
static __always_inline u64 kept_oldest_ns(void)
{
	struct bpf_iter_scx_dsq it;
	struct task_struct *p;
	struct task_ctx *tctx;
	u64 oldest = 0, t;

	for (u32 c = 0; c < MLS_MAX_CPUS; c++) {
		if (c >= nr_cpus)
			break;
		if (scx_bpf_dsq_nr_queued(KEEP_DSQ(c)) == 0)
			continue;
		t = 1;
		bpf_iter_scx_dsq_new(&it, KEEP_DSQ(c), 0);
		p = bpf_iter_scx_dsq_next(&it);
		if (p) {
			tctx = bpf_task_storage_get(&task_ctxs, p, 0, 0);
			if (tctx && tctx->enq_ns)
				t = tctx->enq_ns;
		}
		bpf_iter_scx_dsq_destroy(&it);
		if (!p)
			continue; // emptied meanwhile
		if (!oldest || t < oldest)
			oldest = t;
	}
	return oldest;
}

// Kicks idle CPUs while tasks wait for decisions, so that a stalled user space still ends in
// the base queue (idle CPUs call dispatch only when kicked).
static char stall_fmt[] = "user space stalled: events unread and no decision for %llu ms";

static int stall_timer_fn(void *map, int *key, struct bpf_timer *timer)
{
	u64 rx = nr_rx, now = bpf_ktime_get_ns(), oldest, due, next = timer_period_ns;
	bool overdue = false;

	// Stalled: events wait unread and no decision came since the last tick.
	if (rx == stall_rx_seen && bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) > 0) {
		if (!stall_since_ns)
			stall_since_ns = now;
	} else {
		stall_since_ns = 0;
	}
	stall_rx_seen = rx;
	// (With the net in BPF nothing waits for user space: its events are only scored.)
	if (!infer_kernel && user_stall_ns && stall_since_ns && now - stall_since_ns >= user_stall_ns) {
		u64 arg[1] = { (now - stall_since_ns) / 1000000 };

		scx_bpf_exit_bstr(0, stall_fmt, arg, sizeof(arg));
		return 0;
	}
	// Cleared before the keep queues are looked at: a task kept from here on re-arms the timer.
	keep_timer_fast = 0;
	// The DSQ iterator needs an RCU read-side section; a timer armed by the sleepable init
	// was taken for sleepable by verifiers before the 2025 fix (in_sleepable()), so say it.
	oldest = 0;
	if (infer_kernel) {
		bpf_rcu_read_lock();
		oldest = kept_oldest_ns();
		bpf_rcu_read_unlock();
	}
	if (oldest) {
		keep_timer_fast = 1;
		due = oldest + keep_budget_ns;
		overdue = now >= due;
		next = keep_tick_clamp(overdue ? keep_budget_ns / 2 : due - now);
	}
	if (scx_bpf_dsq_nr_queued(PENDING_DSQ) > 0 || overdue) {
		for (u32 cpu = 0; cpu < MLS_MAX_CPUS; cpu++) {
			if (cpu >= nr_cpus)
				break;
			scx_bpf_kick_cpu(cpu, SCX_KICK_IDLE);
		}
		count(MLS_SC_TIMER_KICK);
	}
	bpf_timer_start(timer, next, 0);
	// A task kept while this ran, whose keep_timer_arm found the flag cleared and set it: its
	// start may have come before the one above, which would undo it. (One kept just before
	// the flag was cleared, and not yet in its queue when the queues were looked at, still
	// waits for the long period: a window of the enqueue's own length.)
	if (!oldest && keep_timer_fast)
		bpf_timer_start(timer, keep_tick_clamp(keep_budget_ns), 0);
	return 0;
}

SEC("struct_ops.s/mls_init")
s32 BPF_PROG(mls_init)
{
	struct stall_timer *st;
	u32 key = 0;
	s32 err;

	err = scx_bpf_create_dsq(SHARED_DSQ, -1);
	if (err)
		return err;
	if (!use_model)
		return 0;
	err = scx_bpf_create_dsq(PENDING_DSQ, -1);
	if (err)
		return err;
	for (u32 c = 0; c < MLS_MAX_CPUS && infer_kernel; c++) {
		if (c >= nr_cpus)
			break;
		err = scx_bpf_create_dsq(KEEP_DSQ(c), -1);
		if (err)
			return err;
	}
	st = bpf_map_lookup_elem(&stall_timer, &key);
	if (!st)
		return -2;
	bpf_timer_init(&st->t, &stall_timer, 1 /* CLOCK_MONOTONIC */);
	bpf_timer_set_callback(&st->t, stall_timer_fn);
	return bpf_timer_start(&st->t, timer_period_ns, 0);
}

SEC("struct_ops/mls_exit")
void BPF_PROG(mls_exit, struct scx_exit_info *ei)
{
	bpf_probe_read_kernel_str(exit_info.reason, sizeof(exit_info.reason), ei->reason);
	bpf_probe_read_kernel_str(exit_info.msg, sizeof(exit_info.msg), ei->msg);
	exit_info.exit_code = ei->exit_code;
	exit_info.exit_cpu = ei->exit_cpu;
	asm volatile("" ::: "memory"); // kind last: stores are ordered on x86; a reader sees kind != 0 only after the rest
	exit_info.kind = ei->kind;
}

// Features of every task but ours, by the capture probes' pipeline (features.h).
SEC("raw_tp/sys_enter")
int BPF_PROG(mls_sched_sys_enter, struct pt_regs *regs, long id)
{
	u64 pid_tgid = bpf_get_current_pid_tgid();

	if ((pid_tgid >> 32) == self_tgid)
		return 0;
	mls_on_sys_enter(&cpu_states, &sched_counters, MLS_SC_FEAT_TAKEOVER, (u32)pid_tgid, id);
	return 0;
}

SEC(".struct_ops.link")
struct sched_ext_ops mlsched_ops = {
	.select_cpu = (void *)mls_select_cpu,
	.enqueue = (void *)mls_enqueue,
	.dispatch = (void *)mls_dispatch,
	.running = (void *)mls_running,
	.stopping = (void *)mls_stopping,
	.enable = (void *)mls_enable,
	.exit_task = (void *)mls_exit_task,
	.init = (void *)mls_init,
	.exit = (void *)mls_exit,
	.timeout_ms = 5000, // set by the loader
	.name = "mlsched",
};
