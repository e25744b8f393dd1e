# mlsched build, generate, test. `make test` is the CI entry point: it installs what it needs.
SHELL := /bin/bash
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
LDFLAGS := -s -w -X main.version=$(VERSION) -X main.commitID=$(COMMIT)
export CGO_ENABLED := 0

.PHONY: all build generate check-generate deps-build deps-test test test-extra demo bench clean

all: build

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o mlsched ./cmd/mlsched

# Regenerate the schema header and the bpf2go objects with the pinned clang-19.
generate: deps-build
	cd bpf && $(GO) generate ./...

# Regenerate and fail if the committed output differs (CI).
check-generate: generate
	git diff --exit-code -- bpf/ || { echo "generated BPF files are stale: run 'make generate' and commit" >&2; exit 1; }

# Build dependencies: the pinned BPF compiler and headers (Debian packages).
deps-build:
	@need=; for p in clang-19 llvm-19 libbpf-dev; do dpkg -s $$p >/dev/null 2>&1 || need="$$need $$p"; done; \
	if [ -n "$$need" ]; then echo "installing:$$need" >&2; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$need >/dev/null; fi

# Test dependencies beyond the build's: workloads for the integration tests.
deps-test: deps-build
	@need=; for p in stress-ng; do dpkg -s $$p >/dev/null 2>&1 || need="$$need $$p"; done; \
	if [ -n "$$need" ]; then echo "installing:$$need" >&2; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$need >/dev/null; fi

# The whole suite: generated files up to date, unit tests, fuzz seed corpora, root tests on
# the host kernel, and the sched_ext scenarios in the VM.
test: deps-test check-generate
	$(GO) vet ./...
	$(GO) test -count=1 ./...
	$(MAKE) --no-print-directory test-extra

test-extra::

# The main loop, end to end, in a VM with a sched_ext kernel (vmtest/demo.mk): capture ->
# train -> run -> A/B default vs fifo vs vtime vs the model; report, JSON and plots in $(DEMO_DIR)/.
DEMO_DIR ?= demo-out
demo: build
	$(MAKE) --no-print-directory demo-vm

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

clean:
	rm -rf mlsched $(DEMO_DIR)

-include vmtest/vmtest.mk
-include training/training.mk
-include vmtest/demo.mk
