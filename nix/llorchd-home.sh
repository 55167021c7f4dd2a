#!/usr/bin/env bash
# llorchd-home: what `nix run` starts. A home profile on 127.0.0.1:8080
# (LLORCH_BIND overrides), with its config and model store under
# ${XDG_DATA_HOME:-~/.local/share}/llorchd.
#
#   llorchd-home [--dry-run] [MODEL.gguf]
#
# MODEL.gguf is staged once (its id is the file name without .gguf) and
# remembered, so later runs need no argument. --dry-run stages and writes
# the config, checks it, prints it, and exits instead of serving.
set -euo pipefail

usage() {
  cat <<'USAGE'
usage: llorchd-home [--dry-run] [MODEL.gguf]

Runs a llorchd home profile on 127.0.0.1:8080 (LLORCH_BIND overrides), with
its config and model store under ${XDG_DATA_HOME:-~/.local/share}/llorchd.
MODEL.gguf is staged once and remembered. --dry-run stages, writes and
checks the config, prints it, and exits instead of serving.
USAGE
}

dry_run=0
while [ $# -gt 0 ]; do
  case $1 in
    --dry-run) dry_run=1; shift ;;
    -h | --help) usage; exit 0 ;;
    --) shift; break ;;
    -*) echo "llorchd-home: unknown option $1" >&2; exit 2 ;;
    *) break ;;
  esac
done
if [ $# -gt 1 ]; then
  echo "llorchd-home: one model file at most" >&2
  exit 2
fi

data="${XDG_DATA_HOME:-$HOME/.local/share}/llorchd"
store="$data/store"
config="$data/home.toml"
remembered="$data/home-model"
mkdir -p "$store"

# A TOML basic string.
toml_string() {
  local s=${1//\\/\\\\}
  s=${s//\"/\\\"}
  printf '"%s"' "$s"
}

model=""
if [ $# -eq 1 ]; then
  file=$1
  if [ ! -f "$file" ]; then
    echo "llorchd-home: $file: no such file" >&2
    exit 2
  fi
  # The catalog id rule (docs/CONFIGURATION.md "Ids"): 1-64 of A-Z a-z 0-9
  # . _ -, not starting with '.'.
  model=$(basename -- "$file" .gguf)
  model=$(printf '%s' "$model" | tr -c 'A-Za-z0-9._-' '-' | sed 's/^\.*//' | cut -c1-64)
  if [ -z "$model" ]; then
    echo "llorchd-home: cannot make a model id from $file" >&2
    exit 2
  fi
  if LLORCH_STORE_DIR="$store" llorchd models path "$model" >/dev/null 2>&1; then
    echo "llorchd-home: model $model is already in $store" >&2
  else
    LLORCH_STORE_DIR="$store" llorchd models stage "$file" --id "$model" >&2
  fi
  printf '%s\n' "$model" >"$remembered"
elif [ -f "$remembered" ]; then
  model=$(cat "$remembered")
fi

{
  echo "# Written by llorchd-home at every start. For more, copy it and run"
  echo "# llorchd serve --config COPY (docs/CONFIGURATION.md)."
  echo 'profile = "home"'
  echo "[store]"
  echo "dir = $(toml_string "$store")"
  if [ -n "$model" ]; then
    echo "[[pools]]"
    echo 'id = "default"'
    echo "model = $(toml_string "$model")"
  fi
} >"$config.tmp"
mv "$config.tmp" "$config"

llorchd check-config "$config" >&2
if [ -z "$model" ]; then
  echo "llorchd-home: no model yet, so no pool: start it once with a GGUF file (llorchd-home MODEL.gguf)" >&2
fi
if [ "$dry_run" = 1 ]; then
  cat "$config"
  exit 0
fi
exec llorchd serve --config "$config"
