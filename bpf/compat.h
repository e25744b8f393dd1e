// SPDX-License-Identifier: GPL-2.0
// Every kernel difference the scheduler cares about, in one place.
//
// sched_ext kfunc names across kernels:
//   6.12       scx_bpf_dispatch, scx_bpf_consume, scx_bpf_dispatch_from_dsq
//   6.13-6.x   scx_bpf_dsq_insert, scx_bpf_dsq_move_to_local, scx_bpf_dsq_move
//   6.12       scx_bpf_dispatch_vtime, scx_bpf_dispatch_vtime_from_dsq,
//              scx_bpf_dispatch_from_dsq_set_vtime (weighted-vtime queue)
//   6.13-6.x   scx_bpf_dsq_insert_vtime, scx_bpf_dsq_move_vtime, scx_bpf_dsq_move_set_vtime
//   7.x        also scx_bpf_dsq_insert___v2 (returns bool) and
//              scx_bpf_dsq_move_to_local___v2(dsq, enq_flags), plus *_impl variants.
//
// cilium/ebpf v0.22 cannot resolve a call to scx_bpf_dsq_insert or scx_bpf_dsq_move_to_local
// on kernels that carry the ___v2 and ___v2_impl variants ("multiple matching types": its
// by-name lookup skips an element while deleting), even in dead code. So sched.bpf.c is built
// twice (bpf/gen_sched.go):
//   sched        -DMLS_KFUNC_V2: only the ___v2 names; for kernels whose BTF has them;
//   schedcompat  the plain names, and the 6.12 names as weak externs chosen by the
//                kf_legacy_names rodata flag (an unresolved weak kfunc is poisoned by the
//                loader and the verifier never reaches it).
// The loader (bpf/sched.go) probes kernel BTF and picks the object and the flag.
#pragma once

#define PF_KTHREAD 0x00200000

extern s32 scx_bpf_create_dsq(u64 dsq_id, s32 node) __ksym;
extern s32 scx_bpf_select_cpu_dfl(struct task_struct *p, s32 prev_cpu, u64 wake_flags, bool *is_idle) __ksym;
extern bool scx_bpf_test_and_clear_cpu_idle(s32 cpu) __ksym;
extern s32 scx_bpf_pick_idle_cpu(const struct cpumask *cpus_allowed, u64 flags) __ksym;
extern void scx_bpf_kick_cpu(s32 cpu, u64 flags) __ksym;
extern s32 scx_bpf_dsq_nr_queued(u64 dsq_id) __ksym;
extern void scx_bpf_exit_bstr(s64 exit_code, char *fmt, unsigned long long *data, u32 data__sz) __ksym;
extern s32 scx_bpf_task_cpu(const struct task_struct *p) __ksym;
extern struct task_struct *bpf_task_from_pid(s32 pid) __ksym;
extern void bpf_task_release(struct task_struct *p) __ksym;
extern void bpf_rcu_read_lock(void) __ksym;
extern void bpf_rcu_read_unlock(void) __ksym;
extern bool bpf_cpumask_test_cpu(u32 cpu, const struct cpumask *cpumask) __ksym;
extern int bpf_iter_scx_dsq_new(struct bpf_iter_scx_dsq *it, u64 dsq_id, u64 flags) __ksym;
extern struct task_struct *bpf_iter_scx_dsq_next(struct bpf_iter_scx_dsq *it) __ksym;
extern void bpf_iter_scx_dsq_destroy(struct bpf_iter_scx_dsq *it) __ksym;

#ifdef MLS_KFUNC_V2

extern bool scx_bpf_dsq_insert___v2(struct task_struct *p, u64 dsq_id, u64 slice, u64 enq_flags) __ksym;
extern bool scx_bpf_dsq_move_to_local___v2(u64 dsq_id, u64 enq_flags) __ksym;
extern bool scx_bpf_dsq_move(struct bpf_iter_scx_dsq *it__iter, struct task_struct *p, u64 dsq_id, u64 enq_flags) __ksym;
// 7.x keeps the five-argument vtime insert beside __scx_bpf_dsq_insert_vtime(p, args), with no
// ___v2 flavour, so cilium/ebpf resolves it.
extern void scx_bpf_dsq_insert_vtime(struct task_struct *p, u64 dsq_id, u64 slice, u64 vtime, u64 enq_flags) __ksym;
extern bool scx_bpf_dsq_move_vtime(struct bpf_iter_scx_dsq *it__iter, struct task_struct *p, u64 dsq_id, u64 enq_flags) __ksym;
extern void scx_bpf_dsq_move_set_vtime(struct bpf_iter_scx_dsq *it__iter, u64 vtime) __ksym;
// 7.x deprecates writing p->scx.dsq_vtime directly (a kernel notice at attach) for this kfunc.
extern bool scx_bpf_task_set_dsq_vtime(struct task_struct *p, u64 vtime) __ksym;

// Unused in this object; kept so that both objects have the same variables.
const volatile u8 kf_legacy_names = 0;

static __always_inline void mls_dsq_insert(struct task_struct *p, u64 dsq_id, u64 slice, u64 enq_flags)
{
	scx_bpf_dsq_insert___v2(p, dsq_id, slice, enq_flags);
}

static __always_inline bool mls_dsq_move_to_local(u64 dsq_id)
{
	return scx_bpf_dsq_move_to_local___v2(dsq_id, 0);
}

static __always_inline bool mls_dsq_move(struct bpf_iter_scx_dsq *it, struct task_struct *p, u64 dsq_id, u64 enq_flags)
{
	return scx_bpf_dsq_move(it, p, dsq_id, enq_flags);
}

static __always_inline void mls_dsq_insert_vtime(struct task_struct *p, u64 dsq_id, u64 slice, u64 vtime, u64 enq_flags)
{
	scx_bpf_dsq_insert_vtime(p, dsq_id, slice, vtime, enq_flags);
}

static __always_inline bool mls_dsq_move_vtime(struct bpf_iter_scx_dsq *it, struct task_struct *p, u64 dsq_id, u64 vtime)
{
	scx_bpf_dsq_move_set_vtime(it, vtime);
	return scx_bpf_dsq_move_vtime(it, p, dsq_id, 0);
}

static __always_inline void mls_set_dsq_vtime(struct task_struct *p, u64 vtime)
{
	scx_bpf_task_set_dsq_vtime(p, vtime);
}

#else

extern void scx_bpf_dsq_insert(struct task_struct *p, u64 dsq_id, u64 slice, u64 enq_flags) __ksym __weak;
extern bool scx_bpf_dsq_move_to_local(u64 dsq_id) __ksym __weak;
extern bool scx_bpf_dsq_move(struct bpf_iter_scx_dsq *it__iter, struct task_struct *p, u64 dsq_id, u64 enq_flags) __ksym __weak;
extern void scx_bpf_dispatch(struct task_struct *p, u64 dsq_id, u64 slice, u64 enq_flags) __ksym __weak;
extern bool scx_bpf_consume(u64 dsq_id) __ksym __weak;
extern bool scx_bpf_dispatch_from_dsq(struct bpf_iter_scx_dsq *it__iter, struct task_struct *p, u64 dsq_id, u64 enq_flags) __ksym __weak;
extern void scx_bpf_dsq_insert_vtime(struct task_struct *p, u64 dsq_id, u64 slice, u64 vtime, u64 enq_flags) __ksym __weak;
extern bool scx_bpf_dsq_move_vtime(struct bpf_iter_scx_dsq *it__iter, struct task_struct *p, u64 dsq_id, u64 enq_flags) __ksym __weak;
extern void scx_bpf_dsq_move_set_vtime(struct bpf_iter_scx_dsq *it__iter, u64 vtime) __ksym __weak;
extern void scx_bpf_dispatch_vtime(struct task_struct *p, u64 dsq_id, u64 slice, u64 vtime, u64 enq_flags) __ksym __weak;
extern bool scx_bpf_dispatch_vtime_from_dsq(struct bpf_iter_scx_dsq *it__iter, struct task_struct *p, u64 dsq_id, u64 enq_flags) __ksym __weak;
extern void scx_bpf_dispatch_from_dsq_set_vtime(struct bpf_iter_scx_dsq *it__iter, u64 vtime) __ksym __weak;

// Set by the loader: the kernel has only the 6.12 names.
const volatile u8 kf_legacy_names = 0;

static __always_inline void mls_dsq_insert(struct task_struct *p, u64 dsq_id, u64 slice, u64 enq_flags)
{
	if (kf_legacy_names)
		scx_bpf_dispatch(p, dsq_id, slice, enq_flags);
	else
		scx_bpf_dsq_insert(p, dsq_id, slice, enq_flags);
}

static __always_inline bool mls_dsq_move_to_local(u64 dsq_id)
{
	if (kf_legacy_names)
		return scx_bpf_consume(dsq_id);
	return scx_bpf_dsq_move_to_local(dsq_id);
}

static __always_inline bool mls_dsq_move(struct bpf_iter_scx_dsq *it, struct task_struct *p, u64 dsq_id, u64 enq_flags)
{
	if (kf_legacy_names)
		return scx_bpf_dispatch_from_dsq(it, p, dsq_id, enq_flags);
	return scx_bpf_dsq_move(it, p, dsq_id, enq_flags);
}

static __always_inline void mls_dsq_insert_vtime(struct task_struct *p, u64 dsq_id, u64 slice, u64 vtime, u64 enq_flags)
{
	if (kf_legacy_names)
		scx_bpf_dispatch_vtime(p, dsq_id, slice, vtime, enq_flags);
	else
		scx_bpf_dsq_insert_vtime(p, dsq_id, slice, vtime, enq_flags);
}

static __always_inline bool mls_dsq_move_vtime(struct bpf_iter_scx_dsq *it, struct task_struct *p, u64 dsq_id, u64 vtime)
{
	if (kf_legacy_names) {
		scx_bpf_dispatch_from_dsq_set_vtime(it, vtime);
		return scx_bpf_dispatch_vtime_from_dsq(it, p, dsq_id, 0);
	}
	scx_bpf_dsq_move_set_vtime(it, vtime);
	return scx_bpf_dsq_move_vtime(it, p, dsq_id, 0);
}

// Before 7.x a struct_ops program writes the field itself.
static __always_inline void mls_set_dsq_vtime(struct task_struct *p, u64 vtime)
{
	p->scx.dsq_vtime = vtime;
}

#endif
