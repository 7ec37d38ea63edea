# Sourced by the bench scripts: `surge_up BIN PORT LOG` starts `surge up` on a throwaway
# SQLite file with the per-IP limits off (a flood from a few loopback addresses stands for
# many users), stops it when the script exits, and returns once it is ready. Sets surge_pid.
surge_up() {
  local bin="$1" port="$2" log="$3"
  surge_data="$(mktemp -d)"
  SURGE_DATABASE_URL="sqlite://$surge_data/surge.db" "$bin" up --listen "127.0.0.1:$port" \
    --signup-ip-per-min 0 --login-ip-per-min 0 >"$log" 2>&1 &
  surge_pid=$!
  trap 'kill "$surge_pid" 2>/dev/null || true; wait "$surge_pid" 2>/dev/null || true; rm -rf "$surge_data"' EXIT
  for _ in $(seq 1 100); do
    curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null
}
