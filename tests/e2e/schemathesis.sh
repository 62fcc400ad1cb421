#!/usr/bin/env bash
# Validates the HTTP API's OpenAPI document (openapi-spec-validator), then
# checks the API against it with schemathesis (PyPI): a bounded number of generated requests per
# operation, valid and invalid, must get no 5xx and only responses that
# the document describes (status codes, content types, schemas). The watch
# stream is left out: a valid watch never ends, and it is tested in
# crates/server/tests/watch.rs.
# Usage: tests/e2e/schemathesis.sh PATH/TO/arbiter [MAX_EXAMPLES]
set -euo pipefail

arbiter=${1:?usage: schemathesis.sh PATH/TO/arbiter [MAX_EXAMPLES]}
examples=${2:-10}

source "$(dirname "$0")/server.sh"
start_arbiter "$arbiter"
addr=$http_addr

cd "$work"
python3 -c 'import sys, urllib.request; sys.stdout.buffer.write(urllib.request.urlopen(sys.argv[1]).read())' \
  "http://$addr/openapi.json" >openapi.json
python3 -m openapi_spec_validator openapi.json
schemathesis run "http://$addr/openapi.json" \
  --header "Authorization: Bearer $token" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
  --max-examples "$examples" --seed 42 --workers 2 --no-color \
  --exclude-operation-id WatchChanges
