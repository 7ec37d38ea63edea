#!/usr/bin/env bash
# The loadgen's relay-only call (issue 13), against the `surge up` scripts/test-turn starts
# (run through scripts/test-browser's SURGE_BROWSER_THEN, with SURGE_URL set): 1 room,
# 1 publisher + 2 subscribers, each with only a TURN relayed candidate allocated with the
# credentials of its join answer. Passes when all three connected through coturn and both
# subscribers received the publisher's audio and video (which went through two relays).
#
# Env: SURGE_URL, CARGO_TARGET_DIR, SURGE_TEST_OUTPUT.
set -euo pipefail
cd "$(dirname "$0")/../.."
say() { printf 'test-turn: %s\n' "$*"; }

# Built only when missing or older than --ice-transport (the workspace's tests build it; a
# build of the one package would rebuild dependencies with other features).
LOADGEN="$CARGO_TARGET_DIR/debug/surge-loadgen"
if [ ! -x "$LOADGEN" ] || ! "$LOADGEN" calls --help | grep -q -- --ice-transport; then
  say "building surge-loadgen"
  cargo build --locked --workspace --bins
fi
OUT="$SURGE_TEST_OUTPUT/relay-calls"
mkdir -p "$OUT"
say "loadgen calls through the relay (report: $OUT)"
"$LOADGEN" --quiet --out "$OUT" calls --target "$SURGE_URL" \
  --rooms 1 --publishers 1 --subscribers 2 --duration 8s --ice-transport relay \
  | tee "$OUT/verdict.txt"
python3 - "$OUT/result.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
people = r["participants"]
assert len(people) == 3, f"{len(people)} participants"
assert r["relayed"] == 3, f"only {r['relayed']} of 3 went through the relay"
for p in people:
    assert p["joined"] and not p.get("error"), p
    assert p["relayed"], p
    if p["role"] == "subscriber":
        got = [t for t in p["video"] + p["audio"] if t["packets"] > 0]
        assert len(got) == 2, f"subscriber {p['index']} received {len(got)} of 2 tracks"
print("test-turn: relay-only loadgen call: 3/3 through coturn, both subscribers got audio and video; "
      f"join p50 {r['join']['p50_ms']:.0f} ms")
PY
