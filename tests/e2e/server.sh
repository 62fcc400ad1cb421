# Starts the real `arbiter` binary on port 0 in a temporary data dir, for
# the end-to-end scripts and the benchmark. Source it, then call
#   start_arbiter PATH/TO/arbiter [EXTRA SERVE FLAGS...]
# It sets work (the temporary dir), pid, grpc_addr, http_addr and token
# (the first-start admin token), and stops the server and removes the dir
# when the script exits.

cleanup_arbiter() {
  [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  [ -n "${work:-}" ] && rm -rf "$work"
}

# The address logged as `name` ("grpc_addr" or "http_addr").
logged_addr() {
  grep -o "\"$1\":\"[^\"]*\"" "$work/server.log" | head -n1 | cut -d'"' -f4 || true
}

start_arbiter() {
  local arbiter=$1
  shift
  work=$(mktemp -d)
  trap cleanup_arbiter EXIT
  "$arbiter" serve --data-dir "$work/data" --grpc-addr 127.0.0.1:0 --http-addr 127.0.0.1:0 \
    --log-format json "$@" 2>"$work/server.log" &
  pid=$!
  grpc_addr=""
  for _ in $(seq 1 400); do
    grpc_addr=$(logged_addr grpc_addr)
    [ -n "$grpc_addr" ] && break
    kill -0 "$pid" 2>/dev/null || { cat "$work/server.log" >&2; echo "arbiter exited" >&2; return 1; }
    sleep 0.05
  done
  [ -n "$grpc_addr" ] || { echo "arbiter never logged its address" >&2; return 1; }
  http_addr=$(logged_addr http_addr)
  token=$(cat "$work/data/admin.token")
}
