#!/usr/bin/env bash
# llorchd bench vs llama.cpp's llama-bench, interleaved on the same machine.
#
# Each round runs, per model, both engines back to back (order alternating
# between rounds: A/B, B/A, ...), so slow phases of a shared machine hit both.
# Prints medians over rounds of pp128, tg64 and (ours) aggregate decode with
# 8 concurrent sequences, the ratios ours/llama.cpp, and the load average
# seen before each run.
#
#   ci/bench/engine-vs-llamacpp.sh [ROUNDS]        (default 5)
# Env: THREADS (2), REPS per run (3), PP (128), TG (64), CONC (8),
#      MODELS (space-separated files; default: both test models),
#      LLORCHD (our binary; default: the release build, built if missing),
#      LLAMA_BENCH (default: the llama.cpp build under /work/cache),
#      OUT (folder for the raw JSON; default: a temp dir).
set -euo pipefail

ROUNDS=${1:-5}
THREADS=${THREADS:-2}
REPS=${REPS:-3}
PP=${PP:-128}
TG=${TG:-64}
CONC=${CONC:-8}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CACHE=${LLORCH_MODEL_CACHE:-$HOME/.cache/llorchd/models}
MODELS=${MODELS:-"$CACHE/SmolLM2-135M-Instruct.Q4_1.gguf $CACHE/gemma-3-270m-q4_k_m.gguf"}
LLORCHD=${LLORCHD:-$ROOT/target/x86_64-unknown-linux-gnu/release/llorchd}
LLAMA_BENCH=${LLAMA_BENCH:-/work/cache/llama_cpp_python-0.3.36/vendor/llama.cpp/build/bin/llama-bench}
OUT=${OUT:-$(mktemp -d)}

for tool in jq python3; do
    command -v "$tool" >/dev/null || { echo "needs $tool" >&2; exit 1; }
done
if [[ ! -x $LLORCHD ]]; then
    (cd "$ROOT" && cargo build --release --bin llorchd)
fi
[[ -x $LLAMA_BENCH ]] || { echo "llama-bench not found at $LLAMA_BENCH" >&2; exit 1; }
for m in $MODELS; do
    [[ -f $m ]] || { echo "model $m missing (ci/fetch-models.sh)" >&2; exit 1; }
done
mkdir -p "$OUT"
echo "raw results in $OUT" >&2

load() { cut -d' ' -f1 /proc/loadavg; }

# One result line per measurement: engine model test tps load
RES=$OUT/results.tsv
: >"$RES"

run_ours() {
    local m=$1 tag=$2 l j
    l=$(load)
    j=$OUT/ours-$tag.json
    "$LLORCHD" bench -m "$m" -p "$PP" -n "$TG" -t "$THREADS" -r "$REPS" \
        --concurrent "$CONC" --json >"$j" 2>/dev/null
    local name
    name=$(basename "$m")
    jq -r --arg m "$name" --arg l "$l" --arg pp "pp$PP" --arg tg "tg$TG" --arg cc "tg${TG}x$CONC" '
        "ours\t\($m)\t\($pp)\t\(.pp_tps)\t\($l)",
        "ours\t\($m)\t\($tg)\t\(.tg_tps)\t\($l)",
        "ours\t\($m)\t\($cc)\t\(.concurrent_tg_tps)\t\($l)"' "$j" >>"$RES"
}

run_llama() {
    local m=$1 tag=$2 l j
    l=$(load)
    j=$OUT/llama-$tag.json
    "$LLAMA_BENCH" -m "$m" -p "$PP" -n "$TG" -t "$THREADS" -r "$REPS" -o json >"$j" 2>/dev/null
    local name
    name=$(basename "$m")
    jq -r --arg m "$name" --arg l "$l" '.[] |
        (if .n_gen == 0 then "pp\(.n_prompt)" else "tg\(.n_gen)" end) as $t |
        "llama.cpp\t\($m)\t\($t)\t\(.avg_ts)\t\($l)"' "$j" >>"$RES"
}

for ((r = 1; r <= ROUNDS; r++)); do
    for m in $MODELS; do
        tag="r$r-$(basename "$m" .gguf)"
        if ((r % 2)); then
            run_ours "$m" "$tag"; run_llama "$m" "$tag"
        else
            run_llama "$m" "$tag"; run_ours "$m" "$tag"
        fi
        echo "round $r/$ROUNDS $(basename "$m") done (load $(load))" >&2
    done
done

python3 - "$RES" "$PP" "$TG" "$CONC" "$THREADS" <<'PY'
import sys, statistics as st, collections
res, pp, tg, conc, threads = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
d = collections.defaultdict(list)
loads = []
for line in open(res):
    eng, model, test, tps, load = line.rstrip("\n").split("\t")
    d[(eng, model, test)].append(float(tps))
    loads.append(float(load))
models = sorted({k[1] for k in d})
print(f"threads {threads}; rounds {len(d[next(iter(d))])}; "
      f"load average (1 min) before runs: median {st.median(loads):.2f}, "
      f"min {min(loads):.2f}, max {max(loads):.2f}")
print()
print("| model | test | llorchd t/s | llama.cpp t/s | llorchd / llama.cpp |")
print("| --- | --- | ---: | ---: | ---: |")
for m in models:
    for t in (f"pp{pp}", f"tg{tg}"):
        a, b = d.get(("ours", m, t)), d.get(("llama.cpp", m, t))
        if not a or not b:
            continue
        ma, mb = st.median(a), st.median(b)
        # Median of per-round ratios: each pair ran back to back.
        rr = st.median(x / y for x, y in zip(a, b))
        print(f"| {m} | {t} | {ma:.1f} | {mb:.1f} | {rr:.2f} (of medians {ma/mb:.2f}) |")
print()
print(f"| model | llorchd tg{tg} x1 t/s | x{conc} aggregate t/s | x{conc} / x1 | rounds' x{conc} / x1 |")
print("| --- | ---: | ---: | ---: | --- |")
for m in models:
    a, b = d.get(("ours", m, f"tg{tg}")), d.get(("ours", m, f"tg{tg}x{conc}"))
    if not a or not b:
        continue
    # Each round's x1 and x8 ran back to back in one process.
    r = [y / x for x, y in zip(a, b)]
    print(f"| {m} | {st.median(a):.1f} | {st.median(b):.1f} | {st.median(r):.2f} | "
          f"{min(r):.2f}–{max(r):.2f} |")
PY
