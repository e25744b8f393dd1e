//go:build ignore

// SPDX-License-Identifier: GPL-2.0
// Programs for tests and benchmarks only, never attached by mlsched itself:
//  - mls_test_decay runs the real feature code (features.h) under BPF_PROG_TEST_RUN so that
//    the Go mirror can be checked against it;
//  - mls_bench_empty is the floor of a sys_enter hook: enabling the tracepoint, no work;
//  - mls_bench_naive is the obvious hook (task storage lookup + one counter), for scale.
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "features.h"
#include "net.h"

char LICENSE[] SEC("license") = "GPL";

#define MLS_TEST_MAX_NRS 512

// Inputs and outputs of mls_test_decay, set and read from Go through the .bss map.
__u32 test_nrs[MLS_TEST_MAX_NRS];
__u32 test_count;
struct task_feat test_state;
__u32 test_out[MLS_NUM_BUCKETS];
__u32 test_sparse[MLS_NUM_BUCKETS]; // mls_feat_snapshot_sparse's output
__u64 test_sparse_mask;
__u32 test_sparse_n;

static long test_step(__u32 i, void *ctx)
{
	if (i >= test_count || i >= MLS_TEST_MAX_NRS)
		return 1;
	// Hide i from the compiler so the mask stays: the verifier needs it to bound the index.
	asm volatile("" : "+r"(i));
	mls_feat_syscall(&test_state, test_nrs[i & (MLS_TEST_MAX_NRS - 1)]);
	return 0;
}

SEC("syscall")
int mls_test_decay(void *ctx)
{
	// bpf_loop keeps verification linear in the body, not in the iteration count.
	bpf_loop(MLS_TEST_MAX_NRS, test_step, NULL, 0);
	mls_feat_snapshot(&test_state, test_out);
	test_sparse_n = mls_feat_snapshot_sparse(&test_state, test_sparse, &test_sparse_mask);
	return 0;
}

SEC("raw_tp/sys_enter")
int mls_bench_empty(void *ctx)
{
	return 0;
}

// With mls_bench_empty, the floor of the capture design: its three tracepoints enabled, no work.
SEC("raw_tp/sched_switch")
int mls_bench_empty_switch(void *ctx)
{
	return 0;
}

SEC("raw_tp/sched_waking")
int mls_bench_empty_waking(void *ctx)
{
	return 0;
}

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, __u64);
} naive_store SEC(".maps");

SEC("raw_tp/sys_enter")
int mls_bench_naive(void *ctx)
{
	struct task_struct *t = bpf_get_current_task_btf();
	__u64 *v = bpf_task_storage_get(&naive_store, t, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);

	if (v)
		*v += 1;
	return 0;
}

// Experiments: the cost of finding a task's state by tid.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, __u64);
} exp_hash SEC(".maps");

SEC("raw_tp/sys_enter")
int mls_bench_hash(void *ctx)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	__u64 *v = bpf_map_lookup_elem(&exp_hash, &tid);
	__u64 one = 1;

	if (v)
		*v += 1;
	else
		bpf_map_update_elem(&exp_hash, &tid, &one, BPF_NOEXIST);
	return 0;
}

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, __u64);
} exp_array SEC(".maps");

SEC("raw_tp/sys_enter")
int mls_bench_array(void *ctx)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid() & 0xffff;
	__u64 *v = bpf_map_lookup_elem(&exp_array, &tid);

	if (v)
		*v += 1;
	return 0;
}

// Experiments: the cost of the building blocks of the switch and wakeup hooks, one per
// program, each on sys_enter (BenchmarkHookBlocks).
volatile __u64 exp_sink;

SEC("raw_tp/sys_enter")
int mls_bench_ktime(void *ctx)
{
	exp_sink = bpf_ktime_get_ns();
	return 0;
}

SEC("raw_tp/sys_enter")
int mls_bench_probe_read(void *ctx)
{
	// 8 bytes of the current task_struct (its first field): the cost of the read, without
	// naming the struct, whose pointee types clang emits in a path-dependent order.
	__u64 v = 0;

	bpf_probe_read_kernel(&v, sizeof(v), (void *)bpf_get_current_task());
	exp_sink = v;
	return 0;
}

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} exp_ring SEC(".maps");

SEC("raw_tp/sys_enter")
int mls_bench_ringbuf(void *ctx)
{
	__u64 *e = bpf_ringbuf_reserve(&exp_ring, 320, 0);

	if (e) {
		e[0] = 1;
		bpf_ringbuf_discard(e, BPF_RB_NO_WAKEUP);
	}
	return 0;
}

// mls_test_voluntary applies the label's voluntary-leave rule (features.h), the one both the
// capture probes and the scheduler call, to switches described by their facts.
#define MLS_TEST_MAX_SWITCHES 64
struct test_switch {
	__u8 runnable;
	__u8 yielding;
	__u8 voluntary; // out
	__u8 _pad;
};
struct test_switch test_switches[MLS_TEST_MAX_SWITCHES];
__u32 test_nswitches;

SEC("syscall")
int mls_test_voluntary(void *ctx)
{
	for (__u32 i = 0; i < MLS_TEST_MAX_SWITCHES; i++) {
		struct test_switch *t = &test_switches[i];

		if (i >= test_nswitches)
			break;
		t->voluntary = mls_left_voluntarily(t->runnable, t->yielding);
	}
	return 0;
}

// mls_test_net evaluates the net in test_net_map (model.KernelForm.MarshalBinary's image) on
// the task state test_net_feat, as the scheduler would (net.h), and returns 2 for a record it
// cannot use; mls_bench_net is the same in an
// XDP program, which BPF_PROG_TEST_RUN repeats (it refuses Repeat for syscall programs), and
// mls_bench_net_empty its floor: the same lookups, no net.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct mls_net);
} test_net_map SEC(".maps");

struct task_feat test_net_feat;
struct mls_wake test_net_state; // R's scheduling state: the extras' r_* fields
__s64 test_net_logit;
__u32 test_net_keep;

static __always_inline int test_net_run(void)
{
	__u32 zero = 0;
	struct mls_net *net = bpf_map_lookup_elem(&test_net_map, &zero);
	__u32 x[MLS_NUM_EXTRAS];
	__s64 logit;

	if (!net)
		return 1;
	if (!mls_net_usable(net))
		return 2;
	mls_extras(&test_net_state, x);
	logit = mls_net_logit(net, &test_net_feat, x);
	test_net_logit = logit;
	test_net_keep = mls_net_decide(net, logit);
	return 0;
}

SEC("syscall")
int mls_test_net(void *ctx)
{
	return test_net_run();
}

SEC("xdp")
int mls_bench_net(struct xdp_md *ctx)
{
	return test_net_run() ? XDP_ABORTED : XDP_PASS;
}

SEC("xdp")
int mls_bench_net_empty(struct xdp_md *ctx)
{
	__u32 zero = 0;
	struct mls_net *net = bpf_map_lookup_elem(&test_net_map, &zero);

	if (!net)
		return XDP_ABORTED;
	test_net_logit = test_net_feat.mask;
	test_net_keep = net->bound;
	return XDP_PASS;
}

// One whole decision of the wakeup path, as the scheduler takes it: the net (test_net_map) and
// R's feature slot (task_feat_slots, features.h) found by R's tid test_dec_tid, the used
// buckets decayed and the net evaluated on them (net.h), the logit compared with the bound.
// mls_test_decision checks it (a syscall program), mls_bench_decision times it (XDP, which
// BPF_PROG_TEST_RUN repeats) over its floor mls_bench_xdp_empty: returns 2 for a record it
// cannot use, 3 for a tid with no slot.
__u32 test_dec_tid;
__u64 test_dec_start, test_dec_now; // R's switch-in and the wakeup: R's on-CPU time
__s64 test_dec_logit;
__u32 test_dec_keep;

static __always_inline int test_decision(void)
{
	__u32 zero = 0;
	struct mls_net *net = bpf_map_lookup_elem(&test_net_map, &zero);
	struct task_feat *f;
	struct mls_wake st;
	__u32 x[MLS_NUM_EXTRAS];
	__s64 logit;

	if (!net || !mls_net_usable(net))
		return 2;
	f = mls_feat_peek(test_dec_tid);
	if (!f)
		return 3;
	mls_state_fill(&st, f, test_dec_start, test_dec_now);
	mls_extras(&st, x);
	logit = mls_net_logit(net, f, x);
	test_dec_logit = logit;
	test_dec_keep = mls_net_decide(net, logit);
	return 0;
}

SEC("syscall")
int mls_test_decision(void *ctx)
{
	return test_decision();
}

SEC("xdp")
int mls_bench_decision(struct xdp_md *ctx)
{
	return test_decision() ? XDP_ABORTED : XDP_PASS;
}

SEC("xdp")
int mls_bench_xdp_empty(struct xdp_md *ctx)
{
	return XDP_PASS;
}

// The scheduling state's update and transforms (features.h) against their Go mirrors:
// mls_test_stints replays test_stint_n stints (start test_stint_t[2i], end test_stint_t[2i+1],
// voluntary test_stint_vol[i]) on a fresh state and samples it at each start (test_stint_out);
// mls_test_log_time maps test_lt_in through mls_log_time.
#define MLS_TEST_STINTS 32
__u64 test_stint_t[2 * MLS_TEST_STINTS];
__u8 test_stint_vol[MLS_TEST_STINTS];
__u32 test_stint_n;
struct mls_wake test_stint_out[MLS_TEST_STINTS];
struct task_feat test_stint_feat;

SEC("syscall")
int mls_test_stints(void *ctx)
{
	__builtin_memset(&test_stint_feat, 0, sizeof(test_stint_feat));
	for (__u32 i = 0; i < MLS_TEST_STINTS && i < test_stint_n; i++) {
		__u64 in = test_stint_t[2 * i], out = test_stint_t[2 * i + 1];

		mls_feat_stint_start(&test_stint_feat, in);
		mls_state_fill(&test_stint_out[i], &test_stint_feat, in, out);
		mls_feat_stint_end(&test_stint_feat, in, out, test_stint_vol[i]);
	}
	return 0;
}

#define MLS_TEST_LT 64
__u64 test_lt_in[MLS_TEST_LT];
__u32 test_lt_out[MLS_TEST_LT];

SEC("syscall")
int mls_test_log_time(void *ctx)
{
	for (int i = 0; i < MLS_TEST_LT; i++)
		test_lt_out[i] = mls_log_time(test_lt_in[i]);
	return 0;
}
