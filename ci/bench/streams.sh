#!/usr/bin/env bash
# Aggregate generated tokens per second with 1, 4 and 8 concurrent SSE
# streams on one 8-slot pool (docs/BENCHMARKS.md).
#   ci/bench/streams.sh [--threads N] [--tokens N]
set -euo pipefail
cd "$(dirname "$0")/../.."
exec cargo run --release --quiet --example serve_bench -- streams "$@"
