#!/usr/bin/env bash
# Join time under a join burst, as issue 19 measures it: `surge up` and, against it,
# `surge-loadgen calls` RUNS times in a row (default: 4 rooms x (2 publishers + 6
# subscribers), 2 subscribers per room capped at 400 kbit/s, 30 s). Prints each run's join
# breakdown and verdict; writes each run's result.json and report.html under $OUT.
# Usage: benches/join-time.sh                     (release build of this checkout)
#        SURGE_BIN=/path/to/surge benches/join-time.sh   (another server build, same loadgen)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=benches/surge-up.sh
. benches/surge-up.sh

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/surge/target}"
PROFILE="${SURGE_JOIN_PROFILE:-release}"
PORT="${SURGE_JOIN_PORT:-18490}"
RUNS="${SURGE_JOIN_RUNS:-3}"
ARGS="${SURGE_JOIN_ARGS:---rooms 4 --publishers 2 --subscribers 6 --duration 30s --subscriber-cap-bps 400000 --capped-subscribers 2}"
OUT="${SURGE_JOIN_OUT:-$CARGO_TARGET_DIR/join-time/$(date -u +%Y%m%dT%H%M%SZ)}"
BASE="http://127.0.0.1:$PORT"
mkdir -p "$OUT"

dir="$PROFILE"; [ "$PROFILE" = dev ] && dir=debug
if [ -z "${SURGE_JOIN_NO_BUILD:-}" ]; then
  cargo build --locked --profile "$PROFILE" -p surge -p surge-loadgen
fi
SURGE_BIN="${SURGE_BIN:-$CARGO_TARGET_DIR/$dir/surge}"
LOADGEN="${LOADGEN:-$CARGO_TARGET_DIR/$dir/surge-loadgen}"

surge_up "$SURGE_BIN" "$PORT" "$OUT/surge.log"

for run in $(seq 1 "$RUNS"); do
  printf '\n==> run %s of %s: calls %s\n' "$run" "$RUNS" "$ARGS" >&2
  # shellcheck disable=SC2086
  "$LOADGEN" --quiet --out "$OUT/run$run" calls --target "$BASE" $ARGS | tee "$OUT/run$run.txt" || true
done
echo "results: $OUT"
