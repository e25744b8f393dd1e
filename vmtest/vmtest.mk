# VM scenarios (vmtest/): boot Debian sid's sched_ext kernel under qemu (TCG) and run the
# mlsched binary in it. The Go harness installs qemu if missing (as root), fetches and caches
# the kernel (~/.cache/mlsched, or $MLSCHED_CACHE), builds the static binaries and the
# initramfs. Without qemu or the kernel it skips with the reason; under CI=true it fails.
#   make vmtest                      all scenarios
#   make vmtest VMTEST_RUN=VMKill9   the ones matching (the list: vmtest/README.md; e.g. VMAttach,
#                                    VMKill9, VMStop, VMFlood, VMMetrics, VMHotplug, VMAdapt)
#   make vmtest-smoke                just boot the kernel (vmtest/smoke.sh)
# Logs of every VM (console, results) stay in vmtest/out/<test>/. A full run takes ~20 min on
# 2 cores; VMTEST_TIMEOUT only catches a harness hang (every VM has its own timeout).
.PHONY: vmtest vmtest-smoke
VMTEST_RUN ?= VM
VMTEST_TIMEOUT ?= 40m

vmtest:
	MLSCHED_VMTEST=1 $(GO) test -count=1 -v -timeout $(VMTEST_TIMEOUT) -run '$(VMTEST_RUN)' ./vmtest

vmtest-smoke:
	vmtest/smoke.sh

test-extra:: vmtest

# The project's yardstick (vmtest/bench_test.go): one VM (Debian sid's sched_ext kernel, qemu
# TCG -accel tcg,thread=multi, 2 vCPUs) runs, interleaved, rounds of every arm -- no scheduler
# (EEVDF), the kernel's scx_simple, scx_simple -f and scx_userland (built from the booted
# kernel's linux-source, fetch-peers.sh), mlsched fifo / vtime / model over fifo / the default
# run -- on hackbench (pipes+processes, sockets+threads), a stress-ng mix and mlsched's pool
# workload. Prints a table per metric; writes vmtest/out/vmbench.{json,svg,txt}. Installs what
# it needs (root). ~25-40 min on 2 cores with the defaults. TCG does not model caches.
#   make vmbench VMBENCH_ROUNDS=2 VMBENCH_ARMS='default,scx_simple,mlsched fifo'
# Knobs (make variable -> environment): VMBENCH_ROUNDS (5), VMBENCH_SEED (the clock),
# VMBENCH_ARMS / VMBENCH_WORKLOADS (comma lists of names: hackbench-pipe, hackbench-thread,
# stress-ng, pool), VMBENCH_HACKBENCH_LOOPS (300), VMBENCH_STRESS_DURATION (5s),
# VMBENCH_POOL_DURATION (5s), VMBENCH_ACCEL (tcg,thread=multi), VMBENCH_MAX_RESTARTS (10);
# the MLSCHED_VMBENCH_<name> environment variables work too.
.PHONY: vmbench
VMBENCH_TIMEOUT ?= 90m
vmbench_vars = ROUNDS SEED ARMS WORKLOADS HACKBENCH_LOOPS STRESS_DURATION POOL_DURATION ACCEL MAX_RESTARTS
vmbench:
	MLSCHED_VMTEST=1 MLSCHED_VMBENCH=1 $(foreach v,$(vmbench_vars),$(if $(VMBENCH_$(v)),MLSCHED_VMBENCH_$(v)='$(VMBENCH_$(v))')) \
		$(GO) test -count=1 -v -timeout $(VMBENCH_TIMEOUT) -run '^TestVMBench$$' ./vmtest

# The model of vmbench's own workloads (vmtest/benchmodel_test.go): two VM boots ("train",
# "heldout") capture every vmbench workload VMBENCH_MODEL_ROUNDS times (under mlsched --policy
# vtime by default), the traces leave the guest over a third serial port, `mlsched train`
# learns from the first boot's on the host and `mlsched eval` scores it (and model/default.bin)
# on the second's. Writes
# vmtest/testdata/vmbench-model.bin (vmbench's arm "mlsched vm-model") and vmbench-model.txt (the
# report); traces and logs in vmtest/out/vmbench-model/. ~10-15 min on 2 cores.
#   make vmbench-model VMBENCH_MODEL_REUSE=1        train again on the traces already there
# Knobs (make variable -> MLSCHED_VMBENCH_MODEL_<name>): VMBENCH_MODEL_ROUNDS (2 captures of each
# workload per boot), _HACKBENCH_LOOPS (6000), _STRESS_DURATION (20s), _POOL_DURATION (20s),
# _WORKLOADS, _ACCEL (tcg,thread=multi), _UNDER (vtime or default), _EPOCHS (20), _SEED (1),
# _THRESHOLD_FOR (accuracy), _REUSE.
.PHONY: vmbench-model
VMBENCH_MODEL_TIMEOUT ?= 90m
vmbench_model_vars = ROUNDS HACKBENCH_LOOPS STRESS_DURATION POOL_DURATION WORKLOADS ACCEL UNDER EPOCHS SEED THRESHOLD_FOR REUSE
vmbench-model:
	MLSCHED_VMTEST=1 MLSCHED_VMBENCH_MODEL=1 $(foreach v,$(vmbench_model_vars),$(if $(VMBENCH_MODEL_$(v)),MLSCHED_VMBENCH_MODEL_$(v)='$(VMBENCH_MODEL_$(v))')) \
		$(GO) test -count=1 -v -timeout $(VMBENCH_MODEL_TIMEOUT) -run '^TestVMBenchModel$$' ./vmtest
