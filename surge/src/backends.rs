//! Turns the shared flags into the backends the libraries are given: the join-token key
//! and the shard registry (in memory, or on Redis when a URL is given).

use std::sync::Arc;

use anyhow::Context;
use surge_cluster::{ShardRegistry, TokenKey};

use crate::cli::Common;

pub struct Backends {
    pub registry: Arc<dyn ShardRegistry>,
    pub token_key: TokenKey,
}

/// `generate_key`: a single process that issues and verifies its own tokens may make up a
/// key; separate API and shard processes must be given the same one.
pub async fn build(common: &Common, generate_key: bool) -> anyhow::Result<Backends> {
    let token_key = match &common.token_key {
        Some(secret) => TokenKey::from_secret(secret.as_bytes()).context("--token-key")?,
        None if generate_key => TokenKey::generate(),
        None => anyhow::bail!(
            "--token-key (SURGE_TOKEN_KEY) is required: the API and every shard must share it"
        ),
    };
    let registry =
        surge_cluster::registry::connect(common.redis_url.as_deref(), &common.redis_prefix)
            .await
            .context("connecting the shard registry")?;
    Ok(Backends {
        registry,
        token_key,
    })
}
