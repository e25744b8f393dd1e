# VM scenarios (vmtest/): boot Debian sid's sched_ext kernel under qemu (TCG) and run the
# mlsched binary in it. The Go harness installs qemu if missing (as root), fetches and caches
# the kernel (~/.cache/mlsched, or $MLSCHED_CACHE), builds the static binaries and the
# initramfs. Without qemu or the kernel it skips with the reason; under CI=true it fails.
#   make vmtest                      all scenarios
#   make vmtest VMTEST_RUN=VMKill9   one of them (VMBoot VMCapture VMAttachFIFO VMAttachModel
#                                    VMKill9 VMStopWatchdog VMBadInput VMFlood VMMetrics)
#   make vmtest-smoke                just boot the kernel (vmtest/smoke.sh)
# Logs of every VM (console, results) stay in vmtest/out/<test>/. A full run takes 6-8 min on
# 2 cores; VMTEST_TIMEOUT only catches a harness hang (every VM has its own timeout).
.PHONY: vmtest vmtest-smoke
VMTEST_RUN ?= VM
VMTEST_TIMEOUT ?= 40m

vmtest:
	MLSCHED_VMTEST=1 $(GO) test -count=1 -v -timeout $(VMTEST_TIMEOUT) -run '$(VMTEST_RUN)' ./vmtest

vmtest-smoke:
	vmtest/smoke.sh

test-extra:: vmtest

# The VM measurement for docs/BENCHMARKS.md (## VM): default scheduler vs mlsched fifo vs the
# model on a wakeup-heavy workload, one VM, TCG. Writes vmtest/out/bench.md.
.PHONY: vmbench
vmbench:
	MLSCHED_VMTEST=1 MLSCHED_VMBENCH=1 $(GO) test -count=1 -v -timeout 20m -run 'TestVMBench' ./vmtest
