#!/usr/bin/env bash
# End-to-end figures against `surge up`, as a markdown table to compare release with release:
#   - raw Argon2id hashes/s on this machine (the ceiling) vs signups/s the API sustains
#     under an open-loop flood well above that ceiling (and what it sheds, how fast);
#   - RTP packets the SFU forwards per second, per core of CPU it used, during calls of
#     headless participants over real UDP;
#   - join time p50/p99 (offer sent -> first media received).
# Usage: benches/e2e.sh            (release build; see the variables below)
#        SURGE_E2E_PROFILE=dev benches/e2e.sh   (quicker to build, slower to run)
# Writes $OUT/e2e.md plus each run's result.json and report.html; prints the table.
# SURGE_E2E_APPEND=1 also appends the table to benches/e2e-results.md (the history to compare
# releases with).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=benches/surge-up.sh
. benches/surge-up.sh

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/surge/target}"
PROFILE="${SURGE_E2E_PROFILE:-release}"
PORT="${SURGE_E2E_PORT:-18480}"
SIGNUP_RATE="${SURGE_E2E_SIGNUP_RATE:-400}"     # signups/s offered: far above capacity
SIGNUP_SECS="${SURGE_E2E_SIGNUP_SECS:-30}"
CALL_SECS="${SURGE_E2E_CALL_SECS:-30}"
ROOMS="${SURGE_E2E_ROOMS:-4}"
PUBS="${SURGE_E2E_PUBLISHERS:-2}"
SUBS="${SURGE_E2E_SUBSCRIBERS:-6}"
OUT="${SURGE_E2E_OUT:-$CARGO_TARGET_DIR/e2e/$(date -u +%Y%m%dT%H%M%SZ)}"
BASE="http://127.0.0.1:$PORT"
mkdir -p "$OUT"

if [ -z "${SURGE_E2E_NO_BUILD:-}" ]; then
  cargo build --profile "$PROFILE" -p surge -p surge-loadgen
fi
dir="$PROFILE"; [ "$PROFILE" = dev ] && dir=debug
BIN="$CARGO_TARGET_DIR/$dir"
LOADGEN="$BIN/surge-loadgen"

step() { printf '\n==> %s\n' "$*" >&2; }

step "raw Argon2id rate (OWASP parameters, one thread per core, nothing else running)"
"$LOADGEN" --quiet --out "$OUT/hash" hash-rate --duration 10s | tee "$OUT/hash.txt"

step "surge up on $BASE"
surge_up "$BIN/surge" "$PORT" "$OUT/surge.log"

cpu_secs() { # user+system CPU seconds of the surge process
  awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$surge_pid/stat"
}
metric() { # sum of a Prometheus counter over its label sets
  curl -fsS "$BASE/metrics" | awk -v m="$1" '$1 == m || index($1, m "{") == 1 {s += $2} END {printf "%.0f\n", s}'
}

step "signup flood: $SIGNUP_RATE/s for ${SIGNUP_SECS}s, no retries"
"$LOADGEN" --quiet --out "$OUT/signup" signup --target "$BASE" --rate "$SIGNUP_RATE" \
  --duration "${SIGNUP_SECS}s" --max-retries 0 --duplicate-share 0 --invalid-share 0 \
  | tee "$OUT/signup.txt" || true

# The counter and CPU window also covers the calls' set-up (32 users signing up and logging
# in: ~2 Argon2 hashes each), so packets per core is a slight underestimate.
step "calls: $ROOMS rooms x ($PUBS publishers + $SUBS subscribers) for ${CALL_SECS}s"
out0=$(metric surge_sfu_rtp_packets_out_total); cpu0=$(cpu_secs); t0=$(date +%s.%N)
"$LOADGEN" --quiet --out "$OUT/calls" calls --target "$BASE" --rooms "$ROOMS" \
  --publishers "$PUBS" --subscribers "$SUBS" --duration "${CALL_SECS}s" \
  | tee "$OUT/calls.txt" || true
out1=$(metric surge_sfu_rtp_packets_out_total); cpu1=$(cpu_secs); t1=$(date +%s.%N)

python3 - "$OUT" "$PROFILE" "$out0" "$out1" "$cpu0" "$cpu1" "$t0" "$t1" <<'PY' | tee "$OUT/e2e.md"
import json, os, subprocess, sys
out, profile, o0, o1, c0, c1, t0, t1 = sys.argv[1:]
o0, o1, c0, c1, t0, t1 = map(float, (o0, o1, c0, c1, t0, t1))
def load(name):
    try:
        with open(os.path.join(out, name)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}
h, s, c = load("hash/hash-rate.json"), load("signup/result.json"), load("calls/result.json")
rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
cores = os.cpu_count() or 1
secs = max(t1 - t0, 1e-9)
cpu = max(c1 - c0, 1e-9)
fwd = o1 - o0
lat = s.get("latency", {})
rows = [
    ("raw Argon2id hashes/s (%s threads)" % h.get("threads", "?"), "%.1f" % h.get("hashes_per_s", 0)),
    ("signups/s sustained (offered %s/s)" % round(s.get("outcomes", {}).get("offered", 0) / max(s.get("scheduled_secs", 1), 1e-9)),
     "%.1f" % s.get("created_per_s", 0)),
    ("signups/s as share of raw hash rate", "%.0f%%" % (100 * s.get("created_per_s", 0) / max(h.get("hashes_per_s", 0), 1e-9))),
    ("signup attempts shed (429/503)", "%.1f%%" % (100 * s.get("shed_share", 0))),
    ("signup accepted p50 / p99 (ms)", "%.0f / %.0f" % (lat.get("accepted", {}).get("p50_ms", 0), lat.get("accepted", {}).get("p99_ms", 0))),
    ("signup shed p50 / p99 (ms)", "%.0f / %.0f" % (lat.get("rejected", {}).get("p50_ms", 0), lat.get("rejected", {}).get("p99_ms", 0))),
    ("signup verdict", s.get("verdict", {}).get("line", "n/a").split(":")[0]),
    ("RTP packets forwarded/s (SFU counter)", "%.0f" % (fwd / secs)),
    ("forwarded packets/s per core of CPU used by surge", "%.0f" % (fwd / cpu)),
    ("surge CPU during calls (cores busy of %d)" % cores, "%.2f" % (cpu / secs)),
    ("packets/s received by the participants", "%.0f" % c.get("received_packets_per_s", 0)),
    ("join -> first video of every remote track p50 / p99 (ms)", "%.0f / %.0f" % (c.get("first_video", {}).get("p50_ms", 0), c.get("first_video", {}).get("p99_ms", 0))),
    ("join time p50 / p99 (ms, offer -> first media)", "%.0f / %.0f" % (c.get("join", {}).get("p50_ms", 0), c.get("join", {}).get("p99_ms", 0))),
    ("calls verdict", c.get("verdict", {}).get("line", "n/a").split(":")[0]),
]
print("### e2e %s (%s, %s build, %d cores)\n" % (rev, subprocess.run(["date", "-u", "+%Y-%m-%d %H:%M UTC"], capture_output=True, text=True).stdout.strip(), profile, cores))
print("| figure | value |\n|---|---|")
for k, v in rows:
    print("| %s | %s |" % (k, v))
print()
for name, r in (("signup", s), ("calls", c)):
    if r:
        print("- %s: %s" % (name, r.get("verdict", {}).get("line", "")))
print()
PY

if [ -n "${SURGE_E2E_APPEND:-}" ]; then
  cat "$OUT/e2e.md" >> benches/e2e-results.md
fi
echo "reports in $OUT" >&2
