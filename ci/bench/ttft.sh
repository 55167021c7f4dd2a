#!/usr/bin/env bash
# Time to first token through HTTP (POST /v2/tasks + SSE) against a direct
# submit to the same pool's engine, in one process (docs/BENCHMARKS.md).
#   ci/bench/ttft.sh [--threads N] [--reps N]
set -euo pipefail
cd "$(dirname "$0")/../.."
exec cargo run --release --quiet --example serve_bench -- ttft "$@"
