#!/usr/bin/env bash
# Makes sure the Redis and PostgreSQL that the tests use answer on loopback: starts them if
# they are installed but stopped, installs them from Debian's packages if they are missing.
# Honors SURGE_TEST_REDIS_URL / SURGE_TEST_DATABASE_URL only by their default ports.
set -euo pipefail

REDIS_PORT=6379
PG_PORT=5432

have() { command -v "$1" >/dev/null 2>&1; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

apt_install() {
  echo "services: installing $* from Debian's packages"
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq >/dev/null
  $SUDO apt-get install -y -qq "$@" >/dev/null
}

ensure_redis() {
  if port_open "$REDIS_PORT"; then return; fi
  have redis-server || apt_install redis-server
  echo "services: starting redis-server on 127.0.0.1:$REDIS_PORT"
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --daemonize yes --save '' --appendonly no \
    --logfile /tmp/surge-redis.log
  for _ in $(seq 50); do port_open "$REDIS_PORT" && return; sleep 0.1; done
  echo "services: redis did not come up; see /tmp/surge-redis.log" >&2
  exit 1
}

pg_bin() {
  ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

pg_has_test_db() {
  psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -d test -Atqc 'select 1' >/dev/null 2>&1
}

ensure_postgres() {
  if port_open "$PG_PORT"; then
    if pg_has_test_db; then return; fi
    psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -qc 'create database test' >/dev/null 2>&1 || true
    pg_has_test_db && return
    echo "services: PostgreSQL on :$PG_PORT refuses postgres@test with trust auth" >&2
    exit 1
  fi
  if have pg_ctlcluster && [ -d /etc/postgresql ] && ls /etc/postgresql/*/main >/dev/null 2>&1; then
    echo "services: starting the system PostgreSQL cluster"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -n 1)" main start || true
  fi
  if ! port_open "$PG_PORT"; then
    [ -n "$(pg_bin)" ] || apt_install postgresql
    local bin data
    bin=$(pg_bin)
    data=/tmp/surge-pg
    echo "services: starting a private PostgreSQL (trust auth) in $data"
    if [ ! -f "$data/PG_VERSION" ]; then
      mkdir -p "$data"
      if [ "$(id -u)" -eq 0 ]; then chown postgres "$data"; RUN="runuser -u postgres --"; else RUN=; fi
      $RUN "$bin/initdb" -D "$data" -A trust -U postgres >/dev/null
    fi
    if [ "$(id -u)" -eq 0 ]; then RUN="runuser -u postgres --"; else RUN=; fi
    $RUN "$bin/pg_ctl" -D "$data" -l "$data/log" -w \
      -o "-p $PG_PORT -k /tmp -c listen_addresses=127.0.0.1" start >/dev/null
  fi
  for _ in $(seq 100); do port_open "$PG_PORT" && break; sleep 0.1; done
  psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -qc 'create database test' >/dev/null 2>&1 || true
  pg_has_test_db || { echo "services: PostgreSQL is not answering on :$PG_PORT" >&2; exit 1; }
}

ensure_redis
ensure_postgres
echo "services: redis 127.0.0.1:$REDIS_PORT and postgres 127.0.0.1:$PG_PORT ready"
