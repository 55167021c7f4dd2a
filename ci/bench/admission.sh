#!/usr/bin/env bash
# Admission decisions per second and their latency under saturation
# (docs/BENCHMARKS.md). Starts the release binary on SmolLM2 with a
# one-slot pool and a queue of 4, keeps it busy, and hammers POST /v2/tasks
# with wrk, so nearly every answer is a 429 decided by admission.
#   ci/bench/admission.sh [DURATION] [CONNECTIONS]
# Needs wrk (apt-get install wrk) and ci/fetch-models.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
duration="${1:-10s}"
conns="${2:-64}"
bin=target/x86_64-unknown-linux-gnu/release/llorchd
[ -x "$bin" ] || cargo build --release
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }
model="${LLORCH_MODEL_CACHE:-$HOME/.cache/llorchd/models}/SmolLM2-135M-Instruct.Q4_1.gguf"
work=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -rf "$work"' EXIT
port=${LLORCH_BENCH_PORT:-18080}
LLORCH_STORE_DIR="$work" "$bin" models stage "$model" --id smollm2 >/dev/null
cat >"$work/llorchd.toml" <<TOML
[server]
bind = "127.0.0.1:$port"
[store]
dir = "$work"
[admission]
queue_capacity = 4
[logging]
format = "json"
level = "warn"
[[pools]]
id = "p0"
model = "smollm2"
slots = 1
threads = 1
TOML
"$bin" serve --config "$work/llorchd.toml" >"$work/server.log" 2>&1 &
pid=$!
for _ in $(seq 100); do
  curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null
echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
# One wrk thread: the server and the load generator share the machine.
wrk -t1 -c"$conns" -d"$duration" --latency -s ci/bench/admission.lua "http://127.0.0.1:$port/v2/tasks" \
  | grep -E "decisions|latency ms|Requests/sec"
