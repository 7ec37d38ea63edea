# Sourced by the scripts that run Janus beside Surge (benches/peers.sh, scripts/test-janus).
# Janus gathers no ICE candidates on 127.0.0.0/8, so the servers run in a network namespace
# of their own, reached over a veth pair with two private addresses:
#   $JANUS_HOST_IP (this namespace: the clients)  <->  $JANUS_NS_IP (namespace $JANUS_NS: the SFUs)
# Needs `cd` to the repository root first; root (or sudo) for apt-get and `ip netns`.

if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
# Janus 1.1.2 sometimes crashes while shutting down on SIGTERM (after the measurements); no
# core files in the working tree.
ulimit -c 0

# A /30 of the documentation-free private space, unlikely to collide with a host network;
# the namespace and link names carry the pid so two runs never share them.
JANUS_NS="${JANUS_NS:-surge-peers-$$}"
JANUS_VETH="${JANUS_VETH:-sp$$}"
JANUS_HOST_IP="${JANUS_HOST_IP:-10.203.77.1}"
JANUS_NS_IP="${JANUS_NS_IP:-10.203.77.2}"
JANUS_PORT="${JANUS_PORT:-8088}"
JANUS_LIB="${JANUS_LIB:-/usr/lib/x86_64-linux-gnu/janus}"

# Installs Debian's janus when it is missing; fails when it cannot.
ensure_janus() {
  command -v janus >/dev/null 2>&1 && return 0
  echo "installing Debian's janus"
  $SUDO apt-get update -qq >/dev/null &&
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq janus >/dev/null
}

# Whether this machine lets us make a network namespace (containers often do not).
can_netns() {
  local probe="surge-probe-$$"
  $SUDO ip netns add "$probe" 2>/dev/null || return 1
  $SUDO ip netns del "$probe" 2>/dev/null || true
}

# Creates the namespace and the veth pair, addresses up. Undo with netns_down.
netns_up() {
  $SUDO ip netns add "$JANUS_NS"
  $SUDO ip link add "${JANUS_VETH}h" type veth peer name "${JANUS_VETH}n"
  $SUDO ip link set "${JANUS_VETH}n" netns "$JANUS_NS"
  $SUDO ip addr add "$JANUS_HOST_IP/30" dev "${JANUS_VETH}h"
  $SUDO ip link set "${JANUS_VETH}h" up
  $SUDO ip netns exec "$JANUS_NS" ip addr add "$JANUS_NS_IP/30" dev "${JANUS_VETH}n"
  $SUDO ip netns exec "$JANUS_NS" ip link set "${JANUS_VETH}n" up
  $SUDO ip netns exec "$JANUS_NS" ip link set lo up
}

# Removes the namespace (its end of the pair goes with it, and so the host's end).
netns_down() {
  $SUDO ip netns pids "$JANUS_NS" 2>/dev/null | xargs -r $SUDO kill -KILL 2>/dev/null || true
  $SUDO ip netns del "$JANUS_NS" 2>/dev/null || true
  $SUDO ip link del "${JANUS_VETH}h" 2>/dev/null || true
}

# Runs a command inside the namespace.
in_ns() { $SUDO ip netns exec "$JANUS_NS" "$@"; }

# Writes a minimal Janus configuration into DIR: the HTTP (REST) transport on
# $JANUS_NS_IP:$JANUS_PORT, the videoroom plugin and nothing else (the plugin and transport
# folders hold only those two libraries), ICE on the namespace's veth only.
write_janus_config() {
  local dir="$1"
  mkdir -p "$dir/plugins" "$dir/transports" "$dir/events" "$dir/loggers"
  ln -sf "$(ls "$JANUS_LIB"/plugins/libjanus_videoroom.so* | head -n 1)" "$dir/plugins/libjanus_videoroom.so"
  ln -sf "$(ls "$JANUS_LIB"/transports/libjanus_http.so* | head -n 1)" "$dir/transports/libjanus_http.so"
  cat >"$dir/janus.jcfg" <<CFG
general: {
  configs_folder = "$dir"
  plugins_folder = "$dir/plugins"
  transports_folder = "$dir/transports"
  events_folder = "$dir/events"
  loggers_folder = "$dir/loggers"
  debug_level = ${JANUS_DEBUG_LEVEL:-3}
  session_timeout = 60
  interface = "$JANUS_NS_IP"
}
media: {
  rtp_port_range = "20000-40000"
}
nat: {
  ice_enforce_list = "${JANUS_VETH}n"
}
CFG
  cat >"$dir/janus.transport.http.jcfg" <<CFG
general: {
  json = "plain"
  base_path = "/janus"
  http = true
  port = $JANUS_PORT
  ip = "$JANUS_NS_IP"
  https = false
}
admin: {
  admin_http = false
}
CFG
  cat >"$dir/janus.plugin.videoroom.jcfg" <<CFG
general: {
}
CFG
}

# Starts janus in the namespace with the config in DIR, logging to LOG; sets janus_pid and
# returns once its REST endpoint answers.
start_janus() {
  local dir="$1" log="$2"
  in_ns janus -F "$dir" -C "$dir/janus.jcfg" >"$log" 2>&1 &
  janus_pid=$!
  for _ in $(seq 1 100); do
    curl -fsS "http://$JANUS_NS_IP:$JANUS_PORT/janus/info" >/dev/null 2>&1 && return 0
    kill -0 "$janus_pid" 2>/dev/null || break
    sleep 0.2
  done
  curl -fsS "http://$JANUS_NS_IP:$JANUS_PORT/janus/info" >/dev/null
}

# The pid of the server under its wrappers (the subshell of `in_ns ... &`, sudo): the process
# whose /proc CPU counters are the server's own.
server_pid() {
  local pid="$1" comm child
  for _ in 1 2 3; do
    comm=$(cat "/proc/$pid/comm" 2>/dev/null || true)
    case "$comm" in
      ip|sudo|bash|env) child=$(pgrep -P "$pid" | head -n 1 || true) ;;
      *) break ;;
    esac
    [ -z "$child" ] && break
    pid=$child
  done
  echo "$pid"
}
