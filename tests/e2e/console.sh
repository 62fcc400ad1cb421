#!/usr/bin/env bash
# The console end to end in headless Chromium (Debian's chromium, driven by
# playwright-core from npm, pinned by tests/e2e/console/package-lock.json):
# starts the real `arbiter` binary with tokens of two tenants, makes
# conflicts of three reasons and a field change through the HTTP API, then
# runs tests/e2e/console/console.mjs. Screenshots go to
# $CARGO_TARGET_DIR/console-screenshots (CI keeps them as artifacts).
# Usage: tests/e2e/console.sh PATH/TO/arbiter
set -euo pipefail
arbiter=${1:?usage: console.sh PATH/TO/arbiter}
cd "$(dirname "$0")/../.."

source scripts/apt.sh
command -v chromium >/dev/null 2>&1 || apt_install "the console's end-to-end test drives it" chromium
command -v npm >/dev/null 2>&1 || apt_install "the console's end-to-end test runs on Node.js" nodejs npm
# playwright-core as the lockfile pins it, outside the clone.
deps="${ARBITER_CONSOLE_DEPS:-$HOME/.cache/arbiter-tools/console-e2e}"
if ! cmp -s tests/e2e/console/package-lock.json "$deps/package-lock.json" ||
  [ ! -d "$deps/node_modules/playwright-core" ]; then
  echo "installing playwright-core (npm ci) in $deps" >&2
  mkdir -p "$deps"
  cp tests/e2e/console/package.json tests/e2e/console/package-lock.json "$deps/"
  npm ci --prefix "$deps" --no-audit --no-fund --silent >&2
fi

source tests/e2e/server.sh
work=$(mktemp -d)
trap cleanup_arbiter EXIT
cat >"$work/tokens.toml" <<'TOML'
[[tokens]]
token = "acme-editor-token"
principal = "alice"
tenant = "acme"
role = "editor"

[[tokens]]
token = "acme-admin-token"
principal = "ada"
tenant = "acme"
role = "admin"

[[tokens]]
token = "acme-viewer-token"
principal = "victor"
tenant = "acme"
role = "viewer"

[[tokens]]
token = "globex-viewer-token"
principal = "gina"
tenant = "globex"
role = "viewer"
TOML
launch_arbiter "$arbiter" --tokens "$work/tokens.toml"
base="http://$http_addr"

# status METHOD PATH [BODY] [If-Match]: the HTTP status of a request
# (with $as's token, the editor's by default).
status() {
  local args=(-s -o "$work/body.json" -w '%{http_code}' -X "$1" -H "authorization: Bearer ${as:-acme-editor-token}"
    -H "content-type: application/json")
  [ -n "${4:-}" ] && args+=(-H "if-match: $4")
  curl "${args[@]}" ${3:+--data "$3"} "$base$2"
}
expect() { # expected actual what
  [ "$1" = "$2" ] || { echo "$3: expected HTTP $1, got $2: $(cat "$work/body.json")" >&2; exit 1; }
}
# vm-guard judges every VM change: it refuses to delete a VM labelled env=prod.
module="${CARGO_TARGET_DIR:-$HOME/.cache/arbiter-target}/wasm-guests/wasm32-wasip2/release/vm_guard.wasm"
python3 -c 'import base64, json, sys; print(json.dumps({"kinds": ["vm"], "module": base64.b64encode(open(sys.argv[1], "rb").read()).decode()}))' \
  "$module" >"$work/policy.json"
expect 200 "$(as=acme-admin-token status POST '/v1/tenants/acme/policies?policyId=vm-guard' "@$work/policy.json")" "bind vm-guard"
vm='{"displayName": "Web one", "region": "us-east1", "machineType": "e2-small", "image": "debian-12"}'
expect 200 "$(status POST '/v1/tenants/acme/vms?vmId=web-1' "$vm")" "create"
etag=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["etag"])' "$work/body.json")
expect 409 "$(status POST '/v1/tenants/acme/vms?vmId=web-1' "$vm")" "create again"
expect 409 "$(status POST '/v1/tenants/acme/vms?vmId=web-1' "$vm")" "create a third time"
expect 200 "$(status PATCH '/v1/tenants/acme/vms/web-1?updateMask=displayName' '{"displayName": "Web 1"}' "$etag")" "rename"
expect 412 "$(status PATCH '/v1/tenants/acme/vms/web-1?updateMask=displayName' '{"displayName": "stale"}' "$etag")" "stale rename"
expect 409 "$(status POST '/v1/tenants/acme/vms/web-1:stop' '{}')" "stop a stopped VM"
prod='{"region": "us-east1", "machineType": "e2-small", "image": "debian-12", "labels": {"env": "prod"}}'
expect 200 "$(status POST '/v1/tenants/acme/vms?vmId=db-1' "$prod")" "create a prod VM"
expect 409 "$(status DELETE '/v1/tenants/acme/vms/db-1')" "delete a prod VM (vm-guard denies)"

shots="$CARGO_TARGET_DIR/console-screenshots"
mkdir -p "$shots"
ARBITER_HTTP=$base SHOTS=$shots CONSOLE_DEPS=$deps node tests/e2e/console/console.mjs
