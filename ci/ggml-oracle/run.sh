#!/bin/sh
# Regenerates src/backend/cpu/quant/testdata/ggml_golden.txt from a llama.cpp
# CPU build (LLAMA_CPP: the source tree; its build/ must hold libggml*.a).
# Run on an AVX-512 (VNNI) x86 machine: that is the arithmetic we match.
# The prefill records also read Gemma 3's blk.0.attn_output from the model
# cache (ci/fetch-models.sh).
set -eu
LLAMA_CPP=${LLAMA_CPP:-/work/cache/llama_cpp_python-0.3.36/vendor/llama.cpp}
GEMMA=${LLORCH_MODEL_CACHE:-$HOME/.cache/llorchd/models}/gemma-3-270m-q4_k_m.gguf
[ -f "$GEMMA" ] || { echo "run.sh: $GEMMA missing (ci/fetch-models.sh)" >&2; exit 1; }
here=$(cd "$(dirname "$0")" && pwd)
out=$(mktemp -d)
cc -O2 -ffp-contract=off -o "$out/oracle" "$here/oracle.c" \
    -I "$LLAMA_CPP/ggml/include" \
    "$LLAMA_CPP/build/ggml/src/libggml.a" "$LLAMA_CPP/build/ggml/src/libggml-cpu.a" \
    "$LLAMA_CPP/build/ggml/src/libggml-base.a" \
    -lstdc++ -lm -fopenmp -lpthread
"$out/oracle" "$GEMMA" > "$here/../../src/backend/cpu/quant/testdata/ggml_golden.txt"
rm -rf "$out"
