#!/usr/bin/env bash
# Validates the HTTP API's OpenAPI document (openapi-spec-validator), then
# checks the API against it with schemathesis (PyPI): a bounded number of generated requests per
# operation, valid and invalid, must get no 5xx and only responses that
# the document describes (status codes, content types, schemas).
# Usage: tests/e2e/schemathesis.sh PATH/TO/arbiter [MAX_EXAMPLES]
set -euo pipefail

arbiter=${1:?usage: schemathesis.sh PATH/TO/arbiter [MAX_EXAMPLES]}
examples=${2:-10}

work=$(mktemp -d)
log="$work/server.log"
cleanup() {
  [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

"$arbiter" serve --data-dir "$work/data" --grpc-addr 127.0.0.1:0 --http-addr 127.0.0.1:0 --log-format json \
  2>"$log" &
pid=$!
addr=""
for _ in $(seq 1 200); do
  addr=$(grep -o '"http_addr":"[^"]*"' "$log" | head -n1 | cut -d'"' -f4 || true)
  [ -n "$addr" ] && break
  kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; echo "arbiter exited" >&2; exit 1; }
  sleep 0.05
done
[ -n "$addr" ] || { echo "arbiter never logged its address" >&2; exit 1; }
token=$(cat "$work/data/admin.token")

cd "$work"
python3 -c 'import sys, urllib.request; sys.stdout.buffer.write(urllib.request.urlopen(sys.argv[1]).read())' \
  "http://$addr/openapi.json" >openapi.json
python3 -m openapi_spec_validator openapi.json
schemathesis run "http://$addr/openapi.json" \
  --header "Authorization: Bearer $token" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
  --max-examples "$examples" --seed 42 --workers 2 --no-color
