#!/usr/bin/env bash
# Surge side by side with a peer SFU, Janus 1.1.2 (Debian's `janus`, videoroom plugin over
# its REST transport), under the same load on the same machine in the same run: the same
# headless str0m participants (surge-loadgen calls, --sfu surge|janus) publish simulcast
# VP8 (three layers, 150/500/1500 kbit/s) + Opus, or Opus only, and receive.
#
# Both servers run in a network namespace this script makes (Janus gathers no ICE
# candidates on 127.0.0.0/8), reached over a veth pair; the clients stay outside. Each
# round runs every scenario on both servers, alternating which goes first, each on a fresh
# server. Per run: packets delivered to the participants per second and the server
# process's CPU (user + system, /proc/PID/stat) over the steady window (everyone joined +
# 5 s, to the end), delivered packets per server CPU-second, join time (offer -> first
# media, p50), delivery loss (RTP sequence spans). The headline is Surge / Janus per
# scenario: the median over the rounds, with min-max.
#
# Usage: benches/peers.sh   (needs root or sudo: apt-get, ip netns)
# Env: SURGE_PEERS_PROFILE (release|dev, default release), SURGE_PEERS_ROUNDS (3),
#      SURGE_PEERS_SECS (call length after the last join, 20), SURGE_PEERS_FANOUT (subscribers
#      of the one publisher, 30), SURGE_PEERS_ROOMS ("4 2 6": rooms publishers subscribers),
#      SURGE_PEERS_AUDIO ("3 5 25": audio-only rooms publishers subscribers),
#      SURGE_PEERS_NO_BUILD=1, SURGE_PEERS_APPEND=1 (append the table to
#      benches/peers-results.md), SURGE_PEERS_OUT (reports; default under the target dir).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/janus-env.sh
. scripts/lib/janus-env.sh

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/surge/target}"
PROFILE="${SURGE_PEERS_PROFILE:-release}"
ROUNDS="${SURGE_PEERS_ROUNDS:-3}"
SECS="${SURGE_PEERS_SECS:-20}"
FANOUT="${SURGE_PEERS_FANOUT:-30}"
read -r MR_ROOMS MR_PUBS MR_SUBS <<<"${SURGE_PEERS_ROOMS:-4 2 6}"
read -r AU_ROOMS AU_PUBS AU_SUBS <<<"${SURGE_PEERS_AUDIO:-3 5 25}"
SURGE_PORT="${SURGE_PEERS_PORT:-18490}"
OUT="${SURGE_PEERS_OUT:-$CARGO_TARGET_DIR/peers/$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$OUT"
say() { printf '\n==> %s\n' "$*" >&2; }

if ! ensure_janus; then
  echo "peers: cannot install Debian's janus; nothing to compare with" >&2
  exit 1
fi
if ! can_netns; then
  echo "peers: cannot create a network namespace here (needs root / CAP_NET_ADMIN)" >&2
  exit 1
fi

if [ -z "${SURGE_PEERS_NO_BUILD:-}" ]; then
  cargo build --locked --profile "$PROFILE" -p surge -p surge-loadgen
fi
dir="$PROFILE"; [ "$PROFILE" = dev ] && dir=debug
SURGE_BIN="$CARGO_TARGET_DIR/$dir/surge"
LOADGEN="$CARGO_TARGET_DIR/$dir/surge-loadgen"

WORK=$(mktemp -d /tmp/surge-peers.XXXXXX)
server=
pid=
# Stops the server itself (pid), then reaps its wrapper (server: the background job).
stop_server() {
  if [ -n "$pid" ]; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    pid=
  fi
  if [ -n "$server" ]; then
    wait "$server" 2>/dev/null || true
    server=
  fi
}
cleanup() {
  stop_server
  netns_down
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

netns_up
write_janus_config "$WORK/janus"

# Starts one server in the namespace; sets server (the background job) and pid (the server
# process: what is measured and stopped).
start_surge() {
  local log="$1" data
  data=$(mktemp -d "$WORK/surge.XXXXXX")
  in_ns env SURGE_DATABASE_URL="sqlite://$data/surge.db" "$SURGE_BIN" up \
    --listen "$JANUS_NS_IP:$SURGE_PORT" --media-bind "$JANUS_NS_IP" \
    --signup-ip-per-min 0 --login-ip-per-min 0 >"$log" 2>&1 &
  server=$!
  for _ in $(seq 150); do
    curl -fsS "http://$JANUS_NS_IP:$SURGE_PORT/readyz" >/dev/null 2>&1 && break
    sleep 0.2
  done
  curl -fsS "http://$JANUS_NS_IP:$SURGE_PORT/readyz" >/dev/null
  pid=$(server_pid "$server")
}
start_peer() {
  start_janus "$WORK/janus" "$1"
  server=$janus_pid
  pid=$(server_pid "$server")
}

# run_one SFU SCENARIO ROUND ROOMS PUBLISHERS SUBSCRIBERS AUDIO_ONLY
run_one() {
  local sfu="$1" scenario="$2" round="$3" rooms="$4" pubs="$5" subs="$6" audio="$7"
  local dest="$OUT/r$round/$scenario/$sfu" extra=()
  mkdir -p "$dest"
  if [ "$sfu" = surge ]; then
    start_surge "$dest/server.log"
    extra=(--target "http://$JANUS_NS_IP:$SURGE_PORT" --source-ips "$JANUS_HOST_IP")
  else
    start_peer "$dest/server.log"
    extra=(--janus-url "http://$JANUS_NS_IP:$JANUS_PORT/janus")
  fi
  [ "$audio" = 1 ] && extra+=(--audio-only)
  say "round $round: $scenario on $sfu (pid $pid)"
  "$LOADGEN" --quiet --out "$dest" calls --sfu "$sfu" "${extra[@]}" \
    --bind-ip "$JANUS_HOST_IP" --sfu-pid "$pid" --receive-interval 5ms \
    --rooms "$rooms" --publishers "$pubs" --subscribers "$subs" --capped-subscribers 0 \
    --duration "${SECS}s" --settle 5s | tail -n 1 | tee "$dest/verdict.txt" || true
  stop_server
}

SCENARIOS=(
  "fanout 1 1 $FANOUT 0"
  "rooms $MR_ROOMS $MR_PUBS $MR_SUBS 0"
  "audio $AU_ROOMS $AU_PUBS $AU_SUBS 1"
)
for round in $(seq 1 "$ROUNDS"); do
  # Alternate who goes first, so drift on a shared machine does not favour one.
  if [ $((round % 2)) -eq 1 ]; then order="surge janus"; else order="janus surge"; fi
  for s in "${SCENARIOS[@]}"; do
    read -r name rooms pubs subs audio <<<"$s"
    for sfu in $order; do
      run_one "$sfu" "$name" "$round" "$rooms" "$pubs" "$subs" "$audio"
    done
  done
done

python3 - "$OUT" "$PROFILE" "$ROUNDS" "$SECS" "${SCENARIOS[@]}" <<'PY' | tee "$OUT/peers.md"
import json, os, statistics, subprocess, sys
out, profile, rounds, secs = sys.argv[1:5]
scenarios = [s.split() for s in sys.argv[5:]]
rounds = int(rounds)
def load(r, name, sfu):
    try:
        with open(os.path.join(out, "r%d" % r, name, sfu, "result.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None
def figures(res):
    st = res.get("steady") or {}
    return {
        "delivered": st.get("delivered_per_s") or 0.0,
        "cpu": (st.get("sfu_cpu_secs") or 0.0) / max(st.get("secs") or 1e-9, 1e-9),
        "per_cpu": st.get("delivered_per_cpu_s") or 0.0,
        "join": (res.get("join") or {}).get("p50_ms") or 0.0,
        "loss": res.get("delivery_loss") or 0.0,
        "pass": (res.get("verdict") or {}).get("pass", False),
    }
def spread(xs, fmt):
    if not xs:
        return "n/a"
    if len(xs) == 1:
        return fmt % xs[0]
    return (fmt + " (" + fmt + "–" + fmt + ")") % (statistics.median(xs), min(xs), max(xs))
rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
when = subprocess.run(["date", "-u", "+%Y-%m-%d %H:%M UTC"], capture_output=True, text=True).stdout.strip()
print("### peers %s (%s, %s build of Surge, Janus 1.1.2, %d cores, %d rounds, %ss calls)\n" % (rev, when, profile, os.cpu_count() or 1, rounds, secs))
print("Median over the rounds (min–max). Delivered: RTP packets/s all participants received in the steady window; CPU: cores the server process used; per CPU-s: delivered packets per server CPU-second; join: offer → first media, p50; loss: after retransmissions.\n")
print("| scenario | server | delivered/s | CPU (cores) | delivered per CPU-s | join p50 (ms) | loss | runs passed |")
print("|---|---|---|---|---|---|---|---|")
ratios = {}
for name, rooms, pubs, subs, audio in scenarios:
    label = "%s: %s × (%s pub + %s sub)%s" % (name, rooms, pubs, subs, ", audio only" if audio == "1" else "")
    per = {}
    for sfu in ("surge", "janus"):
        runs = [figures(r) for r in (load(i, name, sfu) for i in range(1, rounds + 1)) if r]
        per[sfu] = runs
        col = lambda k: [x[k] for x in runs]
        print("| %s | %s | %s | %s | %s | %s | %s | %d/%d |" % (
            label, sfu, spread(col("delivered"), "%.0f"), spread(col("cpu"), "%.2f"),
            spread(col("per_cpu"), "%.0f"), spread(col("join"), "%.0f"),
            spread([100 * x for x in col("loss")], "%.2f%%"), sum(x["pass"] for x in runs), rounds))
    rs = {"per_cpu": [], "delivered": [], "join": []}
    for i in range(rounds):
        s = load(i + 1, name, "surge"); j = load(i + 1, name, "janus")
        if not s or not j:
            continue
        s, j = figures(s), figures(j)
        for k in rs:
            if j[k] > 0:
                rs[k].append(s[k] / j[k])
    ratios[label] = rs
print("\n| scenario | Surge ÷ Janus: delivered per CPU-s | delivered/s | join p50 |")
print("|---|---|---|---|")
for label, rs in ratios.items():
    print("| %s | %s | %s | %s |" % (label, spread(rs["per_cpu"], "%.2f×"), spread(rs["delivered"], "%.2f×"), spread(rs["join"], "%.2f×")))
print()
PY

if [ -n "${SURGE_PEERS_APPEND:-}" ]; then
  cat "$OUT/peers.md" >> benches/peers-results.md
fi
echo "reports in $OUT" >&2
