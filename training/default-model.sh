#!/usr/bin/env bash
# Reproduces model/default.bin: captures traces of a documented mix of workloads on this
# machine, trains on them and writes the model (docs/TRAINING.md, "The default model").
#   training/default-model.sh            capture, train, write model/default.bin
#   training/default-model.sh train      train again on the traces already captured
#   training/default-model.sh nginx-wrk  (internal) the nginx + wrk workload
# Needs root (capture uses BPF), Go, and the Debian packages nginx-light (or nginx), wrk and
# stress-ng, which `make default-model` installs. Traces and logs go to $OUT
# (default .cache/default-model). Knobs: DURATION (s per workload), HORIZON, EPOCHS, SEED.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
OUT=${OUT:-$root/.cache/default-model}
DURATION=${DURATION:-20}
HORIZON=${HORIZON:-1ms}
EPOCHS=${EPOCHS:-15}
SEED=${SEED:-1}
MODEL=${MODEL:-$root/model/default.bin}
MLSCHED=${MLSCHED:-$root/mlsched}

# nginx serving a 4 KiB file to wrk: 2 nginx workers, 2 wrk threads, 64 connections. Both run
# as children of this script, so `capture --only-command` sees exactly them.
nginx_wrk() {
	local tmp
	tmp=$(mktemp -d)
	chmod 755 "$tmp"
	mkdir -p "$tmp/www" "$tmp/logs"
	head -c 4096 /dev/urandom >"$tmp/www/index.html"
	cat >"$tmp/nginx.conf" <<CONF
daemon off; worker_processes 2; pid $tmp/nginx.pid; error_log $tmp/logs/error.log;
events { worker_connections 1024; }
http { access_log off; server { listen 127.0.0.1:18081; root $tmp/www; } }
CONF
	nginx -c "$tmp/nginx.conf" -p "$tmp" &
	local pid=$!
	for _ in $(seq 50); do
		[ -s "$tmp/nginx.pid" ] && break
		sleep 0.1
	done
	wrk -t2 -c64 -d"${DURATION}s" http://127.0.0.1:18081/index.html
	kill -QUIT "$pid" 2>/dev/null || true
	wait "$pid" || true
	rm -rf "$tmp"
}

capture() {
	local name=$1
	shift
	echo "== capture $name" >&2
	"$MLSCHED" capture -o "$OUT/$name.trace" --horizon "$HORIZON" --max-rate 0 --progress never --only-command "$@" \
		2>&1 | tee "$OUT/$name.capture.log" | grep -v '^stress-ng: info' >&2
}

train() {
	# Relative names: the model records them, and they should not depend on where this ran.
	cd "$OUT"
	local traces=(nginx-wrk.trace stress-ng.trace go-build.trace)
	echo "== train on ${traces[*]} in $OUT" >&2
	"$MLSCHED" train -o "$MODEL" --epochs "$EPOCHS" --seed "$SEED" --plot "$OUT/curves.svg" "${traces[@]}" |
		tee "$OUT/train.log"
	for t in "${traces[@]}"; do
		"$MLSCHED" eval --model "$MODEL" --json "$t" >"$(basename "$t" .trace).eval.json"
	done
	echo "model: $MODEL; log, curves and per-workload evals: $OUT" >&2
}

case ${1:-all} in
nginx-wrk)
	nginx_wrk
	exit
	;;
train)
	train
	exit
	;;
all) ;;
*)
	echo "usage: $0 [all|train|nginx-wrk]" >&2
	exit 2
	;;
esac

[ "$(id -u)" = 0 ] || { echo "default-model: capture needs root" >&2; exit 1; }
mkdir -p "$OUT"
[ -x "$MLSCHED" ] || { echo "default-model: $MLSCHED not built (make build)" >&2; exit 1; }

capture nginx-wrk -- "$root/training/default-model.sh" nginx-wrk
# Message passing and synchronisation (blocking often) next to a CPU hog (never blocking).
capture stress-ng -- stress-ng --pipe 1 --futex 1 --poll 1 --sock 1 --cpu 1 --timeout "${DURATION}s"
# A Go build from an empty cache: the compiler, the linker and many short processes.
gocache=$(mktemp -d)
capture go-build -- timeout --kill-after=5 "$((DURATION * 3))" env GOCACHE="$gocache" GOFLAGS=-buildvcs=false \
	go build -o /dev/null ./features ./model ./bpf ./cmd/mlsched
rm -rf "$gocache"
train
