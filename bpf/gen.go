// Package bpf holds all of mlsched's BPF C, the committed vmlinux.h (from the BTF of a kernel
// with sched_ext), the bpf2go output, and the Go code that loads and attaches the programs.
package bpf

// Generated objects are committed, so `go build` needs no clang; `make generate` reruns this
// with the pinned compiler (clang-19) and CI checks the result is up to date.
//go:generate go run ./internal/genschema schema_table.h
//go:generate go tool bpf2go -cc clang-19 -target bpfel -no-global-types capture capture.bpf.c -- -O2 -g -Wall -Werror -fms-extensions -Wno-microsoft-anon-tag -I/usr/include/x86_64-linux-gnu
