# The default model (training/, docs/TRAINING.md). Included by the Makefile.
#   make default-model        capture nginx+wrk, stress-ng and a Go build on this machine (root),
#                             train, write model/default.bin (traces and logs: .cache/default-model)
#   make default-model-train  train again on the traces already captured
# Knobs: DEFAULT_MODEL_DURATION (s per workload, 20), DEFAULT_MODEL_EPOCHS (15), DEFAULT_MODEL_SEED (1).
.PHONY: default-model default-model-train deps-default-model
DEFAULT_MODEL_DURATION ?= 20
DEFAULT_MODEL_EPOCHS ?= 15
DEFAULT_MODEL_SEED ?= 1
DEFAULT_MODEL_ENV = DURATION=$(DEFAULT_MODEL_DURATION) EPOCHS=$(DEFAULT_MODEL_EPOCHS) SEED=$(DEFAULT_MODEL_SEED)

# The workloads are Debian packages.
deps-default-model:
	@need=; for p in stress-ng wrk; do dpkg -s $$p >/dev/null 2>&1 || need="$$need $$p"; done; \
	command -v nginx >/dev/null || need="$$need nginx-light"; \
	if [ -n "$$need" ]; then echo "installing:$$need" >&2; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$need >/dev/null; fi

default-model: build deps-default-model
	$(DEFAULT_MODEL_ENV) training/default-model.sh all

default-model-train: build
	$(DEFAULT_MODEL_ENV) training/default-model.sh train
