//! Metric names, in one place so dashboards and code agree.

/// Gauge: rooms on this shard.
pub const ROOMS: &str = "surge_sfu_rooms";
/// Gauge: participants on this shard.
pub const PARTICIPANTS: &str = "surge_sfu_participants";
/// Counter: RTP packets received from publishers.
pub const PACKETS_IN: &str = "surge_sfu_rtp_packets_in_total";
/// Counter: RTP payload bytes received from publishers.
pub const BYTES_IN: &str = "surge_sfu_rtp_bytes_in_total";
/// Counter: RTP packets forwarded to subscribers.
pub const PACKETS_OUT: &str = "surge_sfu_rtp_packets_out_total";
/// Counter: RTP payload bytes forwarded to subscribers.
pub const BYTES_OUT: &str = "surge_sfu_rtp_bytes_out_total";
/// Counter: simulcast layer switches toward subscribers.
pub const LAYER_SWITCHES: &str = "surge_sfu_layer_switches_total";
/// Counter: keyframe requests sent to publishers (after coalescing).
pub const KEYFRAME_REQUESTS: &str = "surge_sfu_keyframe_requests_total";
/// Counter: cached keyframes replayed to new subscribers (each spares one a keyframe
/// request's round trip before its first picture).
pub const KEYFRAMES_REPLAYED: &str = "surge_sfu_keyframes_replayed_total";
/// Counter: NACKs received from subscribers (str0m answers them from its RTX cache).
pub const NACKS: &str = "surge_sfu_nacks_total";
/// Counter: chat messages relayed to a room (once each).
pub const CHAT_MESSAGES: &str = "surge_sfu_chat_messages_total";
/// Counter: chat messages refused (empty, too long, over the sender's rate).
pub const CHAT_REFUSED: &str = "surge_sfu_chat_refused_total";
/// Gauge: sum of the subscribers' estimated egress bitrates, bits/s.
pub const EGRESS_BPS: &str = "surge_sfu_egress_estimate_bps";
/// Gauge: Unix time (seconds) of the shard's last heartbeat the registry accepted; an
/// alert compares it with `time()` (a shard that stops heartbeating leaves placement).
pub const HEARTBEAT_TIMESTAMP: &str = "surge_sfu_registry_heartbeat_timestamp_seconds";
/// Counter: datagrams dropped, by `reason`.
pub const DATAGRAMS_DROPPED: &str = "surge_sfu_datagrams_dropped_total";
/// Counter: `sendmsg` calls; datagrams out over this is what GSO batching saves.
pub const SEND_SYSCALLS: &str = "surge_sfu_send_syscalls_total";
/// Counter: joins refused, by `code`.
pub const JOINS_REFUSED: &str = "surge_sfu_joins_refused_total";
/// Counter: participants removed, by `reason` (left, timeout, ice, drain).
pub const PARTICIPANTS_REMOVED: &str = "surge_sfu_participants_removed_total";
/// Counter: worker threads that failed (panicked); the shard exits after one.
pub const WORKER_FAILURES: &str = "surge_sfu_worker_failures_total";
/// Gauge: open ICE-TCP connections.
pub const TCP_CONNECTIONS: &str = "surge_sfu_tcp_connections";
/// Counter: ICE-TCP connections accepted.
pub const TCP_ACCEPTED: &str = "surge_sfu_tcp_connections_accepted_total";
/// Counter: ICE-TCP connections closed, by `reason` (bad_framing, not_stun,
/// handshake_timeout, idle, slow_reader, over_cap, peer_closed, error, stopped).
pub const TCP_CLOSED: &str = "surge_sfu_tcp_connections_closed_total";
/// Counter: ICE restarts (HTTP `PATCH`), by `outcome` (restarted, refused).
pub const ICE_RESTARTS: &str = "surge_sfu_ice_restarts_total";
