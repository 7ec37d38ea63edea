//! What Surge nodes share: the HTTP conventions every listener follows (client addresses
//! behind proxies, readiness and dependency health), the join tokens the
//! API issues and SFU shards verify, the shard registry and room placement, and telemetry
//! set-up. Both `signup-api` and `sfu` build on this crate so the two halves agree on the
//! wire formats by construction.

pub mod admin;
pub mod client_addr;
pub mod error_code;
pub mod health;
pub mod http;
pub mod listener;
pub mod ops;
pub mod placement;
pub mod redis_conn;
pub mod registry;
pub mod registry_redis;
pub mod telemetry;
pub mod token;

pub use error_code::ErrorCode;
pub use http::{ApiJson, HttpError};
pub use placement::{PlacementError, Placer};
pub use redis_conn::{RedisConn, RedisTarget, RedisTimeouts};
pub use registry::{
    MemoryRegistry, RegistryError, ShardCapacity, ShardInfo, ShardLoad, ShardRegistry, ShardState,
};
pub use registry_redis::RedisRegistry;
pub use token::{JoinClaims, TokenError, TokenSigner, TokenVerifier};
