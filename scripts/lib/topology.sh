# Sourced by the scripts that start Surge's production topology on loopback
# (scripts/test-topology, scripts/multi-node-run): free ports, waiting for a listener, the
# join-token keypair, a TLS certificate for surge.test, nginx as the Ingress in front of the
# API replicas, and stopping the processes a script started.

topology_free_ports() { # topology_free_ports N: N loopback TCP ports free now
  python3 - "$1" <<'PY'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

topology_wait_http() { # topology_wait_http URL NAME: until it answers 200, at most 2 minutes
  for _ in $(seq 600); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "$1" 2>/dev/null)" = 200 ] && return 0
    sleep 0.2
  done
  echo "$2 did not become ready at $1" >&2
  return 1
}

topology_keys() { # topology_keys DIR: DIR/join-token.key (the APIs sign) and .pub (the shards verify)
  openssl genpkey -algorithm ed25519 -out "$1/join-token.key" 2>/dev/null
  openssl pkey -in "$1/join-token.key" -pubout -out "$1/join-token.pub" 2>/dev/null
}

topology_certs() { # topology_certs DIR: DIR/ca.pem, and DIR/tls.pem + tls.key for surge.test and 127.0.0.1
  local dir=$1
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=Surge test CA" \
    -keyout "$dir/ca.key" -out "$dir/ca.pem" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=surge.test" \
    -keyout "$dir/tls.key" -out "$dir/tls.csr" 2>/dev/null
  printf 'subjectAltName=DNS:surge.test,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' >"$dir/ext.cnf"
  openssl x509 -req -in "$dir/tls.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial \
    -days 2 -extfile "$dir/ext.cnf" -out "$dir/tls.pem" 2>/dev/null
}

# topology_nginx DIR HTTPS_PORT PROXY_ADDR CONNECTIONS API_PORT...: nginx as the Ingress (TLS
# with DIR/tls.pem, X-Forwarded-For as ingress-nginx sets it, connecting from PROXY_ADDR, which
# the APIs trust) in front of the APIs on API_PORT..., for CONNECTIONS client connections (each
# also takes one upstream); its pid file is DIR/nginx/nginx.pid and its logs are in DIR/nginx/.
topology_nginx() {
  local dir=$1 port=$2 proxy=$3 connections=$4 upstreams='' p
  shift 4
  for p in "$@"; do upstreams="$upstreams    server 127.0.0.1:$p;"$'\n'; done
  mkdir -p "$dir/nginx/tmp"
  cat >"$dir/nginx/nginx.conf" <<EOF
worker_processes 1;
worker_rlimit_nofile $((connections * 2 + 64));
pid $dir/nginx/nginx.pid;
error_log $dir/nginx/error.log warn;
events { worker_connections $((connections * 2 + 32)); }
http {
  access_log $dir/nginx/access.log;
  client_body_temp_path $dir/nginx/tmp/body;
  proxy_temp_path $dir/nginx/tmp/proxy;
  fastcgi_temp_path $dir/nginx/tmp/fastcgi;
  uwsgi_temp_path $dir/nginx/tmp/uwsgi;
  scgi_temp_path $dir/nginx/tmp/scgi;
  upstream surge_api {
$upstreams    keepalive 16;
    # Below the API's --header-timeout-secs (20 s), which also closes idle keep-alives.
    keepalive_timeout 15s;
  }
  server {
    listen 127.0.0.1:$port ssl;
    server_name surge.test;
    ssl_certificate $dir/tls.pem;
    ssl_certificate_key $dir/tls.key;
    location / {
      proxy_pass http://surge_api;
      proxy_bind $proxy;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      # As ingress-nginx does: the client's chain, plus the address this proxy saw.
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto \$scheme;
      # A join's SDP offer (the API takes up to 64 KiB) stays in memory: a larger body goes
      # to a temp file, which the workers (another user) cannot write in this private dir.
      client_body_buffer_size 64k;
      # The presence stream is Server-Sent Events.
      proxy_buffering off;
      proxy_read_timeout 1h;
    }
  }
}
EOF
  nginx -p "$dir/nginx" -c "$dir/nginx/nginx.conf"
}

topology_stop_nginx() { # topology_stop_nginx DIR
  [ -f "$1/nginx/nginx.pid" ] && kill -QUIT "$(cat "$1/nginx/nginx.pid")" 2>/dev/null || true
}

topology_stop_pids() { # topology_stop_pids PID...: TERM, up to 5 s to exit, then KILL
  local pid alive
  for pid in "$@"; do kill -TERM "$pid" 2>/dev/null || true; done
  for _ in $(seq 50); do
    alive=0
    for pid in "$@"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for pid in "$@"; do kill -KILL "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
}
