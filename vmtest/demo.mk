# The end-to-end demo in the sched_ext VM (vmtest/demo_test.go; `make demo` runs demo-vm).
# Boots Debian sid's sched_ext kernel under qemu TCG (thread=single: no int3 flake over the
# demo's dozen attach/detach cycles) and, inside it: capture -> train -> run --stats 1s ->
# ab default vs fifo vs vtime vs the model. Prints each part, copies the A/B report, JSON and plots
# to $(DEMO_DIR)/. Installs qemu and fetches the kernel on first use (root). TCG numbers show
# behaviour and overhead, not real-hardware speedups.
#   make demo                         the whole loop (~6-9 min on 2 cores)
#   make ab-vm                        only the A/B part, with the repository's default model
#   DEMO_RUNS=5 DEMO_RUN_DURATION=3s  A/B runs per arm and length of each
#   DEMO_ACCEL=tcg,thread=multi       faster, but expect a retried VM now and then
.PHONY: demo-vm ab-vm
DEMO_DIR ?= demo-out
DEMO_RUNS ?=
DEMO_RUN_DURATION ?=
DEMO_ACCEL ?=
demo_env = MLSCHED_VMTEST=1 MLSCHED_DEMO_OUT=$(abspath $(DEMO_DIR)) MLSCHED_DEMO_RUNS=$(DEMO_RUNS) \
	MLSCHED_DEMO_DURATION=$(DEMO_RUN_DURATION) MLSCHED_DEMO_ACCEL=$(DEMO_ACCEL)

demo-vm:
	@mkdir -p $(DEMO_DIR)
	$(demo_env) MLSCHED_DEMO=full $(GO) test -count=1 -v -timeout 40m -run '^TestVMDemo$$' ./vmtest

ab-vm:
	@mkdir -p $(DEMO_DIR)
	$(demo_env) MLSCHED_DEMO=ab $(GO) test -count=1 -v -timeout 40m -run '^TestVMDemo$$' ./vmtest
