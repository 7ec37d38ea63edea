# syntax=docker/dockerfile:1
# The `surge` binary in a slim, non-root runtime image.
#
#   docker build -t surge:dev .
#   docker run --rm -p 8080:8080 -p 40000-40001:40000-40001/udp \
#     -e SURGE_WORKERS=2 -e SURGE_PUBLIC_IP=<this host's IP> surge:dev up
#
# (each SFU worker has its own UDP port, from SURGE_MEDIA_PORT up). In Kubernetes the Helm
# chart in helm/surge sets every SURGE_* variable itself.
#
# The builder uses the same Debian release as the runtime image so the binary's glibc
# requirement matches what the runtime provides.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS builder
WORKDIR /src
COPY . .
# The cache mounts keep the registry and the target directory between builds; the binary
# is copied out of the mounted target so the next stage can see it.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --package surge --bin surge \
    && install -D -m 0755 target/release/surge /out/surge

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
# ca-certificates: TLS to managed Redis/PostgreSQL; tini: a PID 1 that forwards SIGTERM
# (which starts a shard's drain) and reaps zombies.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates tini \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 surge \
    && useradd --system --uid 10001 --gid surge --home-dir /var/lib/surge --create-home \
       --shell /usr/sbin/nologin surge
COPY --from=builder /out/surge /usr/local/bin/surge

# `surge up` keeps its SQLite file under ./data, so the working directory is the user's home.
WORKDIR /var/lib/surge
USER 10001:10001
# Inside a container the listeners must face the container's interface, not loopback.
ENV SURGE_LISTEN=0.0.0.0:8080 \
    SURGE_MEDIA_BIND=0.0.0.0 \
    SURGE_MEDIA_PORT=40000 \
    SURGE_LOG_FORMAT=json
EXPOSE 8080/tcp 40000-40001/udp
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/surge"]
CMD ["up"]
