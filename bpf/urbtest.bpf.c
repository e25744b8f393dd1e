//go:build ignore

// SPDX-License-Identifier: GPL-2.0
// Test-only: drains a user ring buffer under BPF_PROG_TEST_RUN so that the Go writer
// (userringbuf.go) is checked against the kernel's reader, on any kernel >= 6.1.
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

#include "abi.h" // every object carries the whole contract (bpf/abi_test.go checks it)

char LICENSE[] SEC("license") = "GPL";

#define URB_TEST_MAX 256

extern __u32 bpf_dynptr_size(const struct bpf_dynptr *p) __ksym;

struct {
	__uint(type, BPF_MAP_TYPE_USER_RINGBUF);
	__uint(max_entries, 4096);
} urb_test SEC(".maps");

// Per drained sample: its size and its first 8 bytes (0 if shorter).
__u32 got_len[URB_TEST_MAX];
__u64 got_head[URB_TEST_MAX];
__u32 got_n;
long drain_ret;

static long urb_test_cb(struct bpf_dynptr *dp, void *ctx)
{
	__u32 i = got_n;
	__u64 head = 0;

	if (i >= URB_TEST_MAX)
		return 1;
	got_len[i] = bpf_dynptr_size(dp);
	bpf_dynptr_read(&head, sizeof(head), dp, 0, 0);
	got_head[i] = head;
	got_n = i + 1;
	return 0;
}

SEC("syscall")
int mls_urb_drain(void *ctx)
{
	drain_ret = bpf_user_ringbuf_drain(&urb_test, urb_test_cb, NULL, 0);
	return 0;
}
