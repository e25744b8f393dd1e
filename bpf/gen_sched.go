package bpf

// The scheduler is built twice from one source (see compat.h): `sched` calls the ___v2 kfunc
// names of 7.x kernels, `schedcompat` the plain names of 6.12-6.x. LoadSched picks one.
//go:generate go tool bpf2go -cc clang-19 -target bpfel -no-global-types sched sched.bpf.c -- -O2 -g -Wall -Werror -fms-extensions -Wno-microsoft-anon-tag -I/usr/include/x86_64-linux-gnu -DMLS_KFUNC_V2
//go:generate go tool bpf2go -cc clang-19 -target bpfel -no-global-types schedcompat sched.bpf.c -- -O2 -g -Wall -Werror -fms-extensions -Wno-microsoft-anon-tag -I/usr/include/x86_64-linux-gnu
