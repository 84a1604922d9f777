#!/usr/bin/env bash
# Sourced by scripts/run and scripts/test: installs what the build and the tests need,
# through apt, only when it is missing.
#   protoc       (protobuf-compiler): etcd-client's build script compiles etcd's protobufs.
#   etcd         (etcd-server):       the real etcd the demo and the integration tests run.
#   chromium, chromedriver (chromium, chromium-driver): the dashboard's browser test; only
#                when sourced as `source scripts/setup.sh test`.
set -euo pipefail

need_apt=()
command -v protoc >/dev/null 2>&1 || need_apt+=(protobuf-compiler)
command -v etcd >/dev/null 2>&1 || need_apt+=(etcd-server)
if [ "${1:-}" = "test" ]; then
  command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
  command -v chromedriver >/dev/null 2>&1 || need_apt+=(chromium-driver)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing ${need_apt[*]} with apt-get" >&2
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi
# Debian's etcd-server package starts a system etcd on 2379; the tests use their own ports
# and do not mind, and the demo reuses it when it answers.
command -v cargo >/dev/null 2>&1 || {
  echo "setup: cargo is not on PATH; install Rust (rustup) first" >&2
  exit 1
}
