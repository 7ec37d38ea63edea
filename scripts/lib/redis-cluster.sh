# Sourced by the scripts that test on Redis Cluster (scripts/test, scripts/test-redis-cluster):
# redis_cluster_start starts a real Redis Cluster from Debian's redis-server on loopback —
# 3 masters and 3 replicas, 6 processes on consecutive free ports, data in a temporary
# directory — waits until every node reports cluster_state:ok, and exports
# SURGE_TEST_REDIS_CLUSTER_URL (redis+cluster://127.0.0.1:P0,...) and
# SURGE_TEST_REDIS_CLUSTER_DIR (each node's pid file and log: PORT.pid, PORT.log).
# redis_cluster_stop stops the nodes and removes the directory; callers trap it on EXIT.

REDIS_CLUSTER_NODES=6

_rc_port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# The first base port (from SURGE_REDIS_CLUSTER_BASE_PORT, default 17000) whose 6 ports are free.
_rc_free_base() {
  local base=${SURGE_REDIS_CLUSTER_BASE_PORT:-17000} i busy
  for _ in $(seq 20); do
    busy=
    for i in $(seq 0 $((REDIS_CLUSTER_NODES - 1))); do
      if _rc_port_open $((base + i)) || _rc_port_open $((base + i + 10000)); then busy=1; break; fi
    done
    [ -z "$busy" ] && { echo "$base"; return 0; }
    base=$((base + 10))
  done
  return 1
}

redis_cluster_start() {
  if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
    echo "redis-cluster: redis-server and redis-cli are needed (Debian's redis-server package)" >&2
    return 1
  fi
  local base dir port i nodes=() seeds=()
  base=$(_rc_free_base) || { echo "redis-cluster: no free ports" >&2; return 1; }
  dir=$(mktemp -d /tmp/surge-redis-cluster.XXXXXX)
  export SURGE_TEST_REDIS_CLUSTER_DIR=$dir
  for i in $(seq 0 $((REDIS_CLUSTER_NODES - 1))); do
    port=$((base + i))
    # A short node timeout so a killed master's replica takes over within seconds (the
    # failover test); persistence off: the cluster lives as long as the test run.
    redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" \
      --cluster-enabled yes --cluster-config-file "nodes-$port.conf" \
      --cluster-node-timeout 3000 --save '' --appendonly no \
      --daemonize yes --pidfile "$dir/$port.pid" --logfile "$dir/$port.log"
    nodes+=("127.0.0.1:$port")
    seeds+=("127.0.0.1:$port")
  done
  for port in $(seq "$base" $((base + REDIS_CLUSTER_NODES - 1))); do
    for _ in $(seq 50); do _rc_port_open "$port" && break; sleep 0.1; done
    _rc_port_open "$port" || { echo "redis-cluster: node :$port did not start; see $dir/$port.log" >&2; return 1; }
  done
  # All on one host, so redis-cli warns that replicas share their master's host; expected.
  if ! redis-cli --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes >"$dir/create.log" 2>&1; then
    echo "redis-cluster: cluster create failed; see $dir/create.log" >&2
    return 1
  fi
  local ok
  for _ in $(seq 200); do
    ok=1
    for port in $(seq "$base" $((base + REDIS_CLUSTER_NODES - 1))); do
      redis-cli -p "$port" cluster info 2>/dev/null | grep -q '^cluster_state:ok' || { ok=; break; }
    done
    # ...and every replica attached (a failover needs one), and every node agreeing.
    if [ -n "$ok" ] \
      && [ "$(redis-cli -p "$base" cluster nodes 2>/dev/null | grep -c ' slave ')" -eq $((REDIS_CLUSTER_NODES / 2)) ] \
      && redis-cli --cluster check "127.0.0.1:$base" >/dev/null 2>&1; then
      break
    fi
    ok=
    sleep 0.1
  done
  [ -n "$ok" ] || { echo "redis-cluster: cluster_state is not ok after 20 s; see $dir" >&2; return 1; }
  SURGE_TEST_REDIS_CLUSTER_URL="redis+cluster://$(IFS=,; echo "${seeds[*]}")/"
  export SURGE_TEST_REDIS_CLUSTER_URL
  echo "redis-cluster: 3 masters + 3 replicas at $SURGE_TEST_REDIS_CLUSTER_URL (data in $dir)"
}

redis_cluster_stop() {
  local dir=${SURGE_TEST_REDIS_CLUSTER_DIR:-} pidfile
  [ -n "$dir" ] && [ -d "$dir" ] || return 0
  local pids=() pid alive
  for pidfile in "$dir"/*.pid; do
    [ -f "$pidfile" ] && pids+=("$(cat "$pidfile")")
  done
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  # Stopping nodes still write their node files and logs (and remove their pid files): wait
  # for them to exit before removing the directory, or rm can race them and fail the script.
  for _ in $(seq 100); do
    alive=
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ -z "$alive" ] && break
    sleep 0.1
  done
  rm -rf "$dir" 2>/dev/null || rm -rf "$dir" 2>/dev/null || true
  unset SURGE_TEST_REDIS_CLUSTER_DIR SURGE_TEST_REDIS_CLUSTER_URL
}
