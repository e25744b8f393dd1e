# The default model (training/, docs/TRAINING.md). Included by the Makefile.
#   make default-model        install the workloads' Debian packages, capture nginx+wrk, pgbench,
#                             memcached, a C build, zstd/gzip, git, stress-ng and a Go build on
#                             this machine (root), train, write model/default.bin (traces and
#                             logs: .cache/default-model)
#   make default-model-train  train again on the traces already captured
# Knobs: DEFAULT_MODEL_DURATION (s per workload, 20), DEFAULT_MODEL_EPOCHS (15), DEFAULT_MODEL_SEED (1),
# DEFAULT_MODEL_WORKLOADS (a space-separated subset to capture and train on; default all, see
# `training/default-model.sh list`), DEFAULT_MODEL_TRAIN_FLAGS (more `mlsched train` flags, e.g.
# --count-dropout 0.5; default none).
.PHONY: default-model default-model-train deps-default-model
DEFAULT_MODEL_DURATION ?= 20
DEFAULT_MODEL_EPOCHS ?= 15
DEFAULT_MODEL_SEED ?= 1
DEFAULT_MODEL_WORKLOADS ?=
DEFAULT_MODEL_TRAIN_FLAGS ?=
DEFAULT_MODEL_ENV = DURATION=$(DEFAULT_MODEL_DURATION) EPOCHS=$(DEFAULT_MODEL_EPOCHS) SEED=$(DEFAULT_MODEL_SEED) \
	WORKLOADS="$(DEFAULT_MODEL_WORKLOADS)" TRAIN_FLAGS="$(DEFAULT_MODEL_TRAIN_FLAGS)"

# The workloads are Debian packages (training/default-model.sh list): wrk and nginx-light
# (unless some nginx is already installed), postgresql (server and pgbench; setpriv from
# util-linux), memcached and libmemcached-tools (memcaslap), uclibc-source (make-c's C tree)
# with make, gcc, libc6-dev, linux-libc-dev and xz-utils, zstd, gzip, tar, git and stress-ng.
# go-build uses the Go toolchain that `build` needs anyway.
DEFAULT_MODEL_PKGS = python3 wrk postgresql redis-server redis-tools lighttpd apache2-utils util-linux memcached libmemcached-tools uclibc-source make gcc \
	libc6-dev linux-libc-dev xz-utils zstd gzip tar git stress-ng
deps-default-model:
	@need=; for p in $(DEFAULT_MODEL_PKGS); do \
	  [ "$$(dpkg-query -W -f='$${db:Status-Status}' $$p 2>/dev/null)" = installed ] || need="$$need $$p"; done; \
	command -v nginx >/dev/null || need="$$need nginx-light"; \
	if [ -n "$$need" ]; then echo "installing:$$need" >&2; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$need >/dev/null; fi

default-model: build deps-default-model
	$(DEFAULT_MODEL_ENV) training/default-model.sh all

default-model-train: build
	$(DEFAULT_MODEL_ENV) training/default-model.sh train
