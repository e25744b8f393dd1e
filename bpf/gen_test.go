package bpf

// Test-only BPF objects: generated from a _test.go file, bpf2go writes _test.go bindings, so
// only the test binary embeds them (`go list -f '{{.EmbedFiles}}' ./bpf` names the shipped
// objects alone).
//go:generate go tool bpf2go -cc clang-19 -target bpfel -no-global-types -type task_feat testprogs testprogs.bpf.c -- -O2 -g -Wall -Werror -fms-extensions -Wno-microsoft-anon-tag -I/usr/include/x86_64-linux-gnu
//go:generate go tool bpf2go -cc clang-19 -target bpfel -no-global-types urbtest urbtest.bpf.c -- -O2 -g -Wall -Werror -fms-extensions -Wno-microsoft-anon-tag -I/usr/include/x86_64-linux-gnu
