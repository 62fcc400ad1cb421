# Starts a single-member etcd (Debian's etcd-server) for the benchmark
# scripts, and measures what processes spend. Sourced; needs python3.

# start_etcd DIR [ETCD FLAGS…]: starts etcd with its data and log in DIR on
# two free ports (etcd cannot advertise port 0) and waits until it answers
# /health. Sets etcd_url and etcd_pid.
start_etcd() {
  local dir=$1 client_port peer_port peer_url
  shift
  read -r client_port peer_port < <(python3 -c '
import socket
s = [socket.socket() for _ in range(2)]
for x in s: x.bind(("127.0.0.1", 0))
print(*(x.getsockname()[1] for x in s))')
  etcd_url="http://127.0.0.1:$client_port"
  peer_url="http://127.0.0.1:$peer_port"
  mkdir -p "$dir"
  etcd --name bench --data-dir "$dir/data" \
    --listen-client-urls "$etcd_url" --advertise-client-urls "$etcd_url" \
    --listen-peer-urls "$peer_url" --initial-advertise-peer-urls "$peer_url" \
    --initial-cluster "bench=$peer_url" --quota-backend-bytes 8589934592 \
    --logger zap --log-level warn "$@" 2>"$dir/etcd.log" &
  etcd_pid=$!
  for _ in $(seq 1 200); do
    curl -fsS "$etcd_url/health" 2>/dev/null | grep -q '"health":"true"' && return 0
    kill -0 "$etcd_pid" 2>/dev/null || break
    sleep 0.1
  done
  cat "$dir/etcd.log" >&2
  echo "etcd did not become healthy at $etcd_url" >&2
  return 1
}

# cpu_ticks PID…: CPU time (user + system, in 1/100 s) the processes have
# used so far.
cpu_ticks() {
  local files=()
  for p in "$@"; do files+=("/proc/$p/stat"); done
  awk '{t += $14 + $15} END {print t}' "${files[@]}"
}

# settle PID…: waits (up to 20 s) until the processes are idle (less than 5%
# of a core over one second), so that one run's aftermath (compactions,
# snapshots, GC) does not land on the next.
settle() {
  local before after
  for _ in $(seq 1 20); do
    before=$(cpu_ticks "$@")
    sleep 1
    after=$(cpu_ticks "$@")
    [ $((after - before)) -lt 5 ] && return 0
  done
  echo "servers still busy after 20 s; measuring anyway" >&2
}
