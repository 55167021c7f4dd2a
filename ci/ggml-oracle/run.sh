#!/bin/sh
# Regenerates src/backend/cpu/quant/testdata/ggml_golden.txt from a llama.cpp
# CPU build (LLAMA_CPP: the source tree; its build/ must hold libggml*.a).
# Run on an AVX-512 (VNNI) x86 machine: that is the arithmetic we match.
set -eu
LLAMA_CPP=${LLAMA_CPP:-/work/cache/llama_cpp_python-0.3.36/vendor/llama.cpp}
here=$(cd "$(dirname "$0")" && pwd)
out=$(mktemp -d)
cc -O2 -ffp-contract=off -o "$out/oracle" "$here/oracle.c" \
    -I "$LLAMA_CPP/ggml/include" \
    "$LLAMA_CPP/build/ggml/src/libggml.a" "$LLAMA_CPP/build/ggml/src/libggml-cpu.a" \
    "$LLAMA_CPP/build/ggml/src/libggml-base.a" \
    -lstdc++ -lm -fopenmp -lpthread
"$out/oracle" > "$here/../../src/backend/cpu/quant/testdata/ggml_golden.txt"
rm -rf "$out"
