#!/usr/bin/env bash
# Sourced by scripts/run and scripts/test: installs what the build and the tests need,
# through apt, only when it is missing, and then checks that each piece really works, so that
# a missing piece is named here and not three minutes into a build.
#   protoc + well-known types (protobuf-compiler, libprotobuf-dev): etcd-client's build script
#                compiles etcd's protobufs, which import google/protobuf/descriptor.proto.
#   etcd         (etcd-server): the real etcd the demo and the integration tests run.
#   python3      (python3): the example runner the demo's workers run, scripts/example_crawler.py.
#   chromium, chromedriver (chromium, chromium-driver): the dashboard's browser test; only
#                when sourced as `source scripts/setup.sh test`.
#   prometheus, promtool (prometheus): the shipped alerts' checks and unit tests, and a real
#                Prometheus that fires one against a cluster (tests/monitoring.rs); only with
#                `test`.
#   curl         (curl): one of the HTTPS clients tests/tls.rs checks the API's TLS with; only
#                with `test`.
#   python3 -m venv (python3-venv): the API contract tools (openapi-spec-validator,
#                schemathesis) and the Kubernetes manifests' validator (kubernetes-validate)
#                that the test command installs from PyPI into target/contract-venv; only with
#                `test`.
set -euo pipefail

command -v cargo >/dev/null 2>&1 || {
  echo "setup: cargo is not on PATH; install Rust first (https://rustup.rs)" >&2
  exit 1
}

# Does protoc compile a file that imports a well-known type? (protobuf-compiler alone, with
# --no-install-recommends, has protoc but not the .proto files under /usr/include.)
setup_protoc_ok() {
  command -v protoc >/dev/null 2>&1 || return 1
  local dir
  dir=$(mktemp -d)
  printf 'syntax = "proto3";\nimport "google/protobuf/descriptor.proto";\nmessage M { google.protobuf.FileDescriptorProto f = 1; }\n' >"$dir/probe.proto"
  protoc -I"$dir" --descriptor_set_out="$dir/out.pb" "$dir/probe.proto" >/dev/null 2>&1
  local ok=$?
  rm -rf "$dir"
  return $ok
}
setup_etcd_ok() { command -v etcd >/dev/null 2>&1 && etcd --version >/dev/null 2>&1; }
setup_venv_ok() { python3 -c 'import venv, ensurepip' >/dev/null 2>&1; }

need_apt=()
setup_protoc_ok || need_apt+=(protobuf-compiler libprotobuf-dev)
setup_etcd_ok || need_apt+=(etcd-server)
# The shipped example runner (scripts/example_crawler.py) is a python3 script.
command -v python3 >/dev/null 2>&1 || need_apt+=(python3)
if [ "${1:-}" = "test" ]; then
  command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
  command -v chromedriver >/dev/null 2>&1 || need_apt+=(chromium-driver)
  setup_venv_ok || need_apt+=(python3-venv)
  command -v curl >/dev/null 2>&1 || need_apt+=(curl)
  { command -v promtool && command -v prometheus; } >/dev/null 2>&1 || need_apt+=(prometheus)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing ${need_apt[*]} with apt-get" >&2
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

# The API contract tools, from PyPI, in a virtualenv of their own (tests/contract.rs uses them).
CONTRACT_VENV="${CRAWLER_CONTRACT_VENV:-$PWD/target/contract-venv}"
export CRAWLER_CONTRACT_VENV="$CONTRACT_VENV"
setup_contract_ok() {
  "$CONTRACT_VENV/bin/schemathesis" --version >/dev/null 2>&1 &&
    "$CONTRACT_VENV/bin/openapi-spec-validator" --help >/dev/null 2>&1 &&
    "$CONTRACT_VENV/bin/kubernetes-validate" --version >/dev/null 2>&1
}
if [ "${1:-}" = "test" ] && ! setup_contract_ok; then
  echo "setup: installing openapi-spec-validator, schemathesis and kubernetes-validate from PyPI into $CONTRACT_VENV" >&2
  python3 -m venv "$CONTRACT_VENV"
  "$CONTRACT_VENV/bin/pip" install -q --disable-pip-version-check \
    "openapi-spec-validator==0.9.0" "schemathesis==4.32.5" "kubernetes-validate==1.37.0"
fi

# Check every piece now, and say what is missing and how to get it.
missing=()
setup_protoc_ok || missing+=("protoc cannot compile a file importing google/protobuf/descriptor.proto: apt-get install protobuf-compiler libprotobuf-dev")
setup_etcd_ok || missing+=("etcd --version does not answer: apt-get install etcd-server")
python3 --version >/dev/null 2>&1 || missing+=("python3 does not answer (the example runner needs it): apt-get install python3")
if [ "${1:-}" = "test" ]; then
  chromium --version >/dev/null 2>&1 || missing+=("chromium --version does not answer: apt-get install chromium")
  chromedriver --version >/dev/null 2>&1 || missing+=("chromedriver --version does not answer: apt-get install chromium-driver")
  setup_venv_ok || missing+=("python3 cannot make a virtualenv: apt-get install python3 python3-venv")
  curl --version >/dev/null 2>&1 || missing+=("curl --version does not answer: apt-get install curl")
  promtool --version >/dev/null 2>&1 || missing+=("promtool --version does not answer: apt-get install prometheus")
  prometheus --version >/dev/null 2>&1 || missing+=("prometheus --version does not answer: apt-get install prometheus")
  setup_contract_ok || missing+=("schemathesis, openapi-spec-validator or kubernetes-validate does not answer in $CONTRACT_VENV: remove it and run again (needs PyPI)")
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: these are missing after installing:" >&2
  for m in "${missing[@]}"; do echo "  - $m" >&2; done
  exit 1
fi
# Debian's etcd-server package starts a system etcd on 2379; the tests use their own ports
# and do not mind, and the demo reuses it when it answers.
