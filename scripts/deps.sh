# Installs what the build needs when it is missing: clang and libclang for
# RocksDB's bindings, protoc for the etcd client, etcd for the tests, the
# wasm32-wasip2 target for policies, and componentize-py for the Python
# example policy. Sourced by scripts/serve, scripts/test and the benchmark
# scripts.
set -euo pipefail

need_apt=()
command -v clang >/dev/null 2>&1 || need_apt+=(clang)
ldconfig -p 2>/dev/null | grep -q 'libclang[-.0-9]*\.so' || need_apt+=(libclang-dev)
# protoc compiles etcd's API for the etcd client (store and benchmark).
command -v protoc >/dev/null 2>&1 || need_apt+=(protobuf-compiler)
# A real etcd for the etcd engine's tests and the benchmarks.
command -v etcd >/dev/null 2>&1 || need_apt+=(etcd-server)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing ${need_apt[*]} (needed by the build)" >&2
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
command -v cargo >/dev/null 2>&1 || { echo "cargo is missing: install Rust with rustup first" >&2; exit 1; }

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/arbiter-target}"

# Policies are WebAssembly components built for wasm32-wasip2.
if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
  echo "installing the wasm32-wasip2 target (policies build for it)" >&2
  rustup target add wasm32-wasip2 >&2
fi
